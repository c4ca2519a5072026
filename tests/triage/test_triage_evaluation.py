"""The held-out evaluation: FROC scoring, patient positions, and the command that writes the table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from triage.cli import app
from triage.training.evaluate import FP_RATES, ORIENTATIONS, froc, markdown, reorient


def test_froc_counts_each_nodule_once_and_caps_false_positives_per_scan() -> None:
    # (score, nodule key or None): over 8 scans one false positive is 0.125 per scan.
    candidates = [(0.9, 1), (0.8, None), (0.7, 1), (0.6, 2), (0.5, None), (0.4, 3), (0.3, None)]
    table = froc(candidates, total=4, scans=8)
    assert list(table) == [f"{r:g}" for r in FP_RATES]
    assert table["0.125"] == 0.5  # nodules 1 and 2 before the second false positive; 1 twice counts once
    assert table["0.25"] == 0.75  # nodule 3 comes before the third false positive
    assert table["8"] == 0.75  # nodule 4 is never found
    assert froc([(0.9, None)], total=2, scans=1) == dict.fromkeys(table, 0.0)


def test_the_table_names_each_missed_nodule_by_kind_size_and_density() -> None:
    report = {
        "scans": 2,
        "seeds": [50000, 50001],
        "nodules_ge_6mm": 2,
        "froc_sensitivity_at_fp_per_scan": {f"{r:g}": 0.5 for r in FP_RATES},
        "operating_point": {
            "sensitivity_ge_6mm": 0.5,
            "false_positives_per_scan": 0.0,
            "found_by_kind": {"isolated": {"found": 1, "of": 1}, "juxtapleural": {"found": 0, "of": 1}},
            "missed": [{"seed": 50001, "kind": "juxtapleural", "diameter_mm": 7.5, "hu": -40}],
        },
        "nodule_free_scans": 0,
        "nodule_free_scans_low": 0,
    }
    table = markdown(report)
    assert "| sensitivity | 0.500 | 0.500 |" in table
    assert "Found by kind (nodules >= 6 mm): isolated 1 of 1, juxtapleural 0 of 1." in table
    assert "Missed: juxtapleural 7.5 mm -40 HU (seed 50001)." in table


@pytest.mark.parametrize("position", ORIENTATIONS)
def test_reoriented_arrays_keep_every_voxel_at_its_patient_position(position: str) -> None:
    hu = np.random.default_rng(1).normal(size=(5, 6, 7)).astype(np.float32)
    affine = np.eye(4)
    affine[:3, :3] = np.diag([0.7, 0.7, 2.5])
    affine[:3, 3] = (-100.0, -90.0, 40.0)
    moved, moved_affine = reorient(hu, affine, position)
    inverse = np.linalg.inv(moved_affine)
    for index in np.ndindex(hu.shape):
        world = affine @ np.append(index, 1.0)
        i, j, k = np.rint((inverse @ world)[:3]).astype(int)
        assert moved[i, j, k] == hu[index]


@pytest.mark.slow
def test_evaluate_command_writes_the_froc_table_and_a_clear_scan_is_low(tmp_path: Path) -> None:
    output = tmp_path / "froc.json"
    result = CliRunner().invoke(app, ["evaluate", "--scans", "1", "--output", str(output)])
    assert result.exit_code == 0, result.output
    report = json.loads(output.read_text())
    assert set(report["froc_sensitivity_at_fp_per_scan"]) == {f"{r:g}" for r in FP_RATES}
    # The first held-out scan has no nodule: the reference bundle must call it LOW.
    assert report["nodule_free_scans"] == 1
    assert report["nodule_free_scans_low"] == 1
    assert report["per_scan"][0]["priority"] == "LOW"
    table = output.with_suffix(".md").read_text()
    assert "| FP / scan | 0.125 | 0.25 | 0.5 | 1 | 2 | 4 | 8 | mean |" in table
    assert "| FP / scan |" in result.output
