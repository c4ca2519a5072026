"""End to end: store, share with peers, reject, withdraw consent; at the end nothing is left anywhere.

Site A receives a study by C-STORE (dcmtk's storescu), publishes its de-identified copy to a research
project and shares that copy with three peers: site B (this archive, DICOMweb), site C (this archive, DIMSE)
and an Orthanc (REST). Then the modality rejects the study ("Data Retention Policy Expired", by C-STORE of a
rejection note) and the patient withdraws consent with erasure. What must hold at the end: site A holds no
instance and no object in any partition (clinical: rejected and purged; the project: erased), and every
peer confirmed the deletion — B by DICOMweb DELETE, Orthanc by REST DELETE, C by the rejection note A sent it
over DIMSE — and holds nothing either; the erasure request says so, step by step, and the audit trail of A
records each deletion as Study Deleted."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from sqlalchemy import select

from imaging import audit, consent
from imaging.index.rejection import RejectionTitle
from imaging.index.removal import PendingDeletion
from imaging.research.projects import create_project
from imaging.research.publication import publish_study
from imaging.sharing.models import OutboxRow
from imaging.sharing.outbox import share_study
from imaging.sharing.peers import add_peer
from tests.archive_fixtures import require_program, run
from tests.retention.conftest import Site, instance_count, rejection_note, study_files
from tests.sharing.conftest import ORTHANC_PASSWORD, ORTHANC_USER, OrthancServer

pytestmark = [pytest.mark.dcmtk, pytest.mark.orthanc, pytest.mark.slow]
PEERS = ("siteb", "sitec", "orthanc")


def _statuses(site: Site) -> dict[str, int]:
    with site.archive.db.read() as s:
        out: dict[str, int] = {}
        for status in s.scalars(select(OutboxRow.status)):
            out[status] = out.get(status, 0) + 1
        return out


def _nothing_left(site: Site) -> bool:
    return instance_count(site.archive) == 0 and not list(site.archive.store.keys())


def test_store_share_reject_withdraw_leaves_nothing_anywhere(
    make_site,
    orthanc: OrthancServer,
    tmp_path: Path,
) -> None:
    a = make_site("a", ae_title="SITEA")
    b = make_site("b", ae_title="SITEB")
    c = make_site("c", ae_title="SITEC")
    storescu = require_program("/usr/bin/storescu")

    # 1. a modality stores a study at A
    files = study_files(tmp_path / "study", patient=11, series=2, per_series=3)
    first = dcmread(files[0], stop_before_pixels=True)
    study, patient_id = str(first.StudyInstanceUID), str(first.PatientID)
    sent = run([storescu, "-aet", "MODALITY", "-aec", "SITEA", "127.0.0.1", str(a.port), *map(str, files)])
    assert sent.returncode == 0, sent.stderr
    a.drive(lambda: True)  # stability
    a.drive(lambda: True)

    # 2. its de-identified copy goes to a research project and to three peers
    create_project(a.archive, "net", key=bytes(range(32)))
    copy = publish_study(a.archive, "net", study)
    assert copy.published == 6
    add_peer(
        a.archive,
        "siteb",
        "dicomweb",
        url=b.server.root,
        auth="bearer",
        secret=b.tokens["admin"],
        timeout=10.0,
    )
    add_peer(a.archive, "sitec", "dimse", ae_title="SITEC", host="127.0.0.1", port=c.port, timeout=10.0)
    add_peer(
        a.archive,
        "orthanc",
        "orthanc",
        url=orthanc.url,
        auth="basic",
        username=ORTHANC_USER,
        secret=ORTHANC_PASSWORD,
    )
    share_study(a.archive, study, list(PEERS), project="net")
    a.drive(lambda: _statuses(a) == {"verified": 18})
    assert instance_count(b.archive) == 6 and instance_count(c.archive) == 6
    assert len(orthanc.instances_of(copy.study_uid)) == 6

    # 3. the modality rejects the study: hidden at once, purged (113039: no delay by default)
    note = tmp_path / "rejection.dcm"
    rejection_note(files, RejectionTitle.RETENTION_EXPIRED).save_as(note, enforce_file_format=True)
    rejected = run([storescu, "-v", "-aet", "MODALITY", "-aec", "SITEA", "127.0.0.1", str(a.port), str(note)])
    assert "Received Store Response (Success)" in rejected.stdout + rejected.stderr
    assert instance_count(a.archive, "clinical") == 0
    a.drive(lambda: instance_count(a.archive, "clinical") == 0 and not _pending(a))

    # 4. the patient withdraws consent with erasure
    with a.http() as http:
        request_id = http.post("/api/consent/erasures", json={"PatientID": patient_id}).json()["id"]

        def done() -> bool:
            return http.get(f"/api/consent/erasures/{request_id}").json()["status"] == "done"

        a.drive(done, timeout=120)
        status = http.get(f"/api/consent/erasures/{request_id}").json()
    steps = {s["step"]: s for s in status["steps"]}
    assert set(steps) == {"projects", "peers", *(f"peer:{p}" for p in PEERS)}
    for peer in PEERS:
        assert steps[f"peer:{peer}"]["detail"] == "peer confirmed 6 of 6 instances deleted"
    c.drive(lambda: _nothing_left(c))  # C purges what A's rejection note rejected there

    # 5. nothing is left anywhere
    for site in (a, b, c):
        assert _nothing_left(site), site.archive.settings.ae_title
    assert orthanc.get("/instances") == []
    assert _statuses(a) == {"erased": 18}
    with a.archive.db.read() as s:
        deleted = audit.query(s, event=audit.AuditEvent.STUDY_DELETED)
        assert consent.is_opted_out(s, patient_id)
    sources = {(r.source, r.partition) for r in deleted}
    assert ("rejected:113039", "clinical") in sources and ("erased", "net") in sources
    assert {f"peer:{p}" for p in PEERS} <= {r.source for r in deleted if r.outcome == "0"}
    for site in (b, c):  # the peers audited their own deletions
        with site.archive.db.read() as s:
            assert audit.query(s, event=audit.AuditEvent.STUDY_DELETED)
    httpx.get(orthanc.url + "/system", auth=(ORTHANC_USER, ORTHANC_PASSWORD)).raise_for_status()


def _pending(site: Site) -> bool:
    with site.archive.db.read() as s:
        return s.scalar(select(PendingDeletion.deletion_pk).limit(1)) is not None
