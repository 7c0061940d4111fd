"""The agent's pure core on fixed inputs, for CPython and MicroPython alike.

tests/test_micropython_core.py runs `run(inputs, verify_ed25519)` in CPython and, through
firmware/micropython/run.mjs, in MicroPython's WebAssembly port, and asserts that both
return the same JSON. Everything here is the core's own code (framing, the anti-replay
window, the boot guard and its A/B slot state, manifest and offer checks, canonical JSON,
the image header, the signed-frame payload) except two things a port supplies:

- verify_ed25519: CPython passes the real check (cryptography). MicroPython has no
  Ed25519, so there it is a table of verdicts that CPython computed beforehand with
  cryptography for exactly the (key, message, signature) triples CPython saw. The table
  does not check MicroPython's crypto (there is none); it checks that MicroPython asks
  about the same bytes (canonical JSON, signing payloads) and acts on the verdict the
  same way. A triple missing from the table counts as "does not verify".
- the slot files of a transfer: an in-memory stand-in (hashlib's sha256 on both).

Written to MicroPython's subset: %-formatting, no f-strings, dataclasses or typing, and no
reliance on dict order (MicroPython's dicts are not insertion-ordered).
"""

import binascii
import hashlib
import json

from firmware.agent.core import bootguard, framing, image, replay, signing, update

CORE_MODULES = ("framing", "replay", "bootguard", "update", "image", "signing", "discovery", "enroll", "firmware", "agent")


class Port:
    """What the core asks of a port, minus the network: Ed25519 from outside, slot files in memory."""

    def __init__(self, verify_ed25519):
        self.verify_ed25519 = verify_ed25519
        self.slots = {}

    def key_id(self, key_b64):
        raw = binascii.a2b_base64(key_b64.encode())
        return binascii.hexlify(hashlib.sha256(raw).digest()).decode()[:16]

    def slot_size(self, state_dir, slot):
        return len(self.slots.get(slot, b""))

    def slot_append(self, state_dir, slot, data):
        self.slots[slot] = self.slots.get(slot, b"") + data

    def slot_truncate(self, state_dir, slot, offset):
        self.slots[slot] = self.slots.get(slot, b"")[:offset]

    def slot_sha256(self, state_dir, slot):
        return binascii.hexlify(hashlib.sha256(self.slots.get(slot, b"")).digest()).decode()


class Stream:
    """A socket's makefile that returns at most `step` bytes per read."""

    def __init__(self, data, step):
        self.data = data
        self.step = step

    def read(self, n):
        chunk = self.data[: min(n, self.step)]
        self.data = self.data[len(chunk) :]
        return chunk


def outcome(fn, *args):
    """["ok", value] or [exception class name, its code or message]."""
    try:
        value = fn(*args)
        return ["ok", value.decode() if isinstance(value, bytes) else value]
    except KeyError as exc:  # str() of a KeyError quotes the key on CPython only
        return ["KeyError", exc.args[0]]
    except (framing.FrameError, image.ImageError, ValueError, TypeError) as exc:
        return [type(exc).__name__, str(exc)]
    except (replay.Refused, update.Rejected) as exc:
        return [exc.code, exc.reason]


def imports():
    done = {}
    for name in CORE_MODULES:
        try:
            __import__("firmware.agent.core." + name)
            done[name] = "ok"
        except Exception as exc:  # what fails to import is the finding
            done[name] = "%s: %s" % (type(exc).__name__, exc)
    return done


def framing_cases():
    messages = [
        framing.envelope("ping", {}, "m-1", 1700000000000),
        framing.envelope("report", {"t": -40, "ok": True, "none": None, "list": [1, 2, [3]], "text": "Zürich ✓ \U0001f600"}, "m-2", 2),
        {"type": "error", "body": {"code": "replayed_seq", "reason": 'quote " and \\ and \n'}},
    ]
    wire = b"".join(framing.encode(m) for m in messages)
    result = {"roundtrip": [framing.read_frame(Stream(framing.encode(m), 1000)) == m for m in messages]}
    for step in (1, 3, 7, 64, 100000):
        buffer = framing.FrameBuffer()
        got = []
        for i in range(0, len(wire), step):
            got.extend(buffer.feed(wire[i : i + step]))
        result["chunks of %d" % step] = [got == messages, len(buffer.data)]
    # What the hub puts on the wire (hub/mesh/framing.py: compact, UTF-8 as is): parsed alike.
    hub_bytes = '{"v":1,"type":"welcome","body":{"name":"Gewächshaus \U0001f331","time_ms":1700000000000}}'.encode()
    hub_frame = len(hub_bytes).to_bytes(4, "big") + hub_bytes
    result["hub frame"] = outcome(framing.read_frame, Stream(hub_frame, 5))
    result["escaped BMP"] = outcome(framing.read_frame, Stream(b'\x00\x00\x00\x0e{"e":"\\u00e9"}', 100))
    result["zero length"] = outcome(framing.read_frame, Stream(b"\x00\x00\x00\x00", 100))
    result["too large"] = outcome(framing.read_frame, Stream(b"\x00\x01\x00\x01" + b"x" * 10, 100))
    # encode's bytes are not compared: MicroPython writes keys in its dict order and
    # non-ASCII as UTF-8 (CPython escapes it); the hub reads either. Decoded frames are.
    result["small limit"] = outcome(framing.read_frame, Stream(framing.encode({"ascii": "only"}), 100), 16)
    result["not an object"] = outcome(framing.read_frame, Stream(b"\x00\x00\x00\x03[1]", 100))
    result["closed early"] = outcome(framing.read_frame, Stream(b"\x00\x00\x00\x10{}", 100))
    result["closed in prefix"] = outcome(framing.read_frame, Stream(b"\x00\x00", 100))

    def feed_all(chunks):
        buffer = framing.FrameBuffer(max_size=64)
        frames = []
        for chunk in chunks:
            frames.extend(buffer.feed(chunk))
        return [frames, len(buffer.data)]

    result["buffer too large"] = outcome(feed_all, [b"\x00\x00", b"\x00\x41"])
    result["buffer not an object"] = outcome(feed_all, [b"\x00\x00\x00\x02", b'""'])
    result["buffer partial"] = outcome(feed_all, [b"\x00\x00\x00\x07{", b'"a":'])
    return result


HUB_NOW = 1700000000000


def frame(seq, nonce, issued_at=HUB_NOW, ttl_ms=30000, **changes):
    message = {"v": 1, "type": "command", "id": "c-%s" % seq, "nonce": nonce, "seq": seq, "issued_at": issued_at, "ttl_ms": ttl_ms, "body": {}}
    for key in changes:
        message[key] = changes[key]
    if nonce is None:
        del message["nonce"]
    return message


def replay_cases():
    steps = []
    window = replay.HubWindow(max_nonces=3)

    def step(label, message, now_ms=HUB_NOW):
        verdict = outcome(window.check, message, now_ms)
        steps.append([label, verdict[0], verdict[1] if verdict[0] != "ok" else None, window.last_seq, len(window), sorted(window.order)])

    step("first", frame(1, "n1"))
    step("same frame again (replayed seq)", frame(1, "n1"))
    step("next", frame(3, "n3"))
    step("reordered: seq 2 after 3", frame(2, "n2"))
    step("nonce reused with a higher seq", frame(4, "n1"))
    step("expired ttl", frame(5, "n5", issued_at=HUB_NOW - 31500))
    step("expired ttl, a quarter second", frame(5, "n5", issued_at=HUB_NOW - 30250))
    step("just inside ttl", frame(5, "n5", issued_at=HUB_NOW - 30000))
    step("clock skew ahead", frame(6, "n6", issued_at=HUB_NOW + 5 * 60 * 1000 + 1))
    step("clock skew, long ttl, behind", frame(6, "n6", issued_at=HUB_NOW - 400000, ttl_ms=3600000))
    step("v 2", frame(6, "n6", v=2))
    step("no nonce", frame(6, None))
    step("empty id", frame(6, "n6", id=""))
    step("body a list", frame(6, "n6", body=[]))
    step("seq a bool", frame(True, "n6"))
    step("seq a float", frame(6.0, "n6"))
    step("seq negative", frame(-1, "n6"))
    step("ttl 0", frame(6, "n6", ttl_ms=0))
    step("ttl over an hour", frame(6, "n6", ttl_ms=3600001))
    step("big seq", frame(9007199254740992, "nbig"))
    step("seq beyond 2**53", frame(9007199254740993, "nbig2"))
    window = replay.HubWindow(max_nonces=3)
    step("new session", frame(1, "a"))
    window.token = "tok-1"
    step("no session token", frame(2, "b"))
    step("wrong session token", frame(2, "b", session="tok-2"))
    step("right session token", frame(2, "b", session="tok-1"))
    step("c", frame(3, "c", session="tok-1"))
    step("d: bound of 3 nonces", frame(4, "d", session="tok-1"))
    step("a again after it was bounded out (seq refuses)", frame(5, "a", session="tok-1"))
    step("later: earlier nonces expired and forgotten", frame(6, "e", issued_at=HUB_NOW + 40000, session="tok-1"), HUB_NOW + 40000)
    step("b reused once forgotten", frame(7, "b", issued_at=HUB_NOW + 40000, session="tok-1"), HUB_NOW + 40000)
    return steps


def bootguard_cases():
    log = []
    state = bootguard.initial("1.0.0")

    def step(label, value):
        log.append([label, value, json.loads(json.dumps(state))])

    step("initial", None)
    now = 1000000
    # A confirmed image that keeps failing: retry at once, then after the delay, then safe mode.
    for i in range(4):
        slot = bootguard.begin(state)
        step("boot %d on %s fails" % (i + 1, slot), list(bootguard.failed(state, "crash %d" % (i + 1), now + i * 1000, 30)))
    step("clear", bootguard.clear(state))
    slot = bootguard.begin(state)
    step("boot after clear fails", list(bootguard.failed(state, "crash 5", now + 5000, 30)))
    # Failures older than ten minutes do not count towards safe mode.
    later = now + bootguard.WINDOW_MS + 10000
    for i in range(3):
        bootguard.begin(state)
        step("later boot %d fails" % (i + 1), list(bootguard.failed(state, "late %d" % (i + 1), later + i, 30)))
    bootguard.begin(state)
    step("a boot reaches running", bootguard.succeeded(state))
    step("no rollback without a valid other slot", bootguard.rollback(state, "operator"))
    step("previous version", bootguard.previous_version(state))
    # A/B: install on trial, the trial crashes and reverts.
    step("install 1.1.0", bootguard.install(state, "1.1.0", 5, 17, 99000))
    step("running slot on trial", [bootguard.running_slot(state), bootguard.running_version(state), bootguard.previous_version(state)])
    step("trial boot", bootguard.begin(state))
    step("trial boot fails: revert", list(bootguard.failed(state, "crash-at-boot", later + 100, 30)))
    step("after revert", [bootguard.running_slot(state), bootguard.running_version(state)])
    # Install again and confirm: the other slot becomes active; the old one is a rollback target.
    step("install 1.2.0", bootguard.install(state, "1.2.0", 6, 18, 99000))
    bootguard.begin(state)
    bootguard.succeeded(state)
    step("confirm", bootguard.confirm(state))
    step("confirm with nothing pending", bootguard.confirm(state))
    step("previous version after confirm", bootguard.previous_version(state))
    step("operator rollback", bootguard.rollback(state, "operator"))
    step("operator rollback back", bootguard.rollback(state, "operator again"))
    step("install 1.3.0 then operator rollback of the trial", [bootguard.install(state, "1.3.0", 7, 19, 5), bootguard.rollback(state, "abort")])
    step("other", [bootguard.other("a"), bootguard.other("b")])
    return log


def update_cases(inputs, port):
    result = {}
    values = [
        {"b": 1, "a": [True, None, "x"], "c": {"z": -3, "é": "ü"}},
        'control \x00\x01\x1f\x7f \b\f\n\r\t " \\ /',
        "non-ASCII é € \U0001f600 \u2028",
        [],
        {},
        2**64,
        -0,
        1.5,
        {"nested": [{"f": 0.1}]},
    ]
    result["canonical"] = [outcome(update.canonical, v) for v in values]
    versions = ["1.0.0", "1.0.0-rc.1", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11", "0.9.12", "10.0.0", "2.0.0"]
    result["version order"] = sorted(versions, key=update.version_key)
    # Only the exception's class: the message of int("x") is the interpreter's own.
    result["bad versions"] = [outcome(update.version_key, v)[0] for v in ("1.0", "1.0.x", "a.b.c.d")]
    stamps = [
        "1970-01-01T00:00:00Z",
        "2024-02-29T23:59:59.999Z",
        "2027-01-31T12:00:00Z",
        "2000-03-01T00:00:00.5Z",
        "1969-12-31T23:59:59Z",
        "2100-12-31T00:00:00.123456Z",
    ]
    result["epoch_ms"] = [outcome(update.epoch_ms, s) for s in stamps + ["2027-01-31 12:00:00", "2027-01-31T12:00:00+01:00", 5]]
    offers = []
    for case in inputs["offers"]:
        verdict = outcome(
            update.check_offer, port, case["body"], inputs["release_keys"], case["device_type"], case["counter"], case["hub_now_ms"], case["agent"]
        )
        if verdict[0] == "ok":
            verdict = ["ok", update.canonical(verdict[1])]
        offers.append([case["label"]] + verdict)
    result["offers"] = offers
    result["transfer"] = transfer_cases(port)
    return result


def transfer_cases(port):
    data = b"".join(bytes([i % 251]) for i in range(2500))
    meta = {"deployment": 7, "sha256": binascii.hexlify(hashlib.sha256(data).digest()).decode(), "size": len(data), "chunk_size": 1024}
    transfer = update.Transfer(port, "/state", "b", meta)
    log = [
        ["resume on an empty slot", transfer.resume_from(0)],
        ["chunk 0", transfer.write(0, data[0:1024])],
        ["chunk 2 before 1 (not written)", transfer.write(2048, data[2048:])],
        ["chunk 0 again (not written)", transfer.write(0, data[0:1024])],
        ["half of chunk 1 (a dropped link)", transfer.write(1024, data[1024:1536])],
        ["resume: hub recorded 2048", transfer.resume_from(2048)],
        ["resume: hub recorded 0", transfer.resume_from(0)],
        ["complete?", transfer.complete()],
        ["verify a short slot", list(transfer.verify())],
    ]
    for offset in range(0, len(data), 1024):
        transfer.write(offset, data[offset : offset + 1024])
    log.append(["too long (not written)", transfer.write(2500, b"x")])
    log.append(["complete", transfer.complete()])
    log.append(["verify", list(transfer.verify())])
    port.slots["b"] = data[:-1] + b"\x00"
    log.append(["verify a corrupted slot", list(transfer.verify())])
    return log


def image_cases():
    result = {"header": [outcome(image.header_line, "1.2.0", b) for b in image.BEHAVIOURS]}
    result["bad"] = [outcome(image.header_line, "1.2.0", "explode"), outcome(image.header_line, "", "healthy"), outcome(image.header_line, 5, "healthy")]
    heads = [
        image.header_line("2.0.0", "fail-health") + b"padding",
        b"\x7fELF real image",
        b'{"meshhub_sim": 1, "version": "2.0.0"',
        b'{"meshhub_sim": 2, "version": "2.0.0", "behaviour": "healthy"}\n',
        b'{"meshhub_sim": nope}\n',
        b'{"meshhub_sim": 1, "version": "2.0.0", "behaviour": "dance"}\n',
    ]
    result["read"] = [outcome(image.read_header, h) for h in heads]
    return result


def signing_cases(inputs, port):
    result = []
    for case in inputs["signed_frames"]:
        payload = outcome(signing.signing_payload, case["frame"], case["node_id"])
        result.append([case["label"], payload, signing.verify_frame(port, case["frame"], case["node_id"], inputs["hub_key"])])
    return result


def run(inputs, verify_ed25519):
    port = Port(verify_ed25519)
    return {
        "imports": imports(),
        "framing": framing_cases(),
        "replay": replay_cases(),
        "bootguard": bootguard_cases(),
        "update": update_cases(inputs, port),
        "image": image_cases(),
        "signing": signing_cases(inputs, port),
        "key_ids": [port.key_id(k) for k in inputs["release_keys"]],
    }
