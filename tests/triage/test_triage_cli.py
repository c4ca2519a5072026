"""`imaging triage run` / `evaluate` through typer's test runner."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from imaging.synthetic import SyntheticStudy, ct_series
from tests.triage.chest_series import ChestSeries
from tests.triage.conftest import planted_phantom
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
    assert series["priority"] == "HIGH"
    for nodule in planted_phantom().nodules:  # each planted nodule (6.5, 9, 12 mm) is reported
        assert any(math.dist(f["position_lps"], nodule.center_lps) < 5 for f in series["findings"])
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


def test_run_refuses_an_override_of_a_key_the_bundle_lacks(reference_bundle: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "run",
            str(tmp_path),
            "--bundle",
            str(reference_bundle),
            "--override",
            "no_such_section::overlap=0.5",
        ],
    )
    assert result.exit_code == 2
    assert "invalid triage settings" in result.output
    assert "Traceback" not in result.output


def test_read_series_groups_files_by_series(tmp_path: Path) -> None:
    study = SyntheticStudy()
    write_series(tmp_path / "a", list(ct_series(study, count=2, rows=8, columns=8)))
    write_series(tmp_path / "b", list(ct_series(study, count=3, rows=8, columns=8, series_number=2)))
    grouped = read_series([tmp_path])
    assert sorted(len(v) for v in grouped.values()) == [2, 3]


def test_failed_series_are_reported_with_reasons_and_the_exit_status(
    reference_bundle: Path, tmp_path: Path
) -> None:
    good = ChestSeries().datasets()
    gap = ChestSeries(seed=1).datasets()
    del gap[30:32]
    mixed = ChestSeries(seed=2).datasets()
    mixed[4].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    cut = ChestSeries(seed=3).datasets()
    cut[50].PixelData = cut[50].PixelData[:-1000]  # a file cut short in its pixel data
    write_series(tmp_path / "in" / "cut", cut)
    write_series(tmp_path / "in" / "good", good)
    write_series(tmp_path / "in" / "gap", gap)
    write_series(tmp_path / "in" / "mixed", mixed)
    truncated = tmp_path / "in" / "broken.dcm"
    truncated.write_bytes((tmp_path / "in" / "good" / "0000.dcm").read_bytes()[:700])
    result = CliRunner().invoke(app, ["run", str(tmp_path / "in"), "--bundle", str(reference_bundle)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    report = json.loads(result.stdout)
    by_uid = {r["SeriesInstanceUID"]: r for r in report["results"]}
    assert by_uid[good[0].SeriesInstanceUID]["status"] == "done"
    assert by_uid[gap[0].SeriesInstanceUID] == {
        "SeriesInstanceUID": gap[0].SeriesInstanceUID,
        "status": "failed",
        "error": by_uid[gap[0].SeriesInstanceUID]["error"],
    }
    assert by_uid[gap[0].SeriesInstanceUID]["error"].startswith("gap: 2 slice(s) missing")
    assert by_uid[mixed[0].SeriesInstanceUID]["error"].startswith("mixed orientations")
    assert "cannot be decoded" in by_uid[cut[0].SeriesInstanceUID]["error"]
    assert report["failed"] == 3
    assert [u.split(": ")[0] for u in report["unreadable"]] == [str(truncated)]


def test_all_good_series_exit_zero(reference_bundle: Path, tmp_path: Path) -> None:
    write_series(tmp_path / "in", ChestSeries(targets=()).datasets())
    result = CliRunner().invoke(app, ["run", str(tmp_path / "in"), "--bundle", str(reference_bundle)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(r["status"], r["priority"]) for r in report["results"]] == [("done", "LOW")]
    assert report["failed"] == 0 and report["unreadable"] == []
