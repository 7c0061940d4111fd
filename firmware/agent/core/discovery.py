"""Find the hub on the LAN (MicroPython-compatible): a padded UDP probe, one answer.

The port provides udp_exchange(host, port, payload, timeout_s) -> bytes or None.
"""

import json

MIN_PROBE_BYTES = 1024


def probe_payload():
    data = json.dumps({"v": 1, "type": "discover"}).encode()
    return data + b" " * (MIN_PROBE_BYTES - len(data))


def discover(port, host="255.255.255.255", udp_port=8885, timeout_s=2.0):
    """The hub's answer body (enroll/mesh addresses, CA fingerprint), or None."""
    reply = port.udp_exchange(host, udp_port, probe_payload(), timeout_s)
    if not reply:
        return None
    try:
        message = json.loads(reply.decode("utf-8"))
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("type") != "hub" or not isinstance(message.get("body"), dict):
        return None
    return message["body"]
