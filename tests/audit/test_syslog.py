"""The audit trail sent to a real syslog collector (rsyslog, tests/infra/syslog_collector.py) over TLS (RFC
5425) and UDP (RFC 5426); a collector that is stopped loses nothing: the index rows wait behind the
exporter's cursor and arrive, in order, once it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from imaging import audit
from imaging.archive import Archive
from imaging.audit.syslog import SyslogExporter, SyslogTransport
from imaging.cli.server import audit_exporter
from imaging.config import load_settings
from tests.infra.syslog_collector import SyslogCollector, syslog_collector

pytestmark = pytest.mark.syslog
__all__ = ["syslog_collector"]


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    a = Archive.open(load_settings(data_dir=tmp_path / "data"))
    yield a
    a.close()


def _add(archive: Archive, first: int, count: int) -> None:
    with archive.db.write() as s:
        for n in range(first, first + count):
            audit.record(
                s, audit.AuditEvent.QUERY, user=f"oidc:user{n}", action="E", detail=f"QIDO-RS studies #{n}"
            )


def _users(collector: SyslogCollector, count: int) -> list[str]:
    users = []
    for message in collector.wait_for_messages(count, timeout=30):
        xml = message.raw.split("\ufeff", 1)[1]
        users.append(ET.fromstring(xml).find("ActiveParticipant").get("UserID"))
    return users


def _exporter(archive: Archive, url: str, collector: SyslogCollector) -> SyslogExporter:
    transport = SyslogTransport(url, ca_file=collector.ca_cert_path)
    return SyslogExporter(
        archive.db.read, archive.db.write, transport, destination=url, poll_seconds=0.1, max_backoff=0.5
    ).start()


def test_tls_export_survives_a_stopped_collector(archive: Archive, syslog_collector: SyslogCollector) -> None:
    url = f"tls://127.0.0.1:{syslog_collector.tls_port}"
    exporter = _exporter(archive, url, syslog_collector)
    try:
        _add(archive, 0, 5)
        assert _users(syslog_collector, 5) == [f"oidc:user{n}" for n in range(5)]
        syslog_collector.stop()
        _add(archive, 5, 20)  # while the collector is down
        time.sleep(1.5)  # the exporter tries, fails, keeps its cursor
        assert exporter.cursor() == 5
        syslog_collector.start()
        _add(archive, 25, 5)
        users = _users(syslog_collector, 30)
        assert users == [f"oidc:user{n}" for n in range(30)]  # every record, once, in order
        assert all(m.transport == "tls" for m in syslog_collector.messages())
        deadline = time.monotonic() + 10
        while exporter.cursor() < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exporter.cursor() == 30
    finally:
        exporter.stop()


def test_udp_export(archive: Archive, syslog_collector: SyslogCollector) -> None:
    url = f"udp://127.0.0.1:{syslog_collector.udp_port}"
    exporter = _exporter(archive, url, syslog_collector)
    try:
        _add(archive, 0, 3)
        assert _users(syslog_collector, 3) == ["oidc:user0", "oidc:user1", "oidc:user2"]
        assert {m.transport for m in syslog_collector.messages()} == {"udp"}
        assert syslog_collector.messages()[0].raw.startswith("<85>1 ")
    finally:
        exporter.stop()


def test_a_collector_that_is_not_trusted_gets_nothing(
    archive: Archive, syslog_collector: SyslogCollector
) -> None:
    url = f"tls://127.0.0.1:{syslog_collector.tls_port}"
    stranger = SyslogTransport(url)  # the system trust store: the collector's test CA is not in it
    exporter = SyslogExporter(archive.db.read, archive.db.write, stranger, destination=url, poll_seconds=0.1)
    _add(archive, 0, 2)
    with pytest.raises(OSError):
        exporter.send_pending()
    assert exporter.cursor() == 0 and syslog_collector.messages() == []


def test_serve_starts_the_configured_export(tmp_path: Path, syslog_collector: SyslogCollector) -> None:
    settings = load_settings(
        data_dir=tmp_path / "served",
        audit_syslog_url=f"tls://127.0.0.1:{syslog_collector.tls_port}",
        audit_syslog_ca_file=syslog_collector.ca_cert_path,
        audit_source_id="SITE-A-ARCHIVE",
    )
    served = Archive.open(settings)
    exporter = audit_exporter(served)
    assert exporter is not None
    try:
        _add(served, 0, 1)
        (message,) = syslog_collector.wait_for_messages(1, timeout=30)
        xml = ET.fromstring(message.raw.split("\ufeff", 1)[1])
        assert xml.find("AuditSourceIdentification").get("AuditSourceID") == "SITE-A-ARCHIVE"
    finally:
        exporter.stop()
        served.close()
