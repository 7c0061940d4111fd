"""Secrets out of log lines, by one rule applied to every record (hub.logging.JsonFormatter).

Device payloads, errors and exceptions are logged as they come, and a device (or an
operator pasting into a field) can put anything in them. Rather than trusting every call
site, the formatter passes the message, every `extra=` value and the traceback through
`redact()`: values under keys that name a secret, `key=value` / `key: value` pairs in
free text whose key names one, PEM blocks, API tokens `mh_<key>_<secret>`, enrollment
codes and long base64/hex runs (keys, signatures) become MARKER. Pure: no Django.
"""

from __future__ import annotations

import itertools
import re
from typing import Any

MARKER = "[REDACTED]"

# A key names a secret when one of its words (split on anything but letters and digits,
# and on camelCase) is one of these: `pin` but not `ping`, `api_key` but not `key_count`.
_SECRET_WORDS = frozenset(
    {
        "pin",
        "pins",
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "secrets",
        "token",
        "tokens",
        "csr",
        "authorization",
        "cookie",
        "credential",
        "credentials",
        "privatekey",
        "apikey",
        "enrollmentcode",
        "enrollcode",
        "confirmationcode",
        "sig",
        "signature",
    }
)
_SECRET_PAIRS = {("private", "key"), ("api", "key"), ("enrollment", "code"), ("enroll", "code"), ("confirmation", "code"), ("session", "token")}
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")

_KEY_WORDS = r"(?:pins?|password|passwd|pwd|passphrase|secrets?|tokens?|csr|authorization|cookie|credentials?|api[_ -]?key|private[_ -]?key|(?:enroll(?:ment)?|confirmation)[_ -]?code|signature|sig)"
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.DOTALL)
_API_TOKEN = re.compile(r"\b(mh_[0-9A-Za-z]+_)[0-9A-Za-z_\-]+")
# key=value, key: value, "key": "value" in free text (a key word may carry a prefix: db_password).
# The prefix is bounded: an unbounded `(?:[a-z0-9]+[_-])*` took 69 s on a 60 KB `a_a_a_…`
# event (quadratic backtracking), a device-triggered stall of the gateway's loop.
_PAIR = re.compile(
    r"""(?ix)
    (?<![A-Za-z0-9])((?:[a-z0-9]{1,24}[_-]){0,3}"""
    + _KEY_WORDS
    + r"""["']?\s*[=:]\s*)
    (?!\[REDACTED\])
    (?:(?:token|bearer|basic)\s+)?
    ("[^"]*"|'[^']*'|[^\s,;&"'}\]]+)
    """
)
_ENROLLMENT_CODE = re.compile(r"(?<![0-9A-Za-z])[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}(?![0-9A-Za-z])")
# Long hex (≥ 48: a certificate serial, 40 digits, and a uuid stay readable; a fingerprint
# `sha256:<hex>` is public and stays) and long base64 mixing digits and both cases.
_HEX = re.compile(r"(?<![0-9A-Za-z:])(?<!sha256:)[0-9a-fA-F]{48,}(?![0-9A-Za-z])")
_B64 = re.compile(r"(?<![0-9A-Za-z+/_-])(?=[A-Za-z0-9+/_-]*[0-9])(?=[A-Za-z0-9+/_-]*[a-z])(?=[A-Za-z0-9+/_-]*[A-Z])[A-Za-z0-9+/_-]{32,}={0,2}")


def is_secret_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    if any(w in _SECRET_WORDS for w in words) or "".join(words) in _SECRET_WORDS:
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def redact_text(text: str) -> str:
    text = _PEM.sub(MARKER, text)
    text = _PAIR.sub(lambda m: m.group(1) + MARKER, text)
    text = _API_TOKEN.sub(lambda m: m.group(1) + MARKER, text)
    text = _ENROLLMENT_CODE.sub(MARKER, text)
    text = _HEX.sub(MARKER, text)
    return _B64.sub(MARKER, text)


def _has_content(value: Any) -> bool:
    """`{"pin": true}` (a PIN is required) says nothing secret; `{"pin": "123456"}` does."""
    return not (value is None or value == "" or isinstance(value, bool))


def redact(value: Any, depth: int = 0) -> Any:
    """The value with every secret replaced by MARKER; containers are copied, never changed."""
    if isinstance(value, str):
        return redact_text(value)
    if depth > 20:  # a pathological nesting is not worth walking: say so rather than leak
        return MARKER
    if isinstance(value, dict):
        return {k: (MARKER if is_secret_key(k) and _has_content(v) else redact(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, bytes | bytearray):
        return redact_text(bytes(value).decode("utf-8", "replace"))
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))
