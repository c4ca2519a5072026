"""`imaging import | reindex | fsck [--repair] | stats` through typer's CliRunner, on a temp data dir."""

from __future__ import annotations

import zipfile

from sqlalchemy import func, select
from typer.testing import CliRunner

from imaging.archive import Archive
from imaging.cli import app
from imaging.config import load_settings
from imaging.index.schema import Instance, Study
from tests.archive_fixtures import write_synthetic_study

runner = CliRunner()


def _count(data_dir) -> tuple[int, int]:
    archive = Archive.open(load_settings(data_dir=data_dir))
    try:
        with archive.db.read() as s:
            return (
                int(s.scalar(select(func.count()).select_from(Instance)) or 0),
                int(s.scalar(select(func.count()).select_from(Study)) or 0),
            )
    finally:
        archive.close()


def test_import_files_folders_zip_then_stats_reindex_fsck(tmp_path):
    data = tmp_path / "data"
    write_synthetic_study(tmp_path / "folder", series=2, per_series=2, patient=1)
    single = write_synthetic_study(tmp_path / "single", series=1, per_series=1, patient=2)
    zipped = write_synthetic_study(tmp_path / "zipped", series=1, per_series=3, patient=3)
    archive_zip = tmp_path / "study.zip"
    with zipfile.ZipFile(archive_zip, "w") as z:
        for p in zipped:
            z.write(p, f"DICOM/{p.name}")
        z.writestr("README.txt", "not dicom")
    (tmp_path / "folder" / "notes.txt").write_text("not dicom either")

    result = runner.invoke(
        app, ["import", str(tmp_path / "folder"), str(single[0]), str(archive_zip), "--data-dir", str(data)]
    )
    # Two non-DICOM files fail (exit 1), every DICOM file is stored.
    assert result.exit_code == 1, result.output
    assert "stored 8, duplicates 0, failed 2" in result.output
    assert _count(data) == (8, 3)

    again = runner.invoke(app, ["import", str(tmp_path / "folder"), "--data-dir", str(data)])
    assert "stored 0, duplicates 4, failed 1" in again.output

    stats = runner.invoke(app, ["stats", "--data-dir", str(data)])
    assert stats.exit_code == 0 and "clinical" in stats.output and "8" in stats.output

    clean = runner.invoke(app, ["fsck", "--data-dir", str(data)])
    assert clean.exit_code == 0 and "missing 0, corrupt 0, unindexed 0" in clean.output

    reindexed = runner.invoke(app, ["reindex", "--data-dir", str(data)])
    assert reindexed.exit_code == 0 and "indexed 8, unreadable 0" in reindexed.output
    assert _count(data) == (8, 3)

    # Corrupt one object: fsck fails, --repair quarantines it and fixes the index.
    objects = sorted(p for p in (data / "objects").rglob("*") if p.is_file())
    objects[0].write_bytes(b"bit rot")
    dirty = runner.invoke(app, ["fsck", "--data-dir", str(data)])
    assert dirty.exit_code == 1 and "corrupt 1" in dirty.output
    repaired = runner.invoke(app, ["fsck", "--repair", "--data-dir", str(data)])
    assert repaired.exit_code == 0 and "repaired 1" in repaired.output
    assert runner.invoke(app, ["fsck", "--data-dir", str(data)]).exit_code == 0
    assert _count(data)[0] == 7
    assert len(list((data / "quarantine").iterdir())) == 1
