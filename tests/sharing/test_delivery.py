"""Delivery between two archives on loopback: site A's outbox sends de-identified copies to site B's DIMSE
gateway (C-STORE, verified with C-FIND). Peer down and back, lost answers, opt-outs, quarantine, audit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from imaging import audit, consent
from imaging.archive import Archive
from imaging.dimse.server import Gateway
from imaging.index.schema import Patient, Study
from imaging.ingest.partitions import deidentifier_for
from imaging.jobs.runner import JobRunner
from imaging.research.projects import create_project
from imaging.sharing import outbox
from imaging.sharing.models import OutboxRow
from imaging.sharing.peers import DimsePeer, PeerUnavailable, add_peer
from imaging.sharing.policies import add_policy
from tests.sharing.conftest import PROJECT_KEY, count_instances, drive, flag, free_port, ingest_study

PROJECT = "lung-share"


def statuses(archive: Archive, peer: str | None = None) -> dict[str, int]:
    with archive.db.read() as s:
        stmt = select(OutboxRow.status)
        if peer:
            stmt = stmt.where(OutboxRow.peer == peer)
        out: dict[str, int] = {}
        for status in s.scalars(stmt):
            out[status] = out.get(status, 0) + 1
        return out


def setup_sharing(site_a: Archive, port: int, **policy: Any) -> None:
    create_project(site_a, PROJECT, key=PROJECT_KEY)
    add_peer(site_a, "siteb", "dimse", ae_title="SITEB", host="127.0.0.1", port=port, timeout=5.0)
    policy.setdefault("priorities", ["HIGH"])
    add_policy(site_a, "flagged-ct", modalities=["CT"], peers=["siteb"], project=PROJECT, **policy)


def stable(runner: JobRunner) -> None:
    runner.tick()
    runner.tick()


def test_flagged_study_arrives_deidentified_and_verified(
    site_a: Archive, site_b: Archive, runner_a: JobRunner, start_gateway: Callable[[Archive], int]
) -> None:
    setup_sharing(site_a, start_gateway(site_b))
    study = ingest_study(site_a, 1)
    other = ingest_study(site_a, 2)
    stable(runner_a)
    assert statuses(site_a) == {}, "stable but not flagged: the HIGH-priority policy does not match"

    flag(site_a, study.StudyInstanceUID)
    drive(runner_a, lambda: statuses(site_a) == {"verified": 6})
    deid = deidentifier_for(site_a.db, site_a.settings.keys_path, PROJECT)
    peer_study = deid.uid_for(study.StudyInstanceUID)
    assert count_instances(site_b) == 6
    assert count_instances(site_b, study_uid=peer_study) == 6
    assert count_instances(site_b, study_uid=other.StudyInstanceUID) == 0
    with site_b.db.read() as s:
        patients = s.scalars(select(Patient)).all()
    assert [p.PatientID for p in patients] == [deid.pseudonym_for(study.patient.PatientID)]
    assert study.patient.PatientName not in {str(p.PatientName) for p in patients}

    # A second StudyStable (e.g. triage filed its SR) queues only what is new: nothing is sent twice.
    flag(site_a, study.StudyInstanceUID)
    stable(runner_a)
    assert statuses(site_a) == {"verified": 6}

    with site_a.db.read() as s:
        events = [r.event_id for r in audit.query(s, study_uid=peer_study)]
    assert events.count("110102") == 1 and events.count("110104") == 1 and events.count("110112") == 1
    with site_a.db.read() as s:
        transferred = audit.query(s, event=audit.AuditEvent.INSTANCES_TRANSFERRED)[0]
    assert transferred.outcome == "0" and transferred.patient_ref == deid.pseudonym_for(
        study.patient.PatientID
    )
    assert study.patient.PatientID not in transferred.detail


def test_peer_down_then_back_nothing_lost_nothing_duplicated(
    site_a: Archive, site_b: Archive, runner_a: JobRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    setup_sharing(site_a, port)
    study = ingest_study(site_a, 3, series=3, count=4)
    stable(runner_a)
    flag(site_a, study.StudyInstanceUID)

    sends: list[int] = []
    real_send = DimsePeer.send
    monkeypatch.setattr(DimsePeer, "send", lambda self, data: (sends.append(1), real_send(self, data))[1])
    drive(runner_a, lambda: any(r > 2 for r in _attempts(site_a)))  # a few rounds while the port is closed
    assert statuses(site_a) == {"pending": 12}
    assert len(sends) <= len(_attempts(site_a)) * 1 + 3, "a down peer stops the batch at the first failure"

    gateway = Gateway(site_b)
    gateway.start(host="127.0.0.1", port=port)
    try:
        sends.clear()
        drive(runner_a, lambda: statuses(site_a) == {"verified": 12})
    finally:
        gateway.stop()
    assert count_instances(site_b) == 12
    assert len(sends) == 12
    with site_a.db.read() as s:
        results = [r.outcome for r in audit.query(s, event=audit.AuditEvent.INSTANCES_TRANSFERRED)]
    assert results[-1] == "0" and "8" in results[:-1]  # failures recorded, then success


def _attempts(archive: Archive) -> list[int]:
    with archive.db.read() as s:
        return list(s.scalars(select(OutboxRow.attempts)))


def test_lost_answer_is_verified_not_resent(
    site_a: Archive,
    site_b: Archive,
    runner_a: JobRunner,
    start_gateway: Callable[[Archive], int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup_sharing(site_a, start_gateway(site_b))
    study = ingest_study(site_a, 4, series=1, count=4)
    stable(runner_a)
    sends: list[int] = []
    real_send = DimsePeer.send

    def send_then_lose_answer(self: DimsePeer, data: bytes) -> None:
        real_send(self, data)
        sends.append(1)
        if len(sends) <= 4:
            raise PeerUnavailable("answer lost")  # delivered, but we never heard back

    monkeypatch.setattr(DimsePeer, "send", send_then_lose_answer)
    flag(site_a, study.StudyInstanceUID)
    drive(runner_a, lambda: statuses(site_a) == {"verified": 4})
    assert count_instances(site_b) == 4
    assert len(sends) == 4, "instances already at the peer are found by C-FIND and not sent again"
    with site_a.db.read() as s:
        details = [r.detail for r in audit.query(s, event=audit.AuditEvent.QUERY)]
    assert any(d.startswith("check before resend") for d in details)


def test_opt_out_cancels_queued_deliveries_and_blocks_new_ones(
    site_a: Archive, site_b: Archive, runner_a: JobRunner
) -> None:
    port = free_port()
    setup_sharing(site_a, port)
    study = ingest_study(site_a, 5)
    stable(runner_a)
    flag(site_a, study.StudyInstanceUID)
    drive(runner_a, lambda: bool(_attempts(site_a)) and min(_attempts(site_a)) >= 1)  # queued, peer down
    assert statuses(site_a) == {"pending": 6}

    with site_a.db.write() as s:
        assert consent.opt_out(s, study.patient.PatientID, source="cli", user="admin")
    assert statuses(site_a) == {"cancelled": 6}

    gateway = Gateway(site_b)
    gateway.start(host="127.0.0.1", port=port)
    try:
        for _ in range(5):
            runner_a.tick()
        later = ingest_study(site_a, 5, StudyDescription="CT CHEST FOLLOW-UP")
        stable(runner_a)
        flag(site_a, later.StudyInstanceUID)
        for _ in range(3):
            runner_a.tick()
        with pytest.raises(outbox.NotShareable):
            outbox.share_study(site_a, later.StudyInstanceUID, ["siteb"], project=PROJECT, user="dr")
    finally:
        gateway.stop()
    assert count_instances(site_b) == 0
    assert statuses(site_a) == {"cancelled": 6}
    with site_a.db.read() as s:
        cancelled = [
            r for r in audit.query(s, event=audit.AuditEvent.INSTANCES_TRANSFERRED) if "cancelled" in r.detail
        ]
        consent_records = audit.query(s, event=audit.AuditEvent.PATIENT_RECORD)
    assert len(cancelled) == 1 and cancelled[0].user == "admin" and cancelled[0].action == "D"
    assert len(consent_records) == 1 and study.patient.PatientID not in consent_records[0].patient_ref


def test_opt_out_between_queueing_and_delivery_is_honoured(
    site_a: Archive, site_b: Archive, runner_a: JobRunner, start_gateway: Callable[[Archive], int]
) -> None:
    """An opt-out that reaches the registry without going through `consent.opt_out` (e.g. a restored
    registry) is still checked by the delivery job itself."""
    setup_sharing(site_a, start_gateway(site_b))
    study = ingest_study(site_a, 6)
    runner_a.tick()  # stable; rows are queued by the consumer on the priority event below
    flag(site_a, study.StudyInstanceUID)
    with site_a.db.write() as s:
        assert not s.scalars(select(OutboxRow)).all()
        s.add(consent.ConsentOptOut(PatientID=study.patient.PatientID, source="restore"))
    for _ in range(3):
        runner_a.tick()
    assert count_instances(site_b) == 0
    assert set(statuses(site_a)) <= {"cancelled"}


def test_quarantined_instance_is_never_sent(
    site_a: Archive, site_b: Archive, runner_a: JobRunner, start_gateway: Callable[[Archive], int]
) -> None:
    from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient

    setup_sharing(site_a, start_gateway(site_b))
    st = SyntheticStudy(patient=synthetic_patient(7))
    for i, ds in enumerate(ct_series(st, 3, rows=32, columns=32)):
        if i == 0:
            ds.BurnedInAnnotation = "YES"  # the project's profile has no Clean Pixel Data option
        site_a.ingestor.ingest_dataset(ds)
    stable(runner_a)
    flag(site_a, st.StudyInstanceUID)
    drive(runner_a, lambda: statuses(site_a) == {"verified": 2, "quarantined": 1})
    assert count_instances(site_b) == 2
    with site_a.db.read() as s:
        row = s.scalar(select(OutboxRow).where(OutboxRow.status == "quarantined"))
        assert row is not None and "burned-in" in row.last_error
        transferred = audit.query(s, event=audit.AuditEvent.INSTANCES_TRANSFERRED)[-1]
    assert transferred.outcome == "4" and "quarantined (never sent) 1" in transferred.detail


def test_manual_share_and_retry_of_failed_rows(
    site_a: Archive, site_b: Archive, runner_a: JobRunner, start_gateway: Callable[[Archive], int]
) -> None:
    port = free_port()
    setup_sharing(site_a, port)
    site_a.settings.share_max_attempts = 2
    study = ingest_study(site_a, 8, series=1, count=2, StudyDescription="MR BRAIN")
    stable(runner_a)
    with pytest.raises(ValueError):
        outbox.share_study(
            site_a, study.StudyInstanceUID, ["siteb"], user="dr"
        )  # neither project nor identified
    queued = outbox.share_study(site_a, study.StudyInstanceUID, ["siteb"], project=PROJECT, user="dr")
    assert queued == {"siteb": 2}
    drive(runner_a, lambda: statuses(site_a) == {"failed": 2})
    gateway = Gateway(site_b)
    gateway.start(host="127.0.0.1", port=port)
    try:
        with site_a.db.write() as s:
            assert outbox.retry(s, peer="siteb") == 2
        drive(runner_a, lambda: statuses(site_a) == {"verified": 2})
    finally:
        gateway.stop()
    assert count_instances(site_b) == 2
    with site_a.db.read() as s:
        summary = outbox.summary(s)
        groups = outbox.groups(s)
    assert summary == {"siteb": {"verified": 2}}
    assert groups[0].counts == {"verified": 2} and groups[0].StudyInstanceUID == study.StudyInstanceUID


def test_identified_policy_sends_stored_bytes(
    site_a: Archive, site_b: Archive, runner_a: JobRunner, start_gateway: Callable[[Archive], int]
) -> None:
    port = start_gateway(site_b)
    add_peer(site_a, "siteb", "dimse", ae_title="SITEB", host="127.0.0.1", port=port)
    add_policy(site_a, "transfer-of-care", description_regex=r"^ct\s+chest", peers=["siteb"], identified=True)
    study = ingest_study(site_a, 9, series=1, count=2)
    drive(runner_a, lambda: statuses(site_a) == {"verified": 2})
    with site_b.db.read() as s:
        received = s.scalar(select(Study).where(Study.StudyInstanceUID == study.StudyInstanceUID))
    assert received is not None and received.NumberOfStudyRelatedInstances in (0, 2)


def test_outbox_on_each_index_backend(db_url: str, site_a: Archive, tmp_path: Any) -> None:
    """The outbox, consumer and delivery job on SQLite and PostgreSQL (site A's index); site B stays on its
    own SQLite index."""
    from imaging.config import load_settings
    from imaging.sharing.delivery import register

    site_b = Archive.open(
        load_settings(None, data_dir=tmp_path / "b-own", dev_mode=True, min_free_bytes=0, ae_title="SITEB")
    )
    gateway = Gateway(site_b)
    port = gateway.start(host="127.0.0.1", port=0)
    try:
        runner = JobRunner(site_a)
        register(runner, site_a)
        setup_sharing(site_a, port)
        study = ingest_study(site_a, 21, series=1, count=3)
        queued = ingest_study(site_a, 22, series=1, count=2)
        stable(runner)
        flag(site_a, study.StudyInstanceUID)
        drive(runner, lambda: statuses(site_a) == {"verified": 3})
        with site_a.db.write() as s:
            consent.opt_out(s, queued.patient.PatientID)
        flag(site_a, queued.StudyInstanceUID)
        for _ in range(3):
            runner.tick()
        assert statuses(site_a) == {"verified": 3}
        assert count_instances(site_b) == 3
    finally:
        gateway.stop()
        site_b.close()
