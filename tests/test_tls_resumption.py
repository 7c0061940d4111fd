"""No TLS session resumption on the mesh port, TLS 1.2 (session IDs) and TLS 1.3 (tickets):
a client that saves `SSLSocket.session` and offers it again is never served on it, and a
revoked device cannot come back through an old session."""

from __future__ import annotations

import json
import socket
import ssl
import struct
from pathlib import Path
from typing import Any

import pytest

from audit.models import AuditEvent
from audit.services import Actor
from devices import identity
from tests.mesh_helpers import wait_for
from tests.test_gateway import enroll_device, listeners  # noqa: F401  (fixture)

pytestmark = pytest.mark.django_db(transaction=True)


def client_context(state_dir: Path, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = context.maximum_version = version
    context.load_verify_locations(cafile=str(state_dir / "ca.pem"))
    context.load_cert_chain(str(state_dir / "cert.pem"), str(state_dir / "key.pem"))
    return context


def first_frame(sock: ssl.SSLSocket) -> dict[str, Any] | None:
    """The gateway's first frame, or None when it ended the connection instead."""
    try:
        header = sock.recv(4)
        while header and len(header) < 4:
            more = sock.recv(4 - len(header))
            if not more:
                return None
            header += more
        if len(header) < 4:
            return None
        (length,) = struct.unpack(">I", header)
        body = b""
        while len(body) < length:
            chunk = sock.recv(length - len(body))
            if not chunk:
                return None
            body += chunk
        return json.loads(body)
    except (ssl.SSLError, ConnectionResetError):
        return None


def connect(context: ssl.SSLContext, port: int, session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return context.wrap_socket(raw, server_hostname="127.0.0.1", session=session)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["tls1.2", "tls1.3"])
def test_it_never_serves_a_resumed_session_before_or_after_revocation(listeners: Any, tmp_path: Path, version: ssl.TLSVersion) -> None:  # noqa: F811
    state_dir = enroll_device(listeners, "sensor-1", tmp_path / "sensor-1")
    port = listeners[1].port
    context = client_context(state_dir, version)

    with connect(context, port) as first:
        assert first.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
        frame = first_frame(first)
        assert frame is not None and frame["type"] == "welcome", "a full handshake is served"
        saved = first.session  # what a client keeps to resume (a TLS 1.3 ticket would arrive by now)
        first.unwrap()  # a clean close_notify: OpenSSL drops a session from its cache after an abrupt end
    assert saved is not None

    # sensor-1 offers the saved session while its certificate is still good: never served on it.
    with connect(context, port, saved) as again:
        frame = first_frame(again)
        if again.session_reused:
            assert frame is None, f"the gateway served a resumed {version.name} session: {frame}"
            wait_for(lambda: AuditEvent.objects.filter(action="mesh.handshake", decision="deny", reason__contains="resumption refused").exists())
        else:
            assert frame is not None and frame["type"] == "welcome"

    identity.revoke_device(Actor("user", "alice"), "sensor-1", "stolen")
    wait_for(lambda: AuditEvent.objects.filter(action="device.revoke").exists())
    # mallory, holding the stolen key and the saved session, tries to come back.
    try:
        stolen = connect(context, port, saved)
    except (ssl.SSLError, ConnectionResetError):
        return  # refused at the handshake: the reloaded CRL, and a new context without the old session
    with stolen:
        frame = first_frame(stolen)
        assert frame is None or frame["type"] != "welcome", f"a revoked device was served: {frame}"
