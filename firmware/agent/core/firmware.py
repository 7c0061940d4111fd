"""The agent's firmware life (MicroPython-compatible): booting through the boot guard,
the `boot` frame, transfers into the inactive slot, the trial of a new image (health
beacons, `ota.complete`, or a revert), safe mode, and the signed orders from the hub
(ota.rollback, ota.clear, bootguard.clear). docs/ota.md is the contract.

The simulated images say how they behave once booted (core/image.py): `crash-at-boot`
never reaches running, `fail-health` fails its health check, `no-network` cannot reach
the hub; an image without the header (the agent's own, or a real one) is healthy.
"""

from firmware.agent.core import bootguard, image, signing, update


class Reboot(Exception):
    """The device restarts its agent loop on the slot the boot guard says."""


class Firmware:
    def __init__(self, agent, retry_delay_s=30.0, beacon_s=5.0, boot_faults=0, clear_bootguard=False):
        self.agent = agent
        self.port = agent.port
        self.state_dir = agent.state_dir
        self.retry_delay_s = retry_delay_s
        self.beacon_s = beacon_s
        state = self.port.load_boot(self.state_dir)
        self.state = state if state else bootguard.initial(agent.base_version)
        if boot_faults:
            self.state["boot_faults"] = boot_faults
        if clear_bootguard:
            bootguard.clear(self.state)
        self.save()
        self.behaviour = "healthy"
        self.transfer = None
        self.beacons = 0
        self.resumed_at = []  # the offset each accepted offer asked for (0: from the start)
        self.next_beacon = 0
        self.boot_sent_epoch = -1
        self.failed_boots = 0
        self.booted_at = self.port.now_ms()

    def save(self):
        self.port.save_boot(self.state_dir, self.state)

    @property
    def version(self):
        return bootguard.running_version(self.state)

    @property
    def slot(self):
        return bootguard.running_slot(self.state)

    @property
    def safe_mode(self):
        return self.state["safe_mode"]

    @property
    def pending(self):
        return self.state["pending"] is not None

    # --- booting ----------------------------------------------------------------------

    def image_behaviour(self, slot):
        try:
            header = image.read_header(self.port.slot_head(self.state_dir, slot, image.MAX_HEADER))
        except image.ImageError:
            return "crash-at-boot"  # an image that claims a header and breaks it does not boot
        return header["behaviour"] if header else "healthy"

    def boot(self, should_stop):
        """Boot until a boot reaches running (or safe mode); failed boots go through the guard."""
        while not should_stop():
            slot = bootguard.begin(self.state)
            behaviour = self.image_behaviour(slot)
            if self.state.get("boot_faults", 0) > 0:
                self.state["boot_faults"] -= 1
                behaviour = "crash-at-boot"
            self.save()
            if behaviour != "crash-at-boot":
                if self.state["safe_mode"]:
                    self.state["boot_stage"] = "safe_mode"
                else:
                    bootguard.succeeded(self.state)
                self.save()
                self.behaviour = behaviour
                self.beacons = 0
                self.next_beacon = 0
                self.booted_at = self.port.now_ms()
                self.agent.log("booted", slot, self.version, behaviour, "safe mode" if self.safe_mode else "")
                return
            self.failed_boots += 1
            action, delay = bootguard.failed(self.state, "version %s crashed at boot" % self.version, self.port.now_ms(), self.retry_delay_s)
            self.save()
            self.agent.log("boot failed", slot, action, delay)
            if action == "safe_mode":
                continue  # boot the active image once more, in safe mode
            waited = 0.0
            while waited < delay and not should_stop():
                self.port.sleep(0.1)
                waited += 0.1

    def can_connect(self):
        """A `no-network` image on trial cannot reach the hub; the trial's deadline reverts it."""
        return not (self.pending and self.behaviour == "no-network")

    def check_trial_deadline(self):
        """Raises Reboot when a trial image was not confirmed in time."""
        by = self.state.get("confirm_by_ms")
        if self.pending and by is not None and self.port.now_ms() >= by:
            why = (
                "the new image could not reach the hub by the deadline" if self.behaviour == "no-network" else "the new image was not confirmed by the deadline"
            )
            self.revert(why)

    def revert(self, reason):
        self.agent.log("reverting", reason)
        bootguard.revert(self.state, reason)
        self.save()
        raise Reboot(reason)

    # --- the session --------------------------------------------------------------------

    def hello(self):
        return {"firmware_version": self.version, "slot": self.slot, "boot": {"reason": self.state["boot_reason"]}}

    def announce(self, conn):
        """The `boot` frame, first thing in every session; the rollback it reports is told
        in the first session after that boot only."""
        first = self.boot_sent_epoch != self.state["boot_epoch"]
        # The trial's beacons count again in every session: one sent as a session died may
        # never have reached the hub, and ota.complete must follow N beacons the hub saw
        # (frames of one session arrive in order).
        self.beacons = 0
        self.agent.send(
            conn,
            "boot",
            {
                "slot": self.slot,
                "version": self.version,
                "boot_epoch": self.state["boot_epoch"],
                "reason": self.state["boot_reason"],
                "consecutive_fails": self.state["consecutive_fails"],
                "safe_mode": self.state["safe_mode"],
                "previous_version": bootguard.previous_version(self.state) or "",
                "pending": self.pending,
                "deployment": self.state["deployment"],
                "rollback": self.state["rollback"] if first else None,
                "diagnostic": self.state["diagnostic"],
            },
        )
        self.boot_sent_epoch = self.state["boot_epoch"]

    def tick(self, conn):
        """From the session loop: beacons while a trial runs (or in safe mode), the trial's
        end (ota.complete and confirm, or a revert), its deadline."""
        self.check_trial_deadline()
        if not (self.pending or self.safe_mode):
            return
        now = self.port.now_ms()
        if now < self.next_beacon:
            return
        self.next_beacon = now + int(self.beacon_s * 1000)
        healthy = self.behaviour != "fail-health" and not self.safe_mode
        checks = {"boot": not self.safe_mode, "selftest": healthy}
        self.agent.send(conn, "health", {"deployment": self.state["deployment"], "ok": healthy, "checks": checks, "uptime_s": (now - self.booted_at) // 1000})
        if self.safe_mode:
            return
        if not healthy:
            self.revert("the new image failed its health check")
        self.beacons += 1
        if self.beacons >= self.state.get("health_beacons", 3):
            self.complete(conn)

    def complete(self, conn):
        """Signed with the device key; the slot is confirmed as it goes (docs/ota.md)."""
        body = {"deployment": self.state["deployment"], "version": self.version, "slot": self.slot, "beacons": self.beacons}
        message = self.agent.frame("ota.complete", body)
        subject = {
            "type": "ota.complete",
            "deployment": body["deployment"],
            "version": body["version"],
            "slot": body["slot"],
            "node_id": self.agent.node_id,
            "issued_at": message["issued_at"],
        }
        body["signature"] = self.port.sign_device(self.state_dir, update.canonical(subject).encode())
        self.agent.send_message(conn, message)
        bootguard.confirm(self.state)
        self.save()
        self.agent.log("confirmed", self.slot, self.version)

    # --- frames from the hub ------------------------------------------------------------

    def signed(self, conn, message):
        problem = signing.verify_frame(self.port, message, self.agent.node_id, self.agent.hub["hub_signing_key"])
        if problem:
            self.agent.send(conn, "error", {"code": "bad_signature", "reason": problem, "ref": message.get("id")})
            return False
        return True

    def handle(self, conn, message):
        kind = message.get("type")
        body = message.get("body") or {}
        if kind == "ota.chunk":
            self.on_chunk(conn, body)
            return
        if not self.signed(conn, message):
            return
        if kind == "ota.offer":
            self.on_offer(conn, body)
        elif kind == "ota.abort":
            self.drop_transfer()
            self.agent.send(conn, "ota.status", {"deployment": body.get("deployment"), "status": "aborted", "reason": str(body.get("reason", ""))[:200]})
        elif kind == "ota.rollback":
            problem = bootguard.rollback(self.state, "forced by the hub: %s" % str(body.get("reason", ""))[:150])
            if problem:
                self.agent.send(conn, "error", {"code": "no_rollback", "reason": problem, "ref": message.get("id")})
                return
            self.save()
            raise Reboot("forced rollback")
        elif kind == "ota.clear":
            self.drop_transfer()
            if self.pending:
                self.revert("the hub cleared the pending image")

    def clear_bootguard(self):
        bootguard.clear(self.state)
        self.save()
        raise Reboot("boot guard cleared")

    def release_keys(self):
        hub = self.agent.hub
        return hub.get("release_keys") or [hub["release_key"]]

    def on_offer(self, conn, body):
        deployment = body.get("deployment")
        if self.pending and deployment is not None and deployment == self.state["deployment"]:
            # The hub lost the end of this transfer: the image runs on trial already. The
            # boot frame again tells it so (and it catches up); nothing to accept or refuse.
            self.boot_sent_epoch = -1
            self.announce(conn)
            return
        try:
            if self.safe_mode:
                raise update.Rejected("safe_mode", "the device is in safe mode (boot loop); clear its boot guard first")
            if self.pending:
                raise update.Rejected("busy", "a new image is on trial on this device")
            if self.transfer is not None and self.transfer.meta["deployment"] != deployment:
                # The hub offers one deployment at a time: a new one means the old one ended
                # there (its abort may have been lost with the link).
                self.agent.log("offer of deployment", deployment, "supersedes", self.transfer.meta["deployment"])
                self.drop_transfer()
            manifest = update.check_offer(
                self.port,
                body,
                self.release_keys(),
                self.agent.profile.get("device_type", ""),
                self.state["counters"][self.state["active"]],
                self.agent.hub_now(),
            )
            chunk = body.get("chunk_size")
            if not isinstance(chunk, int) or chunk < 1 or chunk > 48 * 1024:
                raise update.Rejected("incompatible", "chunk size %r does not fit a frame" % (chunk,))
        except update.Rejected as refusal:
            self.agent.log("offer rejected", refusal.code, refusal.reason)
            self.agent.send(conn, "ota.reject", {"deployment": deployment, "code": refusal.code, "reason": refusal.reason})
            return
        slot = bootguard.other(self.state["active"])
        # The inactive slot is about to change: it is no image to roll back to any more.
        self.state["valid"][slot] = False
        self.state["versions"][slot] = None
        self.save()
        meta = self.port.load_transfer(self.state_dir)
        if not meta or meta.get("deployment") != deployment or meta.get("sha256") != manifest["sha256"]:
            self.port.slot_truncate(self.state_dir, slot, 0)  # a different image: start over
        meta = {
            "deployment": deployment,
            "sha256": manifest["sha256"],
            "size": manifest["size"],
            "version": manifest["version"],
            "counter": manifest.get("security_counter", 0),
            "chunk_size": chunk,
            "health_beacons": body.get("health_beacons", 3),
            "deadline_s": body.get("deadline_s", 600),
        }
        self.port.save_transfer(self.state_dir, meta)
        self.transfer = update.Transfer(self.port, self.state_dir, slot, meta)
        offset = body.get("offset", 0)
        resume = self.transfer.resume_from(offset if isinstance(offset, int) and offset >= 0 else 0)
        if resume:
            self.agent.log("resuming deployment", deployment, "at offset", resume)
        self.resumed_at.append(resume)
        self.agent.send(conn, "ota.accept", {"deployment": deployment, "resume_offset": resume})

    def on_chunk(self, conn, body):
        transfer = self.transfer
        if transfer is None or body.get("deployment") != transfer.meta["deployment"]:
            self.agent.send(
                conn, "error", {"code": "unknown_deployment", "reason": "no transfer of deployment %r here" % (body.get("deployment"),), "ref": None}
            )
            return
        try:
            data = self.port.b64decode(body.get("data") or "")
        except ValueError:
            data = b""
        offset = body.get("offset")
        held = transfer.write(offset, data) if data else transfer.held()
        self.agent.send(conn, "ota.chunk_ack", {"deployment": transfer.meta["deployment"], "offset": held})
        if transfer.complete():
            self.finish(conn, transfer)

    def finish(self, conn, transfer):
        ok, digest, reason = transfer.verify()
        deployment = transfer.meta["deployment"]
        self.agent.send(conn, "ota.verify", {"deployment": deployment, "ok": ok, "sha256": digest, "reason": reason})
        if not ok:
            self.drop_transfer()
            return
        meta = transfer.meta
        self.agent.send(conn, "ota.status", {"deployment": deployment, "status": "installing"})
        bootguard.install(self.state, meta["version"], meta["counter"], deployment, self.port.now_ms() + int(meta["deadline_s"]) * 1000)
        self.state["health_beacons"] = meta["health_beacons"]
        self.save()
        self.port.save_transfer(self.state_dir, None)
        self.transfer = None
        self.agent.send(conn, "ota.status", {"deployment": deployment, "status": "rebooting"})
        raise Reboot("installing %s" % meta["version"])

    def drop_transfer(self):
        if self.transfer is not None:
            self.port.slot_truncate(self.state_dir, self.transfer.slot, 0)
        self.transfer = None
        self.port.save_transfer(self.state_dir, None)
