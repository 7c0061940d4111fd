"""A webhook's address as readers who may not change the rule see it (automation.disclosure)."""

from __future__ import annotations

import pytest

from automation.disclosure import masked_actions, masked_document, masked_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://ha.example.com:8123/api/webhook/greenhouse-s3cr3t", "https://ha.example.com:8123/…"),
        ("http://hooks.example.com/?token=abc", "http://hooks.example.com/…"),
        ("https://user:pa55@example.com/", "https://example.com/…"),
        ("https://example.com/#frag", "https://example.com/…"),
        ("http://[2001:db8::7]:8080/hook", "http://[2001:db8::7]:8080/…"),
        ("https://example.com", "https://example.com/"),
        ("https://example.com/", "https://example.com/"),
        ("http://example.com:99999/x", "…"),  # a port out of range: not a URL, nothing of it shown
    ],
)
def test_only_scheme_host_and_port_are_shown(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_every_webhook_of_a_document_is_masked_and_the_rest_kept() -> None:
    device = {"device": "relay-1", "capability": "on", "action": "set", "value": True}
    document = {"name": "n", "when": {}, "then": [device, {"delay_s": 5}, {"webhook": "https://h.example/s3cr3t", "body": {"a": 1}}]}
    assert masked_document(document)["then"] == [device, {"delay_s": 5}, {"webhook": "https://h.example/…", "body": {"a": 1}}]
    assert document["then"][2]["webhook"] == "https://h.example/s3cr3t", "the stored document is not touched"
    assert masked_actions(None) is None and masked_document("x") == "x"
