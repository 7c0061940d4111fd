"""Simulated firmware images (MicroPython-compatible): real files whose first line is a
JSON header choosing how the image behaves once installed, so every OTA fault path runs
for real (ARCHITECTURE §9.1):

    {"meshhub_sim": 1, "version": "1.2.0", "behaviour": "healthy"}\\n<padding up to size>

`healthy` boots and reports; `crash-at-boot` never finishes booting; `fail-health` boots
and fails its health check; `no-network` boots and cannot reach the hub. An image without
the header is a real image: the simulated device treats it as healthy.
"""

import json

MAGIC = "meshhub_sim"
BEHAVIOURS = ("healthy", "crash-at-boot", "fail-health", "no-network")
MAX_HEADER = 512  # bytes of the first line read to find the header


class ImageError(Exception):
    pass


def header_line(version, behaviour):
    if behaviour not in BEHAVIOURS:
        raise ImageError("behaviour must be one of %s, not %r" % (", ".join(BEHAVIOURS), behaviour))
    if not isinstance(version, str) or not version or len(version) > 64:
        raise ImageError("version must be 1-64 characters")
    # Written in this order by hand: read_header looks for the magic first, and MicroPython's
    # dicts (so its json.dumps) do not keep insertion order.
    return ('{"%s": 1, "version": %s, "behaviour": %s}\n' % (MAGIC, json.dumps(version), json.dumps(behaviour))).encode()


def read_header(first_bytes):
    """The header of an image from its first bytes, or None for an image without one (a
    real image). A line that starts like a header but is not a valid one raises."""
    end = first_bytes.find(b"\n", 0, MAX_HEADER)
    if not first_bytes.startswith(b'{"' + MAGIC.encode()) or end < 0:
        return None
    try:
        header = json.loads(first_bytes[:end].decode())
    except ValueError:
        raise ImageError("the simulated image header is not JSON")
    if not isinstance(header, dict) or header.get(MAGIC) != 1:
        raise ImageError("unknown simulated image header version")
    if header.get("behaviour") not in BEHAVIOURS or not isinstance(header.get("version"), str):
        raise ImageError("the simulated image header needs a version and a known behaviour")
    return header
