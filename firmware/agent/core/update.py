"""The device's side of a firmware transfer (MicroPython-compatible): checking an offer
on its own before a byte is written, taking chunks in order into the inactive slot, and
the hash check before install (docs/ota.md, "Wire protocol of a transfer").

A hub that offers a bad image still cannot have it installed: the manifest's signature is
checked against the release keys the device was given at enrollment, the offer against
the manifest, the manifest against this device (type, agent version, the running image's
security counter, expiry on the hub's clock), and the image's hash at the end.

The port provides verify_ed25519(key_b64, message, sig_b64) -> bool, key_id(key_b64) ->
16 hex, and the slot file functions slot_size / slot_append / slot_truncate / slot_sha256.
"""

import json

AGENT_VERSION = "0.4.0"
MAX_IMAGE = 64 * 1024 * 1024


class Rejected(Exception):
    def __init__(self, code, reason):
        super().__init__("%s: %s" % (code, reason))
        self.code = code
        self.reason = reason


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def _string(text):
    """A JSON string as CPython's json.dumps writes it (ensure_ascii): MicroPython's json
    writes non-ASCII as UTF-8, DEL as is and \\b \\f as \\u0008 \\u000c."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code < 0x10000:
            out.append("\\u%04x" % code)
        else:  # a surrogate pair, as CPython writes it
            code -= 0x10000
            out.append("\\u%04x\\u%04x" % (0xD800 | (code >> 10), 0xDC00 | (code & 0x3FF)))
    out.append('"')
    return "".join(out)


def canonical(value, floats=False):
    """JSON with sorted keys, no spaces and ASCII only, byte for byte what CPython's
    json.dumps(sort_keys=True, separators=(",", ":")) writes, as the hub signs (MicroPython's
    json has no sort_keys and writes non-ASCII as UTF-8). Floats raise ValueError unless
    `floats` (the signing payload of hub frames); they are written by the interpreter's
    json, whose float repr may differ from CPython's for some values."""
    if isinstance(value, dict):
        return "{" + ",".join(_string(k) + ":" + canonical(value[k], floats) for k in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical(v, floats) for v in value) + "]"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, float) and not floats:
        raise ValueError("floats are not canonical")
    return json.dumps(value)


def version_key(text):
    """Semver precedence as a sortable tuple: a prerelease sorts before its release."""
    core, _, pre = text.partition("-")
    parts = core.split(".")
    if len(parts) != 3:
        raise ValueError("not a semantic version: %r" % text)
    nums = tuple(int(p) for p in parts)
    if not pre:
        return nums + (1, ())  # noqa: RUF005 - concatenation: MicroPython has no starred tuple displays
    ids = []
    for p in pre.split("."):
        ids.append((0, int(p), "") if p.isdigit() else (1, 0, p))
    return nums + (0, tuple(ids))  # noqa: RUF005


def epoch_ms(iso):
    """'2027-01-31T12:00:00Z' or with a fraction -> milliseconds since 1970 (UTC)."""
    if not isinstance(iso, str) or not iso.endswith("Z") or len(iso) < 20:
        raise ValueError("not a UTC time: %r" % (iso,))
    y, mo, d = int(iso[0:4]), int(iso[5:7]), int(iso[8:10])
    h, mi, s = int(iso[11:13]), int(iso[14:16]), int(iso[17:19])
    frac = iso[19:-1]
    ms = int((frac[1:] + "000")[:3]) if frac.startswith(".") else 0
    # Days from civil (Howard Hinnant): no datetime on MicroPython.
    y -= 1 if mo <= 2 else 0
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (mo + (-3 if mo > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return ((days * 24 + h) * 60 + mi) * 60000 + s * 1000 + ms


def check_offer(port, body, release_keys, device_type, running_counter, hub_now_ms, agent_version=AGENT_VERSION):
    """The manifest of a valid offer, else Rejected(code, reason)."""
    document = body.get("document")
    if not isinstance(document, dict) or not isinstance(document.get("manifest"), dict):
        raise Rejected("bad_signature", "the offer carries no signed manifest document")
    manifest = document["manifest"]
    keys = {}
    for key in release_keys:
        keys[port.key_id(key)] = key
    key = keys.get(document.get("key_id"))
    if key is None:
        raise Rejected("untrusted_key", "key %s is not a release key this device holds" % (document.get("key_id"),))
    try:
        signed = canonical(manifest).encode()
    except (ValueError, TypeError):
        raise Rejected("bad_signature", "the manifest is not canonical JSON")
    if not port.verify_ed25519(key, signed, document.get("signature") or ""):
        raise Rejected("bad_signature", "the manifest's signature does not verify under key %s" % document.get("key_id"))
    if body.get("sha256") != manifest.get("sha256") or body.get("size") != manifest.get("size"):
        raise Rejected("hash_mismatch", "the offer's sha256 and size are not the manifest's")
    size = manifest.get("size")
    if not isinstance(size, int) or size < 1 or size > MAX_IMAGE:
        raise Rejected("incompatible", "an image of %r bytes does not fit this device's slot" % (size,))
    if device_type not in (manifest.get("device_types") or []):
        raise Rejected("incompatible", "the release is for %s, this device is a %s" % (", ".join(manifest.get("device_types") or []), device_type))
    needed = manifest.get("min_agent_version") or ""
    if needed and version_key(agent_version) < version_key(needed):
        raise Rejected("incompatible", "the release needs agent %s or later, this is %s" % (needed, agent_version))
    counter = manifest.get("security_counter", 0)
    if not isinstance(counter, int) or counter < running_counter:
        raise Rejected("rollback", "security counter %r is lower than the running image's %d" % (counter, running_counter))
    try:
        expires = epoch_ms(manifest.get("expires_at"))
    except ValueError:
        raise Rejected("bad_signature", "the manifest has no valid expiry")
    if expires <= hub_now_ms:
        raise Rejected("expired", "the manifest expired at %s" % manifest.get("expires_at"))
    return manifest


class Transfer:
    """One image coming into the inactive slot. `meta` is what survives a dropped link
    (the port keeps it as ota.json beside the slot): deployment, sha256, size, version,
    security counter, chunk size, deadline."""

    def __init__(self, port, state_dir, slot, meta):
        self.port = port
        self.state_dir = state_dir
        self.slot = slot
        self.meta = meta

    def held(self):
        return self.port.slot_size(self.state_dir, self.slot)

    def resume_from(self, offered_offset):
        """What to ask for: what this slot holds of this image, never beyond the hub's
        recorded offset, on a chunk boundary; anything beyond is dropped."""
        chunk = self.meta["chunk_size"]
        offset = min(self.held(), offered_offset)
        offset -= offset % chunk
        self.port.slot_truncate(self.state_dir, self.slot, offset)
        return offset

    def write(self, offset, data):
        """Append a chunk that starts where the slot ends; anything else is not written.
        Returns the end of what the slot now holds."""
        held = self.held()
        if offset == held and held + len(data) <= self.meta["size"]:
            self.port.slot_append(self.state_dir, self.slot, data)
            held += len(data)
        return held

    def complete(self):
        return self.held() == self.meta["size"]

    def verify(self):
        """(ok, sha256, reason) over the whole slot."""
        digest = self.port.slot_sha256(self.state_dir, self.slot)
        if self.held() != self.meta["size"]:
            return (False, digest, "the slot holds %d bytes, the manifest says %d" % (self.held(), self.meta["size"]))
        if digest != self.meta["sha256"]:
            return (False, digest, "the image's sha256 is %s, the manifest says %s" % (digest, self.meta["sha256"]))
        return (True, digest, "")
