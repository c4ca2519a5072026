"""Erasure on withdrawal of consent (GDPR Art. 17), the local part: the patient's de-identified copies leave
every project and so every cohort; other patients' stay; the clinical record stays; an opt-out is recorded.
An opt-out alone erases nothing. The REST and CLI names: `/api/consent/erasures`, `imaging consent erase`;
the former `withdraw` (a revoked opt-out) still works and says what it is now."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from imaging import audit, consent
from imaging.cli import app as cli_app
from imaging.index.schema import Patient
from imaging.maintenance import fsck
from imaging.research.cohorts import manifest, save_cohort
from imaging.research.projects import create_project
from imaging.research.publication import publish_study
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.archive_fixtures import DB_BACKENDS
from tests.retention.conftest import Site, instance_count

KEY = bytes(range(32))


def _published(
    site: Site, patient: int, projects: tuple[str, ...] = ("lung", "onco")
) -> tuple[SyntheticStudy, str]:
    st = SyntheticStudy(patient=synthetic_patient(patient))
    for ds in ct_series(st, 3, rows=16, columns=16):
        site.archive.ingestor.ingest_dataset(ds)
    copies = []
    for project in projects:
        copies.append(publish_study(site.archive, project, str(st.StudyInstanceUID)).study_uid)
    return st, copies[0]


def _erasure_done(site: Site, request_id: int) -> bool:
    with site.archive.db.read() as s:
        return consent.erasure_status(s, request_id)["status"] == "done"


@pytest.mark.parametrize("db_url", DB_BACKENDS, indirect=True)
def test_withdrawal_erases_the_copies_in_every_project_and_cohort(db_url: str, site: Site) -> None:
    for project in ("lung", "onco"):
        create_project(site.archive, project, key=KEY)
        save_cohort(site.archive, project, "all-ct", {"Modality": "CT"})
    withdrawn, _ = _published(site, 1)
    _published(site, 2)  # stays
    assert instance_count(site.archive, "lung") == 6 and instance_count(site.archive, "onco") == 6
    opted_out_only, _ = _published(site, 3)
    with site.http() as http:
        assert (
            http.post(
                "/api/consent/opt-outs", json={"PatientID": opted_out_only.patient.PatientID}
            ).status_code
            == 201
        )
        answer = http.post("/api/consent/erasures", json={"PatientID": withdrawn.patient.PatientID})
        assert answer.status_code == 202
        request_id = answer.json()["id"]
        assert http.get(f"/api/consent/erasures/{request_id}").json()["status"] == "pending"
        site.drive(lambda: _erasure_done(site, request_id))
        status = http.get(f"/api/consent/erasures/{request_id}").json()
    steps = {s["step"]: s for s in status["steps"]}
    assert (
        steps["projects"]["status"] == "done"
        and "3 instances from project lung" in steps["projects"]["detail"]
    )
    assert steps["peers"]["detail"].endswith("nothing was shared")
    # the withdrawn patient's copies are gone from both projects and their cohorts; the others stay
    for project in ("lung", "onco"):
        assert instance_count(site.archive, project) == 6
        assert sum(s.count for s in manifest(site.archive, project, "all-ct").series) == 6
        with site.archive.db.read() as s:
            pseudonyms = set(s.scalars(select(Patient.PatientID).where(Patient.partition == project)))
        assert len(pseudonyms) == 2
    assert instance_count(site.archive, "clinical") == 9  # the clinical record is no secondary-use copy
    with site.archive.db.read() as s:
        assert consent.is_opted_out(s, withdrawn.patient.PatientID)  # and no future use either
        records = [r for r in audit.query(s, event=audit.AuditEvent.STUDY_DELETED) if r.source == "erased"]
    assert {r.partition for r in records} == {"lung", "onco"}
    assert all(f"erasure request {request_id}" in r.detail for r in records)
    assert fsck(site.archive).clean and fsck(site.archive).pending == 0


def test_cli_erase_status_and_the_former_withdraw(site: Site) -> None:
    create_project(site.archive, "lung", key=KEY)
    st, _ = _published(site, 5, ("lung",))
    data_dir = str(site.archive.settings.data_dir)
    run = CliRunner().invoke
    erased = run(cli_app, ["consent", "erase", st.patient.PatientID, "--data-dir", data_dir])
    assert erased.exit_code == 0, erased.output
    request_id = int(erased.stdout.strip().splitlines()[-1])
    site.drive(lambda: _erasure_done(site, request_id))
    shown = run(cli_app, ["consent", "status", str(request_id), "--data-dir", data_dir])
    assert shown.exit_code == 0 and '"status": "done"' in shown.output
    assert instance_count(site.archive, "lung") == 0
    # `withdraw` was the name of what is now `opt-in`: it takes an opt-out back and erases nothing
    old = run(cli_app, ["consent", "withdraw", st.patient.PatientID, "--data-dir", data_dir])
    assert old.exit_code == 0 and "consent opt-in" in old.output and "opt-out revoked" in old.output
    with site.archive.db.read() as s:
        assert not consent.is_opted_out(s, st.patient.PatientID)
    assert run(cli_app, ["consent", "status", "999", "--data-dir", data_dir]).exit_code == 1
