"""meshhub reference device agent.

`core/` is the protocol core, written for MicroPython as well as CPython: only json,
struct, hashlib, binascii, time and os, no typing, dataclasses or asyncio. `port.py` is
the CPython port layer: keys and CSRs (cryptography), TLS sockets with CA pinning, the
state directory. A MicroPython port supplies the same functions from its own modules.
"""
