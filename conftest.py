"""Fixtures shared by every test: named actors, their tokens, an API client, a clean Redis DB."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client
from rest_framework.test import APIClient

from hub.models import ApiToken


def pytest_configure(config: Any) -> None:
    # Users in tests log in with throwaway passwords; 1M PBKDF2 rounds per user would
    # dominate the suite. Enrollment codes name their hasher explicitly and stay PBKDF2.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher", "django.contrib.auth.hashers.PBKDF2PasswordHasher"]


@pytest.fixture(scope="session", autouse=True)
def _clean_redis_db() -> Iterator[None]:
    """Production runs use their own Redis DB number; flush only that one, before and after."""
    url = os.environ.get("REDIS_URL")
    if not url:
        yield
        return
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    yield
    client.flushdb()


@pytest.fixture(autouse=True)
def _fresh_channel_layers() -> None:
    from channels.layers import channel_layers

    channel_layers.backends.clear()


def make_token_client(user: Any, scopes: list[str]) -> tuple[APIClient, str]:
    _, plaintext = ApiToken.issue(user, scopes)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {plaintext}")
    return client, plaintext


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    """An operator whose script token may read and command."""
    return django_user_model.objects.create_user("alice", password="alice-Pass-123")


@pytest.fixture
def bob(django_user_model: Any) -> Any:
    """A read-only user."""
    return django_user_model.objects.create_user("bob", password="bob-Pass-123")


@pytest.fixture
def alice_api(alice: Any) -> APIClient:
    return make_token_client(alice, ["read-status", "command"])[0]


@pytest.fixture
def bob_api(bob: Any) -> APIClient:
    return make_token_client(bob, ["read-status"])[0]


@pytest.fixture
def admin_api(django_user_model: Any) -> APIClient:
    root = django_user_model.objects.create_superuser("root", password="root-Pass-123")
    return make_token_client(root, ["read-status", "command", "reset", "ota", "admin"])[0]


@pytest.fixture
def mallory_api() -> APIClient:
    """An attacker with a made-up token of the right shape."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token mh_0badc0ffee00_notarealsecretnotarealsecretnotarealse")
    return client


@pytest.fixture
def embedded() -> bool:
    return bool(settings.EMBEDDED)


# Signed-in page clients (Django test client with a session), one per role.


def client_for(user: Any, role: str) -> Any:
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice_web(alice: Any) -> Any:
    return client_for(alice, "operator")


@pytest.fixture
def bob_web(bob: Any) -> Any:
    return client_for(bob, "viewer")


@pytest.fixture
def root(django_user_model: Any) -> Any:
    return django_user_model.objects.create_superuser("root", password="root-Pass-123")


@pytest.fixture
def root_web(root: Any) -> Any:
    client = Client()
    client.force_login(root)
    return client
