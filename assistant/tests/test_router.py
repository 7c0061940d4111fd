"""The router's pure policy and the PII scrubbing, alone: where a sentence may go, the
breaker's states (closed → open after N failures → half-open after the wait → closed on a
good probe, open again on a bad one), and what personal data looks like once scrubbed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from assistant import router
from assistant.scrub import scrub_pii

OPEN_S = 300.0


def route(
    about: bool, configured: set[str], breakers: dict[str, router.Breaker] | None = None, *, allowed: bool = False, now: float = 1000.0
) -> router.Decision:
    return router.route(about, configured, breakers or {}, now, cloud_for_devices=allowed, open_s=OPEN_S)


def test_text_about_the_fleet_stays_local_unless_the_operator_allows_the_cloud() -> None:
    assert route(True, {"local", "cloud"}).order == ("local",)
    assert "stays local" in route(True, {"local", "cloud"}).reason
    assert route(True, {"cloud"}).order == (), "only a cloud model, not allowed: nothing"
    assert route(True, {"local", "cloud"}, allowed=True).order == ("local", "cloud")
    assert route(False, {"local", "cloud"}).order == ("cloud", "local")
    assert route(False, {"local"}).order == ("local",) and "no cloud model configured" in route(False, {"local"}).reason


def test_three_failures_open_the_breaker_then_a_probe_decides() -> None:
    b = router.Breaker()
    for n in range(2):
        b = router.failed(b, 1000.0 + n, 3)
        assert router.state(b, 1000.0 + n, OPEN_S) == router.CLOSED
    b = router.failed(b, 1002.0, 3)
    assert router.state(b, 1003.0, OPEN_S) == router.OPEN
    decision = route(False, {"local"}, {"local": b}, now=1003.0)
    assert decision.order == () and "local breaker open" in decision.reason
    later = 1002.0 + OPEN_S + 1
    assert router.state(b, later, OPEN_S) == router.HALF_OPEN
    assert "half-open" in route(False, {"local"}, {"local": b}, now=later).reason
    probing = router.probing(b)
    assert router.state(probing, later, OPEN_S) == router.OPEN, "one probe at a time"
    assert router.state(router.failed(probing, later, 3), later + 1, OPEN_S) == router.OPEN, "a failed probe opens it again"
    assert router.state(router.succeeded(probing), later, OPEN_S) == router.CLOSED


@given(st.lists(st.booleans(), max_size=30))
def test_the_breaker_opens_exactly_after_the_threshold_of_consecutive_failures(outcomes: list[bool]) -> None:
    b, run = router.Breaker(), 0
    for t, ok in enumerate(outcomes):
        b = router.succeeded(b) if ok else router.failed(b, float(t), 3)
        run = 0 if ok else run + 1
        assert (b.opened_at is not None) == (run >= 3)


def test_what_counts_as_about_the_fleet() -> None:
    known = {"greenhouse", "kitchen light", "temperature"}
    assert router.about_fleet("how is the kitchen light doing", known)
    assert router.about_fleet("is it hot in the greenhouse", known)
    assert router.about_fleet("switch everything", known), "a verb that acts"
    assert not router.about_fleet("tell me a joke about cats", known)


def test_personal_data_is_scrubbed() -> None:
    text = "mail bob.smith@example.com or call +49 30 1234567, token mh_ab12cd_XyZsecret, key sk-abcdefghijklmnop1234, 12 Baker Street, host 10.0.0.7"
    assert scrub_pii(text) == "mail [email] or call [phone], token [token], key [token], [address], host [ip]"
