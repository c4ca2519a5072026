"""Site A shares a flagged study with two peers at once — site B (our archive, DIMSE) and an Orthanc (REST
API, basic auth) — and with Orthanc's DICOMweb plugin (STOW-RS/QIDO-RS). Every copy carries the same
pseudonyms because every peer receives the output of the same project key."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import select

from imaging import audit
from imaging.archive import Archive
from imaging.index.schema import Patient
from imaging.ingest.partitions import deidentifier_for
from imaging.jobs.runner import JobRunner
from imaging.research.projects import create_project
from imaging.sharing.models import OutboxRow
from imaging.sharing.peers import DicomwebPeer, OrthancPeer, PeerRejected, PeerUnavailable, add_peer, get_peer
from imaging.sharing.policies import add_policy
from tests.sharing.conftest import (
    ORTHANC_PASSWORD,
    ORTHANC_USER,
    PROJECT_KEY,
    OrthancServer,
    count_instances,
    drive,
    flag,
    ingest_study,
)

pytestmark = pytest.mark.orthanc


def _statuses(archive: Archive) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    with archive.db.read() as s:
        for peer, status in s.execute(select(OutboxRow.peer, OutboxRow.status)):
            out[(peer, status)] = out.get((peer, status), 0) + 1
    return out


def test_flagged_study_reaches_site_b_and_orthanc_with_identical_pseudonyms(
    site_a: Archive,
    site_b: Archive,
    runner_a: JobRunner,
    start_gateway: Callable[[Archive], int],
    orthanc: OrthancServer,
) -> None:
    create_project(site_a, "onco-net", key=PROJECT_KEY)
    add_peer(site_a, "siteb", "dimse", ae_title="SITEB", host="127.0.0.1", port=start_gateway(site_b))
    add_peer(
        site_a,
        "orthanc",
        "orthanc",
        url=orthanc.url,
        auth="basic",
        username=ORTHANC_USER,
        secret=ORTHANC_PASSWORD,
    )
    add_policy(
        site_a,
        "nodules",
        modalities=["CT"],
        body_parts=["CHEST"],
        priorities=["HIGH"],
        peers=["siteb", "orthanc"],
        project="onco-net",
    )
    study = ingest_study(site_a, 11, series=2, count=3)
    runner_a.tick()
    flag(site_a, study.StudyInstanceUID)
    drive(runner_a, lambda: _statuses(site_a) == {("siteb", "verified"): 6, ("orthanc", "verified"): 6})

    deid = deidentifier_for(site_a.db, site_a.settings.keys_path, "onco-net")
    peer_study = deid.uid_for(study.StudyInstanceUID)
    at_orthanc = orthanc.instances_of(peer_study)
    assert len(at_orthanc) == 6
    orthanc_patients = {
        orthanc.get(f"/instances/{i['ID']}/simplified-tags")["PatientID"] for i in at_orthanc[:2]
    }
    with site_b.db.read() as s:
        site_b_patients = {p.PatientID for p in s.scalars(select(Patient))}
    assert orthanc_patients == site_b_patients == {deid.pseudonym_for(study.patient.PatientID)}
    tags = orthanc.get(f"/instances/{at_orthanc[0]['ID']}/simplified-tags")
    assert tags["PatientName"] != study.patient.PatientName and tags["PatientIdentityRemoved"] == "YES"

    # Site B joins the project with the same key: its own pseudonyms for this patient match.
    create_project(site_b, "onco-net", key=PROJECT_KEY)
    assert (
        deidentifier_for(site_b.db, site_b.settings.keys_path, "onco-net").pseudonym_for(
            study.patient.PatientID
        )
        in site_b_patients
    )

    with site_a.db.read() as s:
        events = {(r.source, r.event_id) for r in audit.query(s, study_uid=peer_study)}
    for peer in ("peer:siteb", "peer:orthanc"):
        assert {(peer, "110102"), (peer, "110104"), (peer, "110112")} <= events


def test_dicomweb_peer_stow_and_qido(site_a: Archive, runner_a: JobRunner, orthanc: OrthancServer) -> None:
    create_project(site_a, "web-share", key=b"\x01" * 32)
    add_peer(
        site_a,
        "orthanc-web",
        "dicomweb",
        url=f"{orthanc.url}/dicom-web",
        auth="basic",
        username=ORTHANC_USER,
        secret=ORTHANC_PASSWORD,
    )
    add_policy(site_a, "all-ct", modalities=["CT"], peers=["orthanc-web"], project="web-share")
    study = ingest_study(site_a, 12, series=1, count=4)
    drive(runner_a, lambda: _statuses(site_a) == {("orthanc-web", "verified"): 4})
    peer_study = deidentifier_for(site_a.db, site_a.settings.keys_path, "web-share").uid_for(
        study.StudyInstanceUID
    )
    assert len(orthanc.instances_of(peer_study)) == 4

    # Sending again is idempotent at the peer, and QIDO sees exactly the four instances.
    with site_a.db.read() as s:
        peer = get_peer(s, "orthanc-web")
        uids = set(s.scalars(select(OutboxRow.peer_SOPInstanceUID)))
    client = DicomwebPeer(peer, ORTHANC_PASSWORD)
    assert client.verify(peer_study, uids | {"1.2.3.4"}) == uids
    wrong = DicomwebPeer(peer, "wrong-password")
    with pytest.raises(PeerRejected):
        wrong.verify(peer_study, uids)
    client.close()
    wrong.close()
    assert len(orthanc.instances_of(peer_study)) == 4


def test_orthanc_restarted_receives_everything_once(
    site_a: Archive, runner_a: JobRunner, orthanc: OrthancServer
) -> None:
    create_project(site_a, "restart", key=b"\x02" * 32)
    add_peer(
        site_a,
        "orthanc",
        "orthanc",
        url=orthanc.url,
        auth="basic",
        username=ORTHANC_USER,
        secret=ORTHANC_PASSWORD,
        timeout=5.0,
    )
    add_policy(site_a, "all-ct", modalities=["CT"], peers=["orthanc"], project="restart")
    orthanc.stop()
    try:
        study = ingest_study(site_a, 13, series=2, count=3)
        deadline = time.monotonic() + 30
        while not _statuses(site_a) or min(_attempts(site_a)) < 2:
            runner_a.tick()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _statuses(site_a) == {("orthanc", "pending"): 6}
        with site_a.db.read() as s:
            peer = get_peer(s, "orthanc")
        with pytest.raises(PeerUnavailable):
            OrthancPeer(peer, ORTHANC_PASSWORD).send(b"DICM")
    finally:
        orthanc.start()
    drive(runner_a, lambda: _statuses(site_a) == {("orthanc", "verified"): 6})
    peer_study = deidentifier_for(site_a.db, site_a.settings.keys_path, "restart").uid_for(
        study.StudyInstanceUID
    )
    assert len(orthanc.instances_of(peer_study)) == 6
    assert count_instances(site_a, partition="clinical") == 6


def _attempts(archive: Archive) -> list[int]:
    with archive.db.read() as s:
        return list(s.scalars(select(OutboxRow.attempts)))
