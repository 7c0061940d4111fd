"""A/B slots and the boot guard (MicroPython-compatible): what the device boots, what a
failed boot does, when it gives up and enters safe mode (ARCHITECTURE §6, docs/ota.md).

The state is one dict, kept by the port as boot.json, changed only by the functions here:

    active        the slot that holds the confirmed image ("a" or "b")
    pending       a slot on trial (a new image not confirmed yet), or None
    versions      {"a": version, "b": version or None}
    valid         {"a": bool, "b": bool}: confirmed images
    counters      {"a": n, "b": n}: the security counter of each slot's image
    deployment    the hub's deployment id of the pending image, or None
    confirm_by_ms when a trial must be confirmed by (the device's clock), or None
    boot_epoch    boots so far; boot_stage "booting" until a boot reaches "running"
    last_error    why the last boot failed
    consecutive_fails, failures (times of failed boots, the last 10 minutes)
    safe_mode, diagnostic
    boot_reason   what the next `boot` frame says (power-on, ota, rollback, ...)
    rollback      {"from_version", "reason"} after a revert, until reported
    boot_faults   boots still to fail on purpose (a test's fault injection)

Rules: a trial boot that fails reverts to the active slot at once. A confirmed image that
fails to boot retries at once the first time, after `retry_delay_s` the second and third
time; more than 3 failures within 10 minutes enter safe mode, with a diagnostic. A boot
that reaches `running` clears the consecutive count. `clear()` leaves safe mode.
"""

WINDOW_MS = 10 * 60 * 1000
MAX_FAILS = 3


def initial(version):
    return {
        "active": "a",
        "pending": None,
        "versions": {"a": version, "b": None},
        "valid": {"a": True, "b": False},
        "counters": {"a": 0, "b": 0},
        "deployment": None,
        "confirm_by_ms": None,
        "boot_epoch": 0,
        "boot_stage": "none",
        "last_error": "",
        "consecutive_fails": 0,
        "failures": [],
        "safe_mode": False,
        "diagnostic": None,
        "boot_reason": "power-on",
        "rollback": None,
        "boot_faults": 0,
    }


def other(slot):
    return "b" if slot == "a" else "a"


def running_slot(state):
    return state["pending"] or state["active"]


def running_version(state):
    return state["versions"][running_slot(state)]


def begin(state):
    """A boot starts: stamp it. Returns the slot it boots."""
    state["boot_epoch"] += 1
    state["boot_stage"] = "booting"
    return running_slot(state)


def succeeded(state):
    """The boot reached `running`."""
    state["boot_stage"] = "running"
    state["consecutive_fails"] = 0
    state["last_error"] = ""


def revert(state, reason):
    """Leave the trial slot for the active one (which holds a confirmed image)."""
    from_version = running_version(state)
    slot = state["pending"]
    if slot is not None:
        state["valid"][slot] = False
    state["pending"] = None
    state["deployment"] = None
    state["confirm_by_ms"] = None
    state["boot_reason"] = "rollback"
    state["rollback"] = {"from_version": from_version, "reason": reason}


def failed(state, reason, now_ms, retry_delay_s):
    """The boot did not reach `running`. Returns (action, delay_s): "retry" after delay_s,
    or "safe_mode" (boot with only the control channel)."""
    state["boot_stage"] = "failed"
    state["last_error"] = reason
    state["consecutive_fails"] += 1
    state["failures"] = [t for t in state["failures"] if now_ms - t < WINDOW_MS] + [now_ms]
    if state["pending"] is not None:
        revert(state, reason)
        return ("retry", 0)
    if len(state["failures"]) > MAX_FAILS:
        state["safe_mode"] = True
        state["diagnostic"] = {
            "failures_in_10_min": len(state["failures"]),
            "last_error": reason,
            "boot_epoch": state["boot_epoch"],
            "slot": state["active"],
            "version": state["versions"][state["active"]],
        }
        return ("safe_mode", 0)
    state["boot_reason"] = "watchdog"
    return ("retry", 0 if state["consecutive_fails"] == 1 else retry_delay_s)


def install(state, version, counter, deployment, confirm_by_ms):
    """The inactive slot holds a checked new image: boot it on trial."""
    slot = other(state["active"])
    state["versions"][slot] = version
    state["counters"][slot] = counter
    state["valid"][slot] = False
    state["pending"] = slot
    state["deployment"] = deployment
    state["confirm_by_ms"] = confirm_by_ms
    state["boot_reason"] = "ota"
    state["rollback"] = None
    return slot


def confirm(state):
    """The trial image passed its health check: it becomes the active, valid image."""
    slot = state["pending"]
    if slot is None:
        return None
    state["valid"][slot] = True
    state["active"] = slot
    state["pending"] = None
    state["deployment"] = None
    state["confirm_by_ms"] = None
    return slot


def rollback(state, reason):
    """An operator's forced rollback: to the other slot if it holds a valid image. Returns
    None when done, else why not."""
    if state["pending"] is not None:
        revert(state, reason)
        return None
    target = other(state["active"])
    if not state["valid"][target] or not state["versions"][target]:
        return "the other slot holds no valid image"
    from_version = state["versions"][state["active"]]
    state["active"] = target
    state["boot_reason"] = "rollback"
    state["rollback"] = {"from_version": from_version, "reason": reason}
    return None


def clear(state):
    """`bootguard.clear` or --clear-bootguard: out of safe mode, counters cleared."""
    state["safe_mode"] = False
    state["diagnostic"] = None
    state["failures"] = []
    state["consecutive_fails"] = 0
    state["last_error"] = ""
    state["boot_reason"] = "power-on"


def previous_version(state):
    """The other slot's version, when it holds a valid image (what a rollback returns to)."""
    slot = other(running_slot(state))
    return state["versions"][slot] if state["valid"][slot] else ""
