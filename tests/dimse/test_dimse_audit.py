"""The gateway's audit trail (issue 12, PS3.15 A.5): every DIMSE access to identified data is recorded with
the calling AE as the user, batched (one C-STORE record per association and study, never per instance),
with the names but never the values of C-FIND keys. Real clients: dcmtk's storescu, findscu, getscu,
movescu against a dcmtk storescp destination."""

from __future__ import annotations

import time

import pytest
from pydicom import dcmread
from sqlalchemy import select

from imaging.audit import AuditEvent, AuditRecord, Outcome
from imaging.config import RemoteAE
from imaging.dimse.server import Gateway
from tests.archive_fixtures import (
    ARCHIVE_AE,
    CLIENT_AE,
    free_port,
    part10,
    require_program,
    run,
    send_raw,
    storescp,
    write_synthetic_study,
)

pytestmark = pytest.mark.dcmtk


@pytest.fixture
def gateway(make_archive):
    dest_port = free_port()
    archive = make_archive(remote_aes=[RemoteAE(ae_title="DEST", host="127.0.0.1", port=dest_port)])
    gateway = Gateway(archive)
    port = gateway.start("127.0.0.1", 0)
    yield archive, gateway, port, dest_port
    gateway.stop()


def _records(archive, gateway, event: AuditEvent, count: int) -> list[AuditRecord]:
    """The records of `event`, once there are `count` of them (the association's end writes them)."""
    deadline = time.monotonic() + 10
    while True:
        gateway.audit.flush()
        with archive.db.read() as s:
            rows = list(
                s.scalars(
                    select(AuditRecord)
                    .where(AuditRecord.event_id == event.value)
                    .order_by(AuditRecord.audit_pk)
                )
            )
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def _dcmtk(program: str, port: int, *args: str) -> str:
    result = run([require_program(f"/usr/bin/{program}"), "-v", "-aet", CLIENT_AE, "-aec", ARCHIVE_AE, *args])
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_c_store_one_record_per_association_and_study(gateway, tmp_path):
    archive, gw, port, _ = gateway
    first = write_synthetic_study(tmp_path / "a", series=2, per_series=3, patient=1)
    second = write_synthetic_study(tmp_path / "b", series=1, per_series=2, patient=2)
    _dcmtk("storescu", port, "127.0.0.1", str(port), *map(str, first + second))
    rows = _records(archive, gw, AuditEvent.INSTANCES_TRANSFERRED, 2)
    studies = {str(dcmread(f[0], stop_before_pixels=True).StudyInstanceUID): len(f) for f in (first, second)}
    assert {r.StudyInstanceUID: r.detail for r in rows} == {
        uid: f"C-STORE received: {n} stored" for uid, n in studies.items()
    }
    for r in rows:
        assert (r.user, r.source, r.action, r.outcome) == (
            f"ae:{CLIENT_AE}",
            "127.0.0.1",
            "C",
            Outcome.SUCCESS,
        )
        assert r.partition == "clinical"
    # The same again, and one broken object, in a second association: duplicates and a refusal counted.
    broken = part10(dcmread(first[0]), tmp_path / "broken.dcm")
    broken.write_bytes(broken.read_bytes()[:-2000])
    statuses = send_raw(port, [broken, *second])  # pynetdicom: storescu would not send a broken file
    assert statuses[0] in range(0xC000, 0xD000) and statuses[1:] == [0, 0]
    rows = _records(archive, gw, AuditEvent.INSTANCES_TRANSFERRED, 4)
    assert len(rows) == 4
    later = {r.detail: r.outcome for r in rows[2:]}
    assert later == {
        "C-STORE received: 2 duplicate": Outcome.SUCCESS,
        "C-STORE refused: 1 with 0xC000": Outcome.MINOR_FAILURE,
    }


def test_c_find_is_a_query_record_without_values(gateway, tmp_path):
    archive, gw, port, _ = gateway
    files = write_synthetic_study(tmp_path / "a", series=1, per_series=1, patient=3)
    _dcmtk("storescu", port, "127.0.0.1", str(port), *map(str, files))
    ds = dcmread(files[0], stop_before_pixels=True)
    name, pid = str(ds.PatientName), str(ds.PatientID)
    _dcmtk(
        "findscu",
        port,
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"PatientName={name}",
        "-k",
        f"PatientID={pid}",
        "-k",
        "StudyInstanceUID",
        "127.0.0.1",
        str(port),
    )
    [row] = _records(archive, gw, AuditEvent.QUERY, 1)
    assert row.user == f"ae:{CLIENT_AE}" and row.action == "E" and row.partition == "clinical"
    assert row.detail == "C-FIND Study Root level=STUDY keys=PatientID,PatientName matches=1"
    assert name not in row.detail and pid not in row.detail


def test_c_get_and_c_move_begin_and_transferred_per_study(gateway, tmp_path):
    archive, gw, port, dest_port = gateway
    files = write_synthetic_study(tmp_path / "a", series=2, per_series=2, patient=4)
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    _dcmtk("storescu", port, "127.0.0.1", str(port), *map(str, files))
    out = tmp_path / "got"
    out.mkdir()
    keys = ["-S", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]
    _dcmtk("getscu", port, *keys, "-od", str(out), "127.0.0.1", str(port))
    with storescp(tmp_path / "moved", ae_title="DEST", port=dest_port):
        _dcmtk("movescu", port, *keys, "-aem", "DEST", "127.0.0.1", str(port))
    begun = _records(archive, gw, AuditEvent.BEGIN_TRANSFERRING, 2)
    done = [r for r in _records(archive, gw, AuditEvent.INSTANCES_TRANSFERRED, 3) if r.action == "R"]
    assert [(r.StudyInstanceUID, r.detail) for r in begun] == [
        (study, f"C-GET: 4 instances to {CLIENT_AE}@127.0.0.1"),
        (study, f"C-MOVE: 4 instances to DEST@127.0.0.1:{dest_port}"),
    ]
    assert [(r.detail, r.outcome) for r in done] == [
        (f"C-GET to {CLIENT_AE}@127.0.0.1: 4 sent, 0 failed", Outcome.SUCCESS),
        (f"C-MOVE to DEST@127.0.0.1:{dest_port}: 4 sent, 0 failed", Outcome.SUCCESS),
    ]
    assert {r.user for r in begun + done} == {f"ae:{CLIENT_AE}"}


def test_security_alerts_are_throttled(gateway):
    """Refusals are recorded, but a burst of the same refusal is one record per minute, with a count."""
    archive, gw, port, _ = gateway
    echoscu = require_program("/usr/bin/echoscu")
    for _ in range(5):
        assert run([echoscu, "-aet", CLIENT_AE, "-aec", "NOTSERVED", "127.0.0.1", str(port)]).returncode != 0
    gw.audit.close()  # writes how many were held back
    rows = _records(archive, gw, AuditEvent.SECURITY_ALERT, 2)
    assert [r.detail for r in rows] == [
        "called AE title not served",
        "called AE title not served (4 more refused)",
    ]
    assert {(r.user, r.source) for r in rows} == {(f"ae:{CLIENT_AE}", "127.0.0.1")}
