"""The agent's session loop, written against a port object (MicroPython-compatible).

One session: connect with the device certificate, read `welcome`, send `hello` with the
profile's capabilities, read `session`, then report state every `report_s`, ping every
heartbeat, and handle what the hub sends. `run()` repeats sessions with jittered
exponential backoff until `should_stop()` says so.

The port provides: connect_mtls(state_dir) -> conn with send(bytes), recv(timeout_s) ->
bytes (b"" on close, None on timeout), close(); load_hub(state_dir) -> dict; now_ms();
uuid4(); random_b64(n); sleep(s); random() in [0, 1); load_done(state_dir) and
save_done(state_dir, done) to remember executed command ids across restarts;
verify_ed25519(key_b64, message, sig_b64) and wipe(state_dir, everything) for resets;
install_renewed(state_dir, key_pem, body, fingerprint) -> reason or None for renewal.

Clocks: the agent keeps the hub's time (local clock + the offset learnt from `welcome`'s
`time_ms`) and stamps every frame's `issued_at` and every report's `ts` with it, so a
device whose clock is wrong by any amount still works and reports the right time. Every
frame from the hub goes through this session's anti-replay window (core/replay.py) on
that clock before it is acted on; a refused one is answered with an `error` frame.
"""

from firmware.agent.core import firmware, framing, replay, signing


class SessionRefused(Exception):
    def __init__(self, code, reason):
        super().__init__("%s: %s" % (code, reason))
        self.code = code
        self.reason = reason


class Agent:
    def __init__(
        self,
        port,
        state_dir,
        profile,
        hardware,
        firmware_version="1.0.0",
        report_s=5.0,
        log=None,
        retry_delay_s=30.0,
        beacon_s=5.0,
        boot_faults=0,
        clear_bootguard=False,
    ):
        self.port = port
        self.state_dir = state_dir
        self.profile = profile
        self.hardware = hardware
        self.base_version = firmware_version  # the image the device came with (slot a)
        self.report_s = report_s
        self.log = log or (lambda *args: None)
        self.hub = port.load_hub(state_dir)
        self.node_id = self.hub["node_id"]
        self.token = None
        self.seq = 0
        self.heartbeat_s = 30
        self.last_error = None
        self.acked_reports = 0
        self.sessions = 0
        self.executed = 0
        # Every report measured waits here until the hub acks it (by `ref` = the id of the
        # frame that carried it); `ref` is None while it is not in flight. Bounded: at most
        # `offline_max` waiting (the oldest waiting one is dropped first and counted) plus
        # `in_flight_max` sent and not yet acknowledged.
        self.outbox = []
        self.offline_max = 100
        self.in_flight_max = 8
        self.measured = 0
        self.refused_reports = 0
        self.unavailable = 0
        self.last_ts = 0
        self.dropped_events = 0
        self.reported_dropped = 0
        self.dropped_ref = None
        self.dropped_sent = 0
        # After `unavailable` (the hub could not store a report) resend only after a backoff.
        self.resend_at = 0
        self.resend_backoff_s = 0.5
        self.resend_backoff_max_s = 30.0
        self._resend_delay_s = 0.0
        self.was_reset = None
        self.pending_key = None
        self.renewed = 0
        # Command ids already executed, with the result sent: a repeat is answered, not re-run.
        self.done = port.load_done(state_dir)
        self.clock_offset_ms = 0  # the hub's clock minus ours, learnt from each `welcome`
        self.window = replay.HubWindow()
        self.inbox = []  # hub frames read but not handled yet (several can come in one read)
        self.refused = 0
        self.fw = firmware.Firmware(self, retry_delay_s=retry_delay_s, beacon_s=beacon_s, boot_faults=boot_faults, clear_bootguard=clear_bootguard)

    @property
    def firmware_version(self):
        return self.fw.version

    def hub_now(self):
        """Milliseconds on the hub's clock, as far as this device knows it."""
        return self.port.now_ms() + self.clock_offset_ms

    # --- frames -----------------------------------------------------------------------

    def frame(self, kind, body):
        self.seq += 1
        message = {
            "v": 1,
            "type": kind,
            "id": self.port.uuid4(),
            "seq": self.seq,
            "issued_at": self.hub_now(),
            "ttl_ms": 30000,
            "nonce": self.port.random_b64(16),
            "body": body,
        }
        if self.token:
            message["session"] = self.token
        return message

    def send(self, conn, kind, body):
        return self.send_message(conn, self.frame(kind, body))

    def send_message(self, conn, message):
        conn.send(framing.encode(message))
        return message["id"]

    def accept(self, conn, message):
        """Run a hub frame through this session's window; a refused one is answered with an
        `error` frame and not acted on. The first `welcome` sets the clock first. An `error`
        without `seq` is the gateway's notice (it writes those outside the session)."""
        if message.get("type") == "welcome" and self.window.last_seq < 0:
            time_ms = (message.get("body") or {}).get("time_ms")
            if isinstance(time_ms, int) and not isinstance(time_ms, bool):
                self.clock_offset_ms = time_ms - self.port.now_ms()
        if message.get("type") == "error" and "seq" not in message:
            # The gateway's own notice before it closes or drops (revoked, rate_limited,
            # bad framing), outside the session's sequence: recorded, and `revoked` ends it.
            return True
        try:
            self.window.check(message, self.hub_now())
        except replay.Refused as refusal:
            self.refused += 1
            ref = message.get("id") if isinstance(message.get("id"), str) else None
            self.log("hub frame refused", refusal.code, refusal.reason)
            self.send(conn, "error", {"code": refusal.code, "reason": refusal.reason, "ref": ref})
            return False
        return True

    def receive(self, conn, buffer, timeout_s):
        """Read once into the inbox; False on timeout."""
        chunk = conn.recv(timeout_s)
        if chunk is None:
            return False
        if not chunk:
            raise SessionRefused("closed", "the hub closed the connection" + (" (%s)" % self.last_error if self.last_error else ""))
        self.inbox.extend(buffer.feed(chunk))
        return True

    def read_until(self, conn, buffer, kinds, timeout_s):
        """Frames until one of `kinds` arrives; an `error` frame from the hub ends the session.
        Frames after it stay in the inbox for serve()."""
        deadline = self.port.now_ms() + int(timeout_s * 1000)
        while self.port.now_ms() < deadline:
            while self.inbox:
                message = self.inbox.pop(0)
                if not self.accept(conn, message):
                    continue
                if message.get("type") == "error":
                    body = message.get("body") or {}
                    raise SessionRefused(body.get("code", "error"), body.get("reason", ""))
                if message.get("type") in kinds:
                    return message
            self.receive(conn, buffer, max(0.05, (deadline - self.port.now_ms()) / 1000.0))
        raise SessionRefused("timeout", "no %s from the hub within %.0f s" % ("/".join(kinds), timeout_s))

    # --- one session --------------------------------------------------------------------

    def open_session(self):
        conn = self.port.connect_mtls(self.state_dir)
        buffer = framing.FrameBuffer()
        try:
            self.token = None
            self.window = replay.HubWindow()  # per session: the hub's seq starts again
            self.inbox = []
            welcome = self.read_until(conn, buffer, ("welcome",), 10)
            self.heartbeat_s = (welcome.get("body") or {}).get("heartbeat_s", 30)
            hello = self.fw.hello()
            hello["capabilities"] = self.profile["capabilities"]
            self.send(conn, "hello", hello)
            session = self.read_until(conn, buffer, ("session",), 10)
            self.token = session["body"]["token"]
            self.window.token = self.token
            self.heartbeat_s = session["body"].get("heartbeat_s", self.heartbeat_s)
        except Exception:
            conn.close()
            raise
        self.sessions += 1
        self.log("session open", self.node_id)
        self.fw.announce(conn)
        self.send_reports(conn)
        return conn, buffer

    # --- reports: kept until acknowledged ------------------------------------------------

    def measure(self, values, ts):
        """A report to deliver: kept until its ack; the oldest waiting one goes when full."""
        # Distinct times: the hub stores one value per capability and `ts` (a resend is the same report).
        ts = max(ts, self.last_ts + 1)
        self.last_ts = ts
        self.measured += 1
        self.outbox.append({"values": values, "ts": ts, "ref": None})
        # Reports back from flight (`unavailable`, a lost session) count as waiting again.
        waiting = [i for i in range(len(self.outbox)) if self.outbox[i]["ref"] is None]
        extra = len(waiting) - self.offline_max
        while extra > 0:  # one in flight may already be stored: not dropped
            self.dropped(self.outbox.pop(waiting[0]))
            waiting = [i for i in range(len(self.outbox)) if self.outbox[i]["ref"] is None]
            extra -= 1

    def dropped(self, report):
        """Called for each report the full buffer dropped (a test hooks it)."""
        self.dropped_events += 1

    def queue_offline(self, values, ts):
        self.measure(values, ts)

    def send_reports(self, conn):
        """Send waiting reports, oldest first, up to `in_flight_max` unacknowledged; each
        send is a new frame with the report's own `ts` and values. Then the drop counter."""
        if self.port.now_ms() >= self.resend_at:
            in_flight = 0
            for report in self.outbox:
                if report["ref"] is not None:
                    in_flight += 1
            for report in self.outbox:
                if in_flight >= self.in_flight_max:
                    break
                if report["ref"] is None:
                    report["ref"] = self.send(conn, "state", {"values": report["values"], "ts": report["ts"]})
                    in_flight += 1
        # The drop counter, one event at a time, counted as told only once acknowledged.
        if self.dropped_events != self.reported_dropped and self.dropped_ref is None and self.port.now_ms() >= self.resend_at:
            self.dropped_sent = self.dropped_events
            self.dropped_ref = self.send(conn, "event", {"name": "dropped_events", "data": {"count": self.dropped_sent}})

    def report_acked(self, ref):
        if ref is not None and ref == self.dropped_ref:
            self.reported_dropped = self.dropped_sent
            self.dropped_ref = None
            return True
        for i in range(len(self.outbox)):
            if self.outbox[i]["ref"] == ref:
                del self.outbox[i]
                self.acked_reports += 1
                self._resend_delay_s = 0.0
                return True
        return False

    def report_unavailable(self, ref):
        """The hub could not store it: it waits again, and resending waits a backoff."""
        if ref is not None and ref == self.dropped_ref:
            self.dropped_ref = None
        for report in self.outbox:
            if report["ref"] == ref:
                report["ref"] = None
                now = self.port.now_ms()
                self.unavailable += 1
                if now >= self.resend_at:  # the first answer of a round of sends sets the next wait
                    self._resend_delay_s = min(max(self._resend_delay_s * 2, self.resend_backoff_s), self.resend_backoff_max_s)
                    self.resend_at = now + int(self._resend_delay_s * 1000)
                return True
        return False

    def report_refused(self, ref):
        """The hub refused the report itself (bad_state: it will never take it): not resent."""
        if ref is not None and ref == self.dropped_ref:
            self.dropped_ref = None
        for i in range(len(self.outbox)):
            if self.outbox[i]["ref"] == ref:
                del self.outbox[i]
                self.refused_reports += 1
                return True
        return False

    def session_lost(self):
        """Unacknowledged reports of a session that ended wait to be sent again."""
        for report in self.outbox:
            report["ref"] = None
        self.dropped_ref = None
        self.resend_at = 0

    def serve(self, conn, buffer, should_stop):
        """Report, ping and listen until the hub closes the session or we are told to stop."""
        next_report = 0
        next_ping = self.port.now_ms() + int(self.heartbeat_s * 1000)
        last = self.port.now_ms()
        while not should_stop():
            now = self.port.now_ms()
            if now >= next_report:
                values = self.hardware.tick((now - last) / 1000.0)
                last = now
                if not self.fw.safe_mode:  # safe mode: the control channel and health beacons only
                    self.measure(values, now + self.clock_offset_ms)
                next_report = now + int(self.report_s * 1000)
            self.fw.tick(conn)
            self.send_reports(conn)
            if now >= next_ping:
                self.send(conn, "ping", {})
                next_ping = now + int(self.heartbeat_s * 1000)
            while self.inbox:
                message = self.inbox.pop(0)
                if self.accept(conn, message):
                    self.handle(conn, message)
            self.receive(conn, buffer, 0.2)

    def handle(self, conn, message):
        kind = message.get("type")
        body = message.get("body") or {}
        if kind == "ack":
            self.report_acked(body.get("ref"))
        elif kind == "command":
            self.on_command(conn, message)
        elif kind == "reset":
            self.on_reset(conn, message)
        elif kind in ("ota.offer", "ota.chunk", "ota.abort", "ota.rollback", "ota.clear"):
            self.fw.handle(conn, message)
        elif kind == "cert.renew":
            # The hub asks for a fresh key: generate it here; only the CSR leaves the device.
            self.pending_key, csr = self.port.new_key_and_csr(self.node_id)
            self.send(conn, "cert.renew", {"csr": csr})
        elif kind == "cert.issued" and self.pending_key:
            problem = self.port.install_renewed(self.state_dir, self.pending_key, body, self.hub["ca_fingerprint"])
            if problem:
                self.send(conn, "error", {"code": "bad_certificate", "reason": problem, "ref": message.get("id")})
            else:
                self.renewed += 1  # used from the next connection on
            self.pending_key = None
        elif kind == "error":
            self.last_error = "%s: %s" % (body.get("code"), body.get("reason"))
            self.log("hub error", self.last_error)
            if body.get("code") in ("unavailable", "rate_limited"):
                self.report_unavailable(body.get("ref"))
            else:
                self.report_refused(body.get("ref"))
            if body.get("code") == "revoked":
                raise SessionRefused("revoked", body.get("reason", ""))

    def on_reset(self, conn, message):
        """A signed order to forget this identity (provision.reset) or everything (factory_reset)."""
        problem = signing.verify_frame(self.port, message, self.node_id, self.hub["hub_signing_key"])
        body = message.get("body") or {}
        if problem is None and body.get("kind") == "bootguard.clear":
            self.fw.clear_bootguard()
        if problem is None and body.get("kind") not in ("provision.reset", "factory_reset"):
            problem = "unknown reset kind %r" % (body.get("kind"),)
        if problem:
            self.send(
                conn,
                "error",
                {"code": "bad_signature" if "signature" in problem or "unsigned" in problem else "bad_reset", "reason": problem, "ref": message.get("id")},
            )
            return
        self.port.wipe(self.state_dir, body["kind"] == "factory_reset")
        self.was_reset = body["kind"]
        raise SessionRefused("reset", "the hub ordered %s; identity wiped" % body["kind"])

    def on_command(self, conn, message):
        command_id = message.get("id")
        body = message.get("body") or {}
        self.send(conn, "ack", {"id": command_id})
        if command_id in self.done:
            outcome = self.done[command_id]
        else:
            outcome = self.execute(body)
            self.executed += 1
            self.done[command_id] = outcome
            while len(self.done) > 256:
                del self.done[next(iter(self.done))]
            self.port.save_done(self.state_dir, self.done)
        result = {"id": command_id, "status": outcome[0], "value": outcome[1]}
        if outcome[2]:
            result["reason"] = outcome[2]
        self.send(conn, "result", result)
        if outcome[0] == "ok" and body.get("action") in ("set", "toggle"):
            self.measure({body["capability"]: outcome[1]}, self.hub_now())
            self.send_reports(conn)

    def execute(self, body):
        """(status, value, reason) for one command against the virtual hardware."""
        if self.fw.safe_mode and body.get("action") != "get":
            return ("error", None, "device is in safe mode")
        capability = body.get("capability")
        spec = None
        for cap in self.profile["capabilities"]:
            if cap["name"] == capability:
                spec = cap
        if spec is None:
            return ("error", None, "no capability %r on this device" % (capability,))
        action = body.get("action")
        if action == "get":
            return ("ok", self.hardware.values.get(capability), "")
        if not spec.get("writable", spec.get("kind") != "sensor"):
            return ("error", None, "capability %r is not writable" % (capability,))
        if action == "set":
            return ("ok", self.hardware.apply(capability, body.get("value")), "")
        if action == "toggle":
            return ("ok", self.hardware.apply(capability, not self.hardware.values.get(capability)), "")
        if action == "execute":
            return ("ok", None, "")
        return ("error", None, "unknown action %r" % (action,))

    def run(self, should_stop, max_backoff_s=60.0):
        """Boot, then sessions until stopped, reconnecting with jittered exponential backoff;
        a reboot (a new image, a revert, a cleared boot guard) boots again at once."""
        backoff = 1.0
        self.fw.boot(should_stop)
        while not should_stop():
            try:
                if not self.fw.can_connect():
                    self.fw.check_trial_deadline()  # raises Reboot once the trial's time is up
                    self.port.sleep(0.1)
                    continue
                try:
                    conn, buffer = self.open_session()
                except (SessionRefused, OSError, framing.FrameError) as exc:
                    self.last_error = str(exc)
                    self.log("connect failed", self.last_error)
                    self.fw.check_trial_deadline()
                else:
                    backoff = 1.0
                    try:
                        self.serve(conn, buffer, should_stop)
                    except (SessionRefused, OSError, framing.FrameError) as exc:
                        self.last_error = str(exc)
                        self.log("session ended", self.last_error)
                    finally:
                        conn.close()
                        self.token = None
                        self.session_lost()
                    if self.was_reset:
                        return  # no identity left: enroll again
            except firmware.Reboot as reboot:
                self.log("rebooting", str(reboot))
                self.fw.boot(should_stop)
                continue
            if should_stop():
                break
            delay = backoff * (0.5 + self.port.random())
            backoff = min(backoff * 2, max_backoff_s)
            waited = 0.0
            next_sample = 0.0
            while waited < delay and not should_stop():
                if waited >= next_sample:  # keep measuring while away from the hub
                    self.queue_offline(self.hardware.tick(self.report_s), self.hub_now())
                    next_sample += self.report_s
                self.port.sleep(0.1)
                waited += 0.1
