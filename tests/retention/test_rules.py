"""Retention rules per partition: by age since receipt, since the last read, by modality; a preview of what a
rule would delete; applied by the durable daily job and on demand (REST, CLI); audited as Study Deleted."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from imaging import audit
from imaging.cli import app as cli_app
from imaging.errors import InvalidRequest
from imaging.index.schema import Instance, Job, Series, Study, utcnow
from imaging.maintenance import fsck
from imaging.retention import rules
from imaging.retention.schedule import APPLY, PURGE, schedule_purge
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.archive_fixtures import DB_BACKENDS
from tests.retention.conftest import Site, instance_count


def _study(site: Site, patient: int, modality: str, days_old: float) -> str:
    st = SyntheticStudy(patient=synthetic_patient(patient))
    for ds in ct_series(st, 2, rows=16, columns=16, modality=modality):
        site.archive.ingestor.ingest_dataset(ds)
    uid = str(st.StudyInstanceUID)

    def age(session) -> None:
        series = select(Series.series_pk).join(Study).where(Study.StudyInstanceUID == uid)
        session.execute(
            update(Instance)
            .where(Instance.series_pk.in_(series))
            .values(received_at=utcnow() - dt.timedelta(days=days_old))
        )

    site.archive.db.transaction(age)
    return uid


def test_a_rule_needs_an_age_and_a_valid_name(site: Site) -> None:
    with pytest.raises(InvalidRequest):
        rules.set_rule(site.archive, "ct-only", modalities=["CT"])
    with pytest.raises(InvalidRequest):
        rules.set_rule(site.archive, "Bad Name", received_days=1)
    with site.http() as http:
        assert http.put("/api/retention/rules/x", json={"partition": "clinical"}).status_code == 400
        assert http.get("/api/retention/rules/nope/preview").status_code == 404
    with site.http("clinician") as http:
        assert http.get("/api/retention/rules").status_code == 403


@pytest.mark.parametrize("db_url", DB_BACKENDS, indirect=True)
def test_preview_then_run_by_age_and_modality(db_url: str, site: Site) -> None:
    old_ct = _study(site, 1, "CT", 400)
    old_mr = _study(site, 2, "MR", 400)
    new_ct = _study(site, 3, "CT", 10)
    with site.http() as http:
        put = http.put("/api/retention/rules/ct-1y", json={"modalities": ["ct"], "received_days": 365})
        assert put.status_code == 200 and put.json()["modalities"] == ["CT"]
        preview = http.get("/api/retention/rules/ct-1y/preview").json()
        assert [c["StudyInstanceUID"] for c in preview["candidates"]] == [old_ct]
        assert preview["studies"] == 1 and preview["instances"] == 2 and preview["bytes"] > 0
        assert instance_count(site.archive) == 6  # a preview deletes nothing
        done = http.post("/api/retention/rules/ct-1y/run").json()
    assert done["studies"] == 1 and [c["StudyInstanceUID"] for c in done["candidates"]] == [old_ct]
    assert instance_count(site.archive, study=old_ct) == 0
    assert instance_count(site.archive, study=old_mr) == 2 and instance_count(site.archive, study=new_ct) == 2
    assert fsck(site.archive).clean and len(list(site.archive.store.keys())) == 4
    with site.archive.db.read() as s:
        record = audit.query(s, event=audit.AuditEvent.STUDY_DELETED, study_uid=old_ct)[0]
    assert record.source == "retention:ct-1y" and record.user.startswith("token:")
    assert "received more than 365 days ago" in record.detail


def test_last_access_keeps_a_study_someone_reads(site: Site) -> None:
    read = _study(site, 1, "CT", 100)
    unread = _study(site, 2, "CT", 100)
    with site.http("clinician") as http:
        assert http.get(f"/dicomweb/studies/{read}/metadata").status_code == 200  # a viewer opens it
    rules.set_rule(site.archive, "unread-90d", accessed_days=90)
    found = rules.preview(site.archive, "unread-90d")
    assert [c.StudyInstanceUID for c in found.candidates] == [unread]
    assert found.candidates[0].last_accessed == ""


def test_the_daily_job_runs_the_rule_and_schedules_the_next_run(site: Site) -> None:
    old = _study(site, 1, "CT", 40)
    keep = _study(site, 2, "CT", 1)
    rules.set_rule(site.archive, "month", received_days=30)
    with site.archive.db.read() as s:
        jobs = s.scalars(select(Job).where(Job.kind == APPLY)).all()
    assert len(jobs) == 1 and jobs[0].status == "pending" and jobs[0].next_attempt_at > utcnow()
    site.runner.tick()
    assert instance_count(site.archive, study=old) == 2  # not before its hour

    def due_now(session) -> None:
        session.execute(update(Job).where(Job.kind == APPLY).values(next_attempt_at=utcnow()))

    site.archive.db.transaction(due_now)
    site.drive(lambda: instance_count(site.archive, study=old) == 0)
    assert instance_count(site.archive, study=keep) == 2
    with site.archive.db.read() as s:
        jobs = s.scalars(select(Job).where(Job.kind == APPLY).order_by(Job.job_pk)).all()
        rule = rules.get_rule(s, "month")
    assert [j.status for j in jobs] == ["done", "pending"] and jobs[1].next_attempt_at > utcnow()
    assert rule.last_run_at is not None
    with site.archive.db.read() as s:
        assert (
            audit.query(s, event=audit.AuditEvent.STUDY_DELETED, study_uid=old)[0].user == "retention:month"
        )


def test_cli_rules(site: Site) -> None:
    old = _study(site, 1, "MR", 20)
    data_dir = str(site.archive.settings.data_dir)
    run = CliRunner().invoke
    assert (
        run(
            cli_app,
            [
                "retention",
                "rule",
                "set",
                "mr",
                "--modality",
                "MR",
                "--received-days",
                "7",
                "--data-dir",
                data_dir,
            ],
        ).exit_code
        == 0
    )
    listing = run(cli_app, ["retention", "rule", "list", "--data-dir", data_dir])
    assert listing.exit_code == 0 and "mr" in listing.output
    preview = run(cli_app, ["retention", "preview", "mr", "--data-dir", data_dir])
    assert json.loads(preview.output)["candidates"][0]["StudyInstanceUID"] == old
    ran = run(cli_app, ["retention", "run", "mr", "--yes", "--data-dir", data_dir])
    assert ran.exit_code == 0 and json.loads(ran.output)["studies"] == 1
    assert instance_count(site.archive) == 0
    assert run(cli_app, ["retention", "rule", "remove", "mr", "--data-dir", data_dir]).exit_code == 0
    assert run(cli_app, ["retention", "preview", "mr", "--data-dir", data_dir]).exit_code == 1


def test_a_purge_asked_again_within_the_same_second_runs_again(site: Site) -> None:
    """The purge job's key has one-second resolution: a second request within that second (same key) must
    not be swallowed by the first, finished, job."""
    moment = utcnow().replace(microsecond=0)
    site.archive.db.transaction(lambda s: schedule_purge(s, moment))
    site.runner.tick()
    with site.archive.db.read() as s:
        job = s.scalars(select(Job).where(Job.kind == PURGE, Job.key == f"purge@{moment.isoformat()}")).one()
        assert job.status == "done"
    site.archive.db.transaction(lambda s: schedule_purge(s, moment))
    with site.archive.db.read() as s:
        job = s.scalars(select(Job).where(Job.kind == PURGE, Job.key == f"purge@{moment.isoformat()}")).one()
        assert job.status == "pending" and job.attempts == 0
    site.runner.tick()
    with site.archive.db.read() as s:
        assert s.scalars(select(Job.status).where(Job.kind == PURGE)).all() == ["done"]
