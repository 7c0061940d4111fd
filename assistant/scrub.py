"""What may leave the building: text for a cloud model with personal data removed and the
fleet's names replaced by stable pseudonyms, and the way back for the model's tool calls.

- Personal data: e-mail addresses, phone numbers, API tokens and other secrets (long hex or
  base64 strings, `mh_…`, `sk-…`), street addresses and IP addresses become `[email]`,
  `[phone]`, `[token]`, `[address]`, `[ip]`.
- Names: every device (its node id, name, aliases), group and scene name the hub knows
  becomes a pseudonym (`device-3fa2b1`, `group-…`, `scene-…`), an HMAC of the thing's key
  with the hub's SECRET_KEY: stable across requests (the model can be told "device-3fa2b1"
  today and tomorrow), meaningless outside the hub. Tool calls coming back carry
  pseudonyms; `back()` maps them to the real node ids and names before the tool runs, and
  tool results going out are scrubbed the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

from assistant.names import NameIndex, Thing

PII: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("[email]", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")),
    (
        "[token]",
        re.compile(r"\bmh_[A-Za-z0-9]+_[A-Za-z0-9_-]+|\b(?:sk|pk|rk|ghp|gho|xoxb|xoxp)[-_][A-Za-z0-9_-]{12,}|\b[A-Fa-f0-9]{32,}\b|\b[A-Za-z0-9+/]{40,}={0,2}"),
    ),
    ("[ip]", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")),
    ("[phone]", re.compile(r"(?<![\w-])\+?\d[\d ()./-]{6,}\d(?![\w-])")),
    (
        "[address]",
        re.compile(
            r"\b\d{1,5}[a-z]?\s+(?:[A-Za-zÄÖÜäöüß'.-]+\s+){0,3}(?:street|st|road|rd|avenue|ave|lane|ln|way|drive|dr|boulevard|blvd|court|ct|place|pl|square|sq|"
            r"strasse|straße|str|weg|gasse|allee|platz|rue|via|calle)\b\.?",
            re.IGNORECASE,
        ),
    ),
)


def scrub_pii(text: str) -> str:
    for marker, pattern in PII:
        text = pattern.sub(marker, text)
    return text


def pseudonym(thing: Thing, secret: str) -> str:
    digest = hmac.new(secret.encode(), f"{thing.kind}:{thing.key}".encode(), hashlib.sha256).hexdigest()[:6]
    return f"{thing.kind}-{digest}"


class Scrubber:
    def __init__(self, index: NameIndex, secret: str) -> None:
        index.refresh()
        self.to_pseudonym = {label: pseudonym(thing, secret) for label, thing in index.labels.items()}
        self.to_real = {pseudonym(thing, secret): thing.key for thing in index.labels.values()}
        labels = sorted(self.to_pseudonym, key=len, reverse=True)  # longest first: "greenhouse fan" before "greenhouse"
        self.names = re.compile(r"(?<![\w-])(" + "|".join(re.escape(label) for label in labels) + r")(?![\w-])", re.IGNORECASE) if labels else None
        self.pseudonyms = re.compile(r"\b(?:device|group|scene)-[0-9a-f]{6}\b")

    def out(self, text: str) -> str:
        """Text safe to send: names first (a node id must not be taken for a phone number)."""
        if self.names is not None:
            text = self.names.sub(lambda m: self.to_pseudonym.get(m.group(1).lower(), "[name]"), text)
        return scrub_pii(text)

    def out_json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.out(value)
        if isinstance(value, list):
            return [self.out_json(v) for v in value]
        if isinstance(value, dict):
            return {k: self.out_json(v) for k, v in value.items()}
        return value

    def back(self, value: Any) -> Any:
        """Pseudonyms in what the model sent back, as the real keys."""
        if isinstance(value, str):
            return self.pseudonyms.sub(lambda m: self.to_real.get(m.group(0), m.group(0)), value)
        if isinstance(value, list):
            return [self.back(v) for v in value]
        if isinstance(value, dict):
            return {k: self.back(v) for k, v in value.items()}
        return value


_built: dict[tuple[int, int, str], Scrubber] = {}


def scrubber_for(index: NameIndex, secret: str) -> Scrubber:
    """The Scrubber of the index's current names: built (one regular expression of every
    name) only when the names changed, not for every request to the cloud."""
    index.refresh()
    key = (id(index), index.version, secret)
    found = _built.get(key)
    if found is None:
        _built.clear()
        found = _built[key] = Scrubber(index, secret)
    return found
