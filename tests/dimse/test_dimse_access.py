"""DIMSE access control (issue 12): calling AEs listed with their hosts and services. dcmtk's tools as each AE:
a store-only modality cannot query or retrieve, a reader cannot store or move, C-GET is limited as C-MOVE
is, an unknown AE title or a listed one from another host is rejected, a host no AE uses is cut off before a
byte is read; every refusal is a Security Alert in the audit trail."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from imaging.audit import AuditEvent, AuditRecord
from imaging.config import CallingAE, DimseService, RemoteAE
from imaging.dimse.access import Peer
from imaging.dimse.retrieve_scp import handle_get
from imaging.dimse.server import Gateway
from imaging.index.schema import Instance
from tests.archive_fixtures import (
    ARCHIVE_AE,
    free_port,
    require_program,
    run,
    storescp,
    write_synthetic_study,
)

pytestmark = pytest.mark.dcmtk


@pytest.fixture
def listed(make_archive):
    """A gateway (not in dev mode) that lists four calling AEs."""
    dest_port = free_port()
    archive = make_archive(
        dev_mode=False,
        remote_aes=[RemoteAE(ae_title="DEST", host="127.0.0.1", port=dest_port)],
        calling_aes=[
            CallingAE(ae_title="STORER", hosts=["127.0.0.1"], permissions=["store"]),
            CallingAE(ae_title="READER", hosts=["127.0.0.0/8", "::1"], permissions=["find", "get"]),
            CallingAE(ae_title="MOVER", hosts=["127.0.0.1/32"], permissions=["move"]),
            CallingAE(ae_title="FAR", hosts=["10.20.30.40"], permissions=["store", "find", "get", "move"]),
        ],
    )
    gateway = Gateway(archive)
    port = gateway.start("127.0.0.1", 0)
    yield archive, gateway, port, dest_port
    gateway.stop()


def _count(archive) -> int:
    with archive.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Instance)) or 0)


def _alerts(archive, gateway, expect: str) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        gateway.audit.flush()
        with archive.db.read() as s:
            details = [
                f"{r.user} {r.detail}"
                for r in s.scalars(
                    select(AuditRecord).where(AuditRecord.event_id == AuditEvent.SECURITY_ALERT.value)
                )
            ]
        if any(expect in d for d in details) or time.monotonic() > deadline:
            return details
        time.sleep(0.1)


def _find(port: int, aet: str, study: str) -> str:
    result = run(
        [
            require_program("/usr/bin/findscu"),
            "-v",
            "-S",
            "-aet",
            aet,
            "-aec",
            ARCHIVE_AE,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(port),
        ]
    )
    return result.stdout + result.stderr + f"\nexit {result.returncode}"


def _get(port: int, aet: str, study: str, out) -> str:
    out.mkdir(exist_ok=True)
    result = run(
        [
            require_program("/usr/bin/getscu"),
            "-v",
            "-S",
            "-aet",
            aet,
            "-aec",
            ARCHIVE_AE,
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(port),
        ]
    )
    return result.stdout + result.stderr + f"\nexit {result.returncode}"


def _move(port: int, aet: str, study: str) -> str:
    result = run(
        [
            require_program("/usr/bin/movescu"),
            "-v",
            "-S",
            "-aet",
            aet,
            "-aec",
            ARCHIVE_AE,
            "-aem",
            "DEST",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(port),
        ]
    )
    return result.stdout + result.stderr + f"\nexit {result.returncode}"


def _store(port: int, aet: str, files) -> str:
    result = run(
        [require_program("/usr/bin/storescu"), "-v", "-aet", aet, "-aec", ARCHIVE_AE, "127.0.0.1", str(port)]
        + [str(f) for f in files]
    )
    return result.stdout + result.stderr + f"\nexit {result.returncode}"


def test_each_ae_has_its_services(listed, tmp_path):
    archive, _gateway, port, dest_port = listed
    files = write_synthetic_study(tmp_path / "study", series=1, per_series=3)
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)

    # STORER stores; it may not query or retrieve (its proposals of those contexts are rejected).
    assert _store(port, "STORER", files).count("(Success)") == 3
    assert _count(archive) == 3
    assert study not in _find(port, "STORER", study)
    assert "exit 0" not in _get(port, "STORER", study, tmp_path / "got-storer")
    assert not list((tmp_path / "got-storer").iterdir())

    # READER queries and retrieves with C-GET; it may not store, nor C-MOVE.
    more = write_synthetic_study(tmp_path / "more", series=1, per_series=1, patient=2)
    log = _store(port, "READER", more)
    assert "(Success)" not in log
    assert _count(archive) == 3
    assert study in _find(port, "READER", study)
    got = _get(port, "READER", study, tmp_path / "got-reader")
    assert "exit 0" in got, got
    assert len(list((tmp_path / "got-reader").iterdir())) == 3
    with storescp(tmp_path / "moved-reader", ae_title="DEST", port=dest_port):
        moved = _move(port, "READER", study)
    assert not list((tmp_path / "moved-reader").iterdir()), moved

    # MOVER moves to a configured destination, and nothing else.
    with storescp(tmp_path / "moved", ae_title="DEST", port=dest_port):
        moved = _move(port, "MOVER", study)
    assert len(list((tmp_path / "moved").iterdir())) == 3, moved
    assert study not in _find(port, "MOVER", study)
    assert "exit 0" not in _get(port, "MOVER", study, tmp_path / "got-mover")


def test_unknown_ae_and_wrong_host_are_rejected(listed, tmp_path):
    archive, gateway, port, _ = listed
    echoscu = require_program("/usr/bin/echoscu")
    unknown = run([echoscu, "-v", "-aet", "NOBODY", "-aec", ARCHIVE_AE, "127.0.0.1", str(port)])
    assert unknown.returncode != 0 and "Association Rejected" in unknown.stdout + unknown.stderr
    far = run([echoscu, "-v", "-aet", "FAR", "-aec", ARCHIVE_AE, "127.0.0.1", str(port)])
    assert far.returncode != 0 and "Association Rejected" in far.stdout + far.stderr
    files = write_synthetic_study(tmp_path / "study", series=1, per_series=1)
    assert "(Success)" not in _store(port, "FAR", files)
    assert _count(archive) == 0
    alerts = _alerts(archive, gateway, "not allowed from this host")
    assert "ae:NOBODY calling AE title not listed" in alerts
    assert any(a.startswith("ae:FAR calling AE title not allowed from this host") for a in alerts)
    ok = run([echoscu, "-aet", "STORER", "-aec", ARCHIVE_AE, "127.0.0.1", str(port)])
    assert ok.returncode == 0


def test_unlisted_host_is_cut_off_at_accept(make_archive):
    """No listed AE connects from 127.0.0.1: the gateway closes the connection without reading a byte."""
    archive = make_archive(
        dev_mode=False,
        calling_aes=[CallingAE(ae_title="FAR", hosts=["10.20.30.0/24"], permissions=["store"])],
    )
    gateway = Gateway(archive)
    port = gateway.start("127.0.0.1", 0)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.settimeout(5)
            assert sock.recv(1) == b""  # closed by the gateway, nothing said
        alerts = _alerts(archive, gateway, "connection from a host no calling AE uses")
        assert " connection from a host no calling AE uses" in alerts
    finally:
        gateway.stop()


def test_c_get_handler_refuses_without_the_service(make_archive):
    """Defence in depth behind the negotiation: the C-GET handler itself answers 0x0124 Not Authorized to an
    association whose caller may not retrieve with C-GET."""
    archive = make_archive(
        calling_aes=[CallingAE(ae_title="READER", hosts=["127.0.0.1"], permissions=["find"])], dev_mode=False
    )
    peer = Peer("READER", "127.0.0.1", None, frozenset({DimseService.FIND}))
    event = SimpleNamespace(
        assoc=SimpleNamespace(imaging_peer=peer, requestor=SimpleNamespace(ae_title="READER"))
    )
    assert list(handle_get(event, archive)) == [1, (0x0124, None)]  # type: ignore[arg-type]
