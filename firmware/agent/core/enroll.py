"""Enrollment, written against a port object so MicroPython ports can reuse it.

The port provides: new_key_and_csr(node_id) -> (key_pem, csr_pem); connect_pinned(host,
port, fingerprint) -> stream (raises on a fingerprint mismatch, before anything is sent);
check_enrolled(body, fingerprint, key_pem) -> reason or None; save_identity(state_dir,
...); uuid4() -> str; now_ms() -> int.
"""

from firmware.agent.core import framing


class EnrollError(Exception):
    def __init__(self, code, reason):
        Exception.__init__(self, "%s: %s" % (code, reason))
        self.code = code
        self.reason = reason


def enroll(port, host, tcp_port, node_id, code, pin, fingerprint, state_dir):
    key_pem, csr_pem = port.new_key_and_csr(node_id)
    stream = port.connect_pinned(host, tcp_port, fingerprint)
    try:
        body = {"node_id": node_id, "code": code, "pin": pin, "csr": csr_pem}
        stream.write(framing.encode(framing.envelope("enroll", body, port.uuid4(), port.now_ms())))
        stream.flush()
        answer = framing.read_frame(stream)
    finally:
        stream.close()
    kind = answer.get("type")
    body = answer.get("body") or {}
    if kind == "error":
        raise EnrollError(body.get("code", "error"), body.get("reason", "the hub refused without a reason"))
    if kind != "enrolled":
        raise EnrollError("protocol", "unexpected answer %r" % (kind,))
    problem = port.check_enrolled(body, fingerprint, key_pem)
    if problem:
        raise EnrollError("bad_answer", problem)
    port.save_identity(state_dir, node_id, key_pem, body, fingerprint)
    return body
