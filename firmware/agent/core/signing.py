"""Checking the hub's signature on `reset` (and later `ota`) frames (MicroPython-compatible).

The port provides verify_ed25519(public_key_b64, message_bytes, signature_b64) -> bool.
"""

from firmware.agent.core.update import canonical

SIGNED_TYPES = ("reset", "ota.offer", "ota.abort", "ota.rollback", "ota.clear")


def signing_payload(frame, node_id):
    subject = {"type": frame["type"], "id": frame["id"], "issued_at": frame["issued_at"], "node_id": node_id, "body": frame["body"]}
    # The hub's json.dumps(subject, sort_keys=True, separators=(",", ":")): MicroPython's
    # json has no sort_keys (a TypeError there), so the core's canonical JSON writes it.
    return canonical(subject, True).encode("utf-8")


def verify_frame(port, frame, node_id, hub_signing_key):
    """None when the frame carries a valid hub signature for this node, else the reason."""
    signature = frame.get("sig")
    if not signature:
        return "unsigned %s frame" % frame.get("type")
    try:
        payload = signing_payload(frame, node_id)
    except (KeyError, TypeError):
        return "malformed %s frame" % frame.get("type")
    if not port.verify_ed25519(hub_signing_key, payload, signature):
        return "bad signature on %s frame" % frame.get("type")
    return None
