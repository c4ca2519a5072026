"""Output adapters (probability map and boxes -> findings) and the priority rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from triage.findings import Finding, findings_from_boxes, findings_from_probability, label_components
from triage.priority import Priority, priority_of

AFFINE = np.array([[2.0, 0, 0, -100], [0, 2.0, 0, -50], [0, 0, 2.0, 10], [0, 0, 0, 1]])


def sphere(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> torch.Tensor:
    grid = torch.stack(torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in shape), indexing="ij"))
    return ((grid - torch.tensor(centre)[:, None, None, None]) ** 2).sum(0) <= radius**2


def test_label_components_separates_touching_diagonals_from_distant_blobs() -> None:
    mask = torch.zeros(20, 20, 20, dtype=torch.bool)
    mask[1, 1, 1] = mask[2, 2, 2] = True  # diagonal neighbours: one component (26-connectivity)
    mask[10:13, 5, 5] = True
    mask[5:18, 15, 15] = True  # a long one
    labels, count = label_components(mask)
    assert count == 3
    assert labels[1, 1, 1] == labels[2, 2, 2] != 0
    assert sorted(int((labels == n).sum()) for n in range(1, 4)) == [2, 3, 13]
    assert int(labels[~mask].abs().sum()) == 0


def test_probability_map_gives_centroid_diameter_and_score() -> None:
    probability = torch.zeros(40, 40, 40)
    probability[sphere((40, 40, 40), (10, 12, 14), 3.0)] = 0.9  # radius 6 mm at 2 mm voxels
    probability[sphere((40, 40, 40), (30, 28, 26), 1.5)] = 0.55
    findings = findings_from_probability(probability, AFFINE, threshold=0.5, min_score=0.5)
    assert [round(f.score, 2) for f in findings] == [0.9, 0.55]  # highest score first
    big = findings[0]
    assert big.position_lps == pytest.approx((-80.0, -26.0, 38.0), abs=1e-4)
    voxels = int(sphere((40, 40, 40), (10, 12, 14), 3.0).sum())
    assert big.volume_mm3 == pytest.approx(0.9 * voxels * 8, rel=1e-4)
    assert big.diameter_mm == pytest.approx((6 * big.volume_mm3 / math.pi) ** (1 / 3))
    # Score and size floors drop findings.
    assert len(findings_from_probability(probability, AFFINE, min_score=0.6)) == 1
    assert len(findings_from_probability(probability, AFFINE, min_score=0.0, min_diameter_mm=8)) == 1


def test_empty_probability_map_has_no_findings() -> None:
    assert findings_from_probability(torch.full((16, 16, 16), 0.49), AFFINE) == []


def test_boxes_become_findings_in_lps() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.0, 14.0, 24.0, 34.0], [0, 0, 0, 1, 1, 1]])
    scores = torch.tensor([0.8, 0.1])
    findings = findings_from_boxes(boxes, scores, AFFINE, min_score=0.5)
    assert len(findings) == 1
    f = findings[0]
    assert f.position_lps == pytest.approx((-76.0, -6.0, 74.0))
    assert f.diameter_mm == pytest.approx(8.0)  # 4 voxels of 2 mm each way
    assert f.volume_mm3 == pytest.approx(math.pi / 6 * 512)


@pytest.mark.parametrize(
    ("box", "mode", "frame", "expected"),
    [
        ([10.0, -20.0, 30.0, 6.0, 8.0, 4.0], "cccwhd", "lps", (10.0, -20.0, 30.0)),
        ([10.0, -20.0, 30.0, 6.0, 8.0, 4.0], "cccwhd", "ras", (-10.0, 20.0, 30.0)),
        ([7.0, 13.0, -24.0, -16.0, 28.0, 32.0], "xxyyzz", "lps", (10.0, -20.0, 30.0)),
    ],
)
def test_world_boxes_in_any_mode_become_findings(
    box: list[float], mode: str, frame: str, expected: tuple[float, float, float]
) -> None:
    [finding] = findings_from_boxes(torch.tensor([box]), torch.tensor([0.9]), AFFINE, mode=mode, frame=frame)
    assert finding.position_lps == pytest.approx(expected)
    assert finding.diameter_mm == pytest.approx((6.0 * 8.0 * 4.0) ** (1 / 3))  # world extents, not voxels


@pytest.mark.parametrize(
    ("diameters", "expected"),
    [([], Priority.LOW), ([4.0, 5.9], Priority.LOW), ([6.0], Priority.MEDIUM), ([5.0, 8.0], Priority.HIGH)],
)
def test_priority_rule(diameters: list[float], expected: Priority) -> None:
    findings = [Finding((0.0, 0.0, 0.0), d, 0.9) for d in diameters]
    assert priority_of(findings) is expected
    assert str(expected) == expected.name
