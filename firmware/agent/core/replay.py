"""Anti-replay for frames from the hub, on the device (MicroPython-compatible).

The same window the hub keeps for device frames (hub/mesh/protocol.py, ARCHITECTURE §5),
judged against the hub's clock as the agent learnt it from `welcome`: per session a
strictly increasing `seq`, nonces unique while their frame could still be accepted
(bounded memory), `issued_at` within the skew, `ttl_ms` not expired, and the session
token on every frame after `session`. A refused frame is not acted on; its `code` and
`reason` go back to the hub in an `error` frame with the same codes the hub uses.
"""

DEFAULT_SKEW_MS = 5 * 60 * 1000
MAX_TTL_MS = 3600000
MAX_NONCES = 256


class Refused(Exception):
    def __init__(self, code, reason):
        super().__init__("%s: %s" % (code, reason))
        self.code = code
        self.reason = reason


def _seconds(ms, plus=""):
    """Milliseconds as seconds with one decimal, rounded half away from zero, in integers:
    "%.1f" rounds a tie (1250 ms) to 1.2 on CPython and to 1.3 on MicroPython."""
    tenths = (abs(int(ms)) + 50) // 100
    return "%s%d.%d" % ("-" if ms < 0 else plus, tenths // 10, tenths % 10)


def _integer(message, field, low, high):
    value = message.get(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Refused("bad_frame", "%s must be an integer" % field)
    if value < low or value > high:
        raise Refused("bad_frame", "%s %d outside %d..%d" % (field, value, low, high))
    return value


class HubWindow:
    """One per session. `check(message, now_ms)` with `now_ms` on the hub's clock accepts
    (and remembers) the frame or raises Refused; nothing changes on a refusal."""

    def __init__(self, skew_ms=DEFAULT_SKEW_MS, max_nonces=MAX_NONCES):
        self.skew_ms = skew_ms
        self.max_nonces = max_nonces
        self.last_seq = -1
        self.token = None  # set once `session` is accepted; every later frame must carry it
        self.nonces = {}  # nonce -> when it may be forgotten (its frame can no longer pass)
        self.order = []  # nonces oldest first, to forget and bound them

    def check(self, message, now_ms):
        if message.get("v") != 1:
            raise Refused("bad_frame", "v must be 1")
        for field in ("type", "id", "nonce"):
            value = message.get(field)
            if not isinstance(value, str) or not value:
                raise Refused("bad_frame", "%s must be a non-empty string" % field)
        if not isinstance(message.get("body"), dict):
            raise Refused("bad_frame", "body must be a JSON object")
        seq = _integer(message, "seq", 0, 9007199254740992)
        issued_at = _integer(message, "issued_at", 0, 9007199254740992)
        ttl_ms = _integer(message, "ttl_ms", 1, MAX_TTL_MS)
        if self.token is not None and message.get("session") != self.token:
            raise Refused("bad_session", "missing or wrong session token")
        if issued_at + ttl_ms < now_ms:
            raise Refused("expired", "frame expired %s s ago (ttl_ms %d)" % (_seconds(now_ms - issued_at - ttl_ms), ttl_ms))
        if abs(issued_at - now_ms) > self.skew_ms:
            raise Refused("clock_skew", "issued_at is %s s from the hub's clock; allowed +/-%d s" % (_seconds(issued_at - now_ms, "+"), self.skew_ms // 1000))
        if seq <= self.last_seq:
            raise Refused("replayed_seq", "seq %d is not above the last accepted seq %d" % (seq, self.last_seq))
        self.forget(now_ms)
        nonce = message["nonce"]
        if nonce in self.nonces:
            raise Refused("nonce_reused", "nonce was already used in this session")
        self.last_seq = seq
        self.nonces[nonce] = issued_at + ttl_ms
        self.order.append(nonce)
        while len(self.order) > self.max_nonces:  # the seq check alone still refuses replays
            del self.nonces[self.order.pop(0)]

    def forget(self, now_ms):
        """Drop nonces whose frames have expired: a replay of one is refused as expired."""
        keep = []
        for nonce in self.order:
            if self.nonces[nonce] < now_ms:
                del self.nonces[nonce]
            else:
                keep.append(nonce)
        self.order = keep

    def __len__(self):
        return len(self.order)
