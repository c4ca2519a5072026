"""Deleting a study, a series or an instance: dcm4chee-style DICOMweb DELETE, REST (/api/deletions) and the CLI
(`imaging delete`), administrators only, audited as Study Deleted; storage reclaimed at once; the index, the
metadata cache and the derived counts consistent; fsck clean; deliveries queued for what was deleted
cancelled. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select
from typer.testing import CliRunner

from imaging import audit
from imaging.cli import app as cli_app
from imaging.index.schema import Study
from imaging.maintenance import fsck
from imaging.research.projects import create_project
from imaging.sharing.models import OutboxRow
from imaging.sharing.outbox import share_study
from imaging.sharing.peers import add_peer
from tests.retention.conftest import Site, instance_count, references, study_files


def _ingest(site: Site, files: list[Path]) -> str:
    for f in files:
        site.archive.ingestor.ingest(f.read_bytes(), source="test")
    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


@pytest.mark.parametrize(
    "db_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_dicomweb_delete_instance_series_study(site: Site, tmp_path: Path, db_url: str) -> None:
    files = study_files(tmp_path / "study", series=2, per_series=3)
    other = study_files(tmp_path / "other", patient=2, series=1, per_series=2)
    study = _ingest(site, files)
    _ingest(site, other)
    refs = references(files)
    one, series_b = refs[0], refs[3].SeriesInstanceUID
    keys_before = set(site.archive.store.keys())
    with site.http("clinician") as http:
        assert http.delete(f"/dicomweb/studies/{study}").status_code == 403  # administrators only
    with site.http() as http:
        url = f"/dicomweb/studies/{study}/series/{one.SeriesInstanceUID}/instances/{one.SOPInstanceUID}"
        assert http.delete(url).status_code == 204
        assert http.delete(url).status_code == 404
        assert http.get(url).status_code == 404
        row = http.get("/dicomweb/studies", params={"StudyInstanceUID": study}).json()[0]
        assert row["00201208"]["Value"] == [5] and row["00201206"]["Value"] == [2]
        assert len(http.get(f"/dicomweb/studies/{study}/metadata").json()) == 5  # the metadata cache
        assert http.delete(f"/dicomweb/studies/{study}/series/{series_b}").status_code == 204
        row = http.get("/dicomweb/studies", params={"StudyInstanceUID": study}).json()[0]
        assert row["00201208"]["Value"] == [2] and row["00201206"]["Value"] == [1]
        assert http.delete(f"/dicomweb/studies/{study}").status_code == 204
        assert http.get("/dicomweb/studies", params={"StudyInstanceUID": study}).json() == []
        assert http.delete("/dicomweb/studies/1.2.3.999").status_code == 404
        assert http.delete("/dicomweb/studies/not-a-uid").status_code == 400
    assert instance_count(site.archive) == 2  # the other study is untouched
    assert len(set(site.archive.store.keys())) == len(keys_before) - 6  # storage reclaimed at once
    assert fsck(site.archive).clean
    with site.archive.db.read() as s:
        records = audit.query(s, event=audit.AuditEvent.STUDY_DELETED, study_uid=study)
        assert not s.scalar(select(Study.study_pk).where(Study.StudyInstanceUID == study))
    assert [r.detail for r in records] == [
        "1 instances removed: deleted",
        "3 instances removed: deleted",
        "2 instances removed: deleted",
    ]
    assert all(r.user.startswith("token:") and r.action == "D" for r in records)


def test_rest_and_cli_deletion_and_queued_deliveries_cancelled(site: Site, tmp_path: Path) -> None:
    files = study_files(tmp_path / "study", series=1, per_series=2)
    study = _ingest(site, files)
    add_peer(site.archive, "nowhere", "dicomweb", url="http://127.0.0.1:9/dicomweb")
    site.runner.tick()  # the study becomes stable (stability_seconds = 0)
    site.runner.tick()
    share_study(site.archive, study, ["nowhere"], identified=True)
    with site.http() as http:
        report = http.post(
            "/api/deletions",
            json={
                "StudyInstanceUID": study,
                "SeriesInstanceUID": references(files)[0].SeriesInstanceUID,
                "SOPInstanceUID": references(files)[0].SOPInstanceUID,
            },
        ).json()
    assert report["instances"] == 1 and report["objects_deleted"] == 1 and report["bytes"] > 0
    with site.archive.db.read() as s:
        statuses = {row.SOPInstanceUID: (row.status, row.last_error) for row in s.scalars(select(OutboxRow))}
    assert statuses[references(files)[0].SOPInstanceUID][0] == "cancelled"
    assert "removed here before delivery" in statuses[references(files)[0].SOPInstanceUID][1]

    data_dir = site.archive.settings.data_dir
    result = CliRunner().invoke(
        cli_app,
        ["delete", "study", study, "--yes", "--data-dir", str(data_dir)],
        env={"IMAGING_DEV_MODE": "true"},
    )
    assert result.exit_code == 0, result.output
    assert "deleted 1 instances of 1 studies" in result.output
    assert instance_count(site.archive) == 0 and list(site.archive.store.keys()) == []
    missing = CliRunner().invoke(cli_app, ["delete", "study", study, "--yes", "--data-dir", str(data_dir)])
    assert missing.exit_code == 1 and "no such study" in missing.output
    with site.archive.db.read() as s:
        users = {r.user for r in audit.query(s, event=audit.AuditEvent.STUDY_DELETED, study_uid=study)}
    assert "cli" in users and any(u.startswith("token:") for u in users) and len(users) == 2


def test_project_partition_deletion_through_its_root(site: Site, tmp_path: Path) -> None:
    create_project(site.archive, "lung")
    files = study_files(tmp_path / "study", series=1, per_series=2)
    for f in files:
        site.archive.ingestor.ingest(f.read_bytes(), partition="lung", source="test")
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    with site.http() as http:
        assert http.delete(f"/dicomweb/studies/{study}").status_code == 404  # not in the clinical partition
        assert http.delete(f"/projects/lung/dicomweb/studies/{study}").status_code == 204
    assert instance_count(site.archive, partition="lung") == 0
