"""Self-test of the rsyslog collector fixture: RFC 5424 messages sent by UDP (RFC 5426) and by TLS with
octet-counted framing (RFC 5425) come back byte for byte; a client certificate can be required; the
collector stops and restarts on the same ports."""

from __future__ import annotations

import datetime
import socket
import ssl
import time

import pytest

from tests.conftest import require_program
from tests.infra.syslog_collector import (
    RSYSLOGD,
    SyslogCollector,
    octet_counted,
    send_udp,
    syslog_collector,
)

pytestmark = pytest.mark.syslog

__all__ = ["syslog_collector"]  # the fixture, imported for the tests below


def rfc5424(msgid: str, text: str) -> bytes:
    """An RFC 5424 message: <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG (BOM + UTF-8)."""
    timestamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    header = f'<85>1 {timestamp} archive.test imaging 4242 {msgid} [origin ip="127.0.0.1"] '
    return header.encode() + b"\xef\xbb\xbf" + text.encode()


def send_tls(collector: SyslogCollector, messages: list[bytes], context: ssl.SSLContext) -> None:
    with (
        socket.create_connection(("127.0.0.1", collector.tls_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        tls.sendall(b"".join(octet_counted(m) for m in messages))


def test_udp_and_tls_messages_come_back_raw(syslog_collector: SyslogCollector) -> None:
    by_udp = rfc5424("UDP1", "audit over UDP: Grüße")
    # Audit messages are multi-line XML: TLS framing counts octets, so newlines stay in the message.
    by_tls = [
        rfc5424("TLS1", "<AuditMessage>\n  <EventIdentification/>\n</AuditMessage>"),
        rfc5424("TLS2", "x" * 20000),
    ]
    send_udp(syslog_collector.udp_port, by_udp)
    send_tls(syslog_collector, by_tls, syslog_collector.ca.client_context())
    received = syslog_collector.wait_for_messages(3)
    assert {(m.transport, m.raw.encode()) for m in received} == {
        ("udp", by_udp),
        ("tls", by_tls[0]),
        ("tls", by_tls[1]),
    }


def test_tls_client_must_trust_the_collector() -> None:
    require_program(RSYSLOGD)
    with SyslogCollector() as collector:
        stranger = ssl.create_default_context()  # system trust store: the test CA is not in it
        with pytest.raises(ssl.SSLCertVerificationError):
            send_tls(collector, [rfc5424("NOPE", "unverified")], stranger)


def test_required_client_certificate() -> None:
    require_program(RSYSLOGD)
    with SyslogCollector(require_client_cert=True) as collector:
        anonymous = rfc5424("ANON", "no client certificate")
        # With TLS 1.3 the client's handshake completes before the server checks its certificate: the
        # refusal shows as a closed connection (or an alert) when the client next reads.
        with (
            socket.create_connection(("127.0.0.1", collector.tls_port), timeout=5) as raw,
            collector.ca.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            try:
                tls.sendall(octet_counted(anonymous))
                assert tls.recv(1) == b""
            except (ssl.SSLError, ConnectionError):
                pass
        authenticated = rfc5424("CERT", "with a client certificate")
        send_tls(collector, [authenticated], collector.ca.client_context(collector.client_cert))
        time.sleep(0.5)  # time for the anonymous message to arrive, were it accepted
        assert [m.raw.encode() for m in collector.wait_for_messages(1)] == [authenticated]


def test_stop_and_restart_on_the_same_ports(syslog_collector: SyslogCollector) -> None:
    send_udp(syslog_collector.udp_port, rfc5424("BEFORE", "before the stop"))
    syslog_collector.wait_for_messages(1)
    syslog_collector.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", syslog_collector.tls_port), timeout=5)
    syslog_collector.start()
    send_tls(syslog_collector, [rfc5424("AFTER", "after the restart")], syslog_collector.ca.client_context())
    assert [m.raw.split()[5] for m in syslog_collector.wait_for_messages(2)] == ["BEFORE", "AFTER"]
