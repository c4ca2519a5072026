"""`imaging triage run` / `evaluate` through typer's test runner."""

from __future__ import annotations

import json
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from imaging.synthetic import SyntheticStudy, ct_series
from triage.cli import app, read_series


def write_series(folder: Path, datasets: list[Dataset]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n, ds in enumerate(datasets):
        ds.save_as(folder / f"{n:04d}.dcm", enforce_file_format=True)


def test_run_prints_findings_as_json_and_writes_sr_and_seg(
    nodule_series: list[Dataset], reference_bundle: Path, tmp_path: Path
) -> None:
    write_series(tmp_path / "in" / "chest", nodule_series)
    scout = list(ct_series(SyntheticStudy(), count=3, rows=16, columns=16, series_description="SCOUT"))
    write_series(tmp_path / "in" / "scout", scout)
    (tmp_path / "in" / "notes.txt").write_text("not DICOM")
    result = CliRunner().invoke(
        app,
        ["run", str(tmp_path / "in"), "--bundle", str(reference_bundle), "--output", str(tmp_path / "out")],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [series] = report["results"]
    assert series["SeriesInstanceUID"] == nodule_series[0].SeriesInstanceUID
    assert series["priority"] == "HIGH" and len(series["findings"]) == 3
    assert {"position_lps", "diameter_mm", "score"} <= set(series["findings"][0])
    [skipped] = report["skipped"]
    assert skipped["SeriesInstanceUID"] == scout[0].SeriesInstanceUID
    assert any("slices" in r for r in skipped["reasons"])
    written = [dcmread(f) for f in series["files"]]
    assert sorted(ds.Modality for ds in written) == ["SEG", "SR"]
    assert all(ds.StudyInstanceUID == nodule_series[0].StudyInstanceUID for ds in written)


def test_run_refuses_a_bundle_with_the_wrong_pin(reference_bundle: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["run", str(tmp_path), "--bundle", str(reference_bundle), "--sha256", "ab" * 32]
    )
    assert result.exit_code == 2
    assert "refusing to load" in result.output


def test_read_series_groups_files_by_series(tmp_path: Path) -> None:
    study = SyntheticStudy()
    write_series(tmp_path / "a", list(ct_series(study, count=2, rows=8, columns=8)))
    write_series(tmp_path / "b", list(ct_series(study, count=3, rows=8, columns=8, series_number=2)))
    grouped = read_series([tmp_path])
    assert sorted(len(v) for v in grouped.values()) == [2, 3]
