"""Shape of findings in the model's input (triage.shape): nodules are blobs, vessels tubes, walls plates;
the reference bundle drops small findings that are not blobs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from triage.bundle import load_bundle
from triage.findings import Finding
from triage.shape import blobness, finding_blobness, keep_blobs, smooth
from triage.training.train import REFERENCE_BUNDLE

SIZE = 31
GRID = np.stack(np.meshgrid(*[np.arange(SIZE)] * 3, indexing="ij"), -1) - SIZE // 2
# A 2 mm grid with the x axis flipped and an offset, as the model's grid in LPS may be.
AFFINE = np.diag([-2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = (40.0, -20.0, 100.0)


def _centre_lps() -> tuple[float, float, float]:
    x, y, z = (AFFINE @ np.array([SIZE // 2] * 3 + [1.0]))[:3]
    return (float(x), float(y), float(z))


def _image(mask: np.ndarray, noise: float = 0.0) -> torch.Tensor:
    """Lung air (0.1) with a soft-tissue (0.75) object, smoothed a little like a scan; (1, X, Y, Z)."""
    generator = torch.Generator().manual_seed(1)
    image = torch.where(torch.from_numpy(mask), 0.75, 0.1) + noise * torch.randn(
        mask.shape, generator=generator
    )
    return smooth(image, 0.6)[None]


def _sphere(radius_voxels: float) -> np.ndarray:
    return (GRID**2).sum(-1) <= radius_voxels**2


def _tube(radius_voxels: float) -> np.ndarray:
    return (GRID[..., :2] ** 2).sum(-1) <= radius_voxels**2


def _wall() -> np.ndarray:
    return GRID[..., 0] >= 0


def test_blobness_tells_spheres_from_tubes_and_walls() -> None:
    centre = [SIZE // 2] * 3
    assert blobness(_image(_sphere(2.5)), centre, 2.5 / 3**0.5) > 0.8
    assert blobness(_image(_sphere(2.5), noise=0.02), centre, 2.5 / 3**0.5) > 0.6
    assert blobness(_image(_tube(1.5)), centre, 1.5 / 3**0.5) < 0.05
    assert blobness(_image(_wall()), [SIZE // 2 - 1, SIZE // 2, SIZE // 2], 1.0) == 0.0
    # A nodule on the wall (juxtapleural): flatter than an isolated one, still a blob.
    attached = _wall() | ((GRID - [-2, 0, 0]) ** 2).sum(-1) <= 9
    assert blobness(_image(attached), [SIZE // 2 - 3, SIZE // 2, SIZE // 2], 3 / 3**0.5) > 0.1


def test_keep_blobs_drops_small_tubes_only() -> None:
    small = Finding(_centre_lps(), 6.0, 0.99)
    large = Finding(_centre_lps(), 9.0, 0.99)
    on_sphere, on_tube = _image(_sphere(1.5)), _image(_tube(1.5))
    assert finding_blobness(small, on_sphere, AFFINE) > 0.5
    assert keep_blobs([small], on_sphere, AFFINE, 0.1, 8.0) == [small]
    assert keep_blobs([small], on_tube, AFFINE, 0.1, 8.0) == []
    assert keep_blobs([large, small], on_tube, AFFINE, 0.1, 8.0) == [large]  # 8 mm or more: kept
    assert keep_blobs([small], on_tube, AFFINE, 0.0, 8.0) == [small]


def test_smooth_keeps_constants_and_mass() -> None:
    assert smooth(torch.full((4, 5, 6), 0.3), 1.5) == pytest.approx(torch.full((4, 5, 6), 0.3))
    point = torch.zeros(15, 15, 15)
    point[7, 7, 7] = 1.0
    assert float(smooth(point, 1.0).sum()) == pytest.approx(1.0, abs=1e-5)


def test_reference_bundle_asks_for_the_shape_check() -> None:
    spec = load_bundle(REFERENCE_BUNDLE).spec
    assert spec.min_blobness > 0 and spec.blob_below_mm >= 6.0
