"""What of a rule those who may not change it are shown: a webhook's address without the
parts that are commonly its secret.

A webhook URL often carries its own credential: a Home Assistant webhook id in the path, a
token in the query, a password in the userinfo. Anyone who can call it can trigger what it
triggers. Readers of the fleet (scope `read-status`) see rules and their runs, so they get
`scheme://host[:port]/…`; those with scope `command` (who may edit the rule anyway) get
the document as written. Summaries shown to every reader (a run's actions line on the pages
and in live events) are always masked.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

HIDDEN = "…"


def masked_url(url: str) -> str:
    """`url` with scheme, host and port only; what followed is shown as "…"."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # not a URL the hub would have saved; show nothing of it
        return HIDDEN
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    more = parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc
    return f"{parts.scheme}://{netloc}/{HIDDEN if more else ''}"


def masked_actions(actions: Any) -> Any:
    """A rule's `then` or a run's action entries, each webhook's address masked."""
    if not isinstance(actions, list):
        return actions
    return [{**a, "webhook": masked_url(a["webhook"])} if isinstance(a, dict) and isinstance(a.get("webhook"), str) else a for a in actions]


def masked_document(document: Any) -> Any:
    if not isinstance(document, dict):
        return document
    return {**document, "then": masked_actions(document.get("then"))} if "then" in document else document
