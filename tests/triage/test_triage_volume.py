"""Volume geometry: slice order, HU rescale, LPS affine, and the model grid keep a planted nodule's
patient position."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from pydicom.dataset import Dataset

from imaging.synthetic import SyntheticStudy, ct_series
from triage.bundle import load_bundle
from triage.findings import findings_from_probability
from triage.training.train import REFERENCE_BUNDLE
from triage.transforms import AreaSpacing
from triage.volume import LPS_TO_RAS, VolumeError, build_volume

ROWS, COLUMNS, COUNT, THICKNESS = 64, 48, 30, 2.0
NODULE_INDEX = (30, 20, 11)  # (column, row, instance index) of the planted bright voxel block


def planted(feet_first_flipped: bool = False) -> list[Dataset]:
    """Air with a 3x3x3 block of +1000 HU centred on NODULE_INDEX; optionally with the patient axes
    flipped (IOP -1,0,0,0,-1,0) to exercise orientation handling."""
    datasets = []
    for i, ds in enumerate(
        ct_series(SyntheticStudy(), count=COUNT, rows=ROWS, columns=COLUMNS, slice_thickness=THICKNESS)
    ):
        pixels = np.zeros((ROWS, COLUMNS), np.uint16)  # -1024 HU
        c, r, k = NODULE_INDEX
        if abs(i - k) <= 1:
            pixels[r - 1 : r + 2, c - 1 : c + 2] = 2024  # +1000 HU
        ds.PixelData = pixels.tobytes()
        if feet_first_flipped:
            ds.ImageOrientationPatient = [-1, 0, 0, 0, -1, 0]
        datasets.append(ds)
    return datasets


def expected_lps(ds: Dataset) -> np.ndarray:
    c, r, _ = NODULE_INDEX
    iop = np.asarray(ds.ImageOrientationPatient, float)
    return np.asarray(ds.ImagePositionPatient, float) + c * 0.7 * iop[:3] + r * 0.7 * iop[3:]


@pytest.mark.parametrize("flipped", [False, True])
def test_planted_block_position_is_recovered_in_lps(flipped: bool) -> None:
    datasets = planted(flipped)
    truth = expected_lps(datasets[NODULE_INDEX[2]])
    shuffled = datasets[:]
    random.Random(1).shuffle(shuffled)
    volume = build_volume(shuffled)
    assert volume.hu.shape == (COLUMNS, ROWS, COUNT)
    positions = [float(ds.ImagePositionPatient[2]) for ds in volume.datasets]
    assert positions == sorted(positions)  # sorted along the normal (+z), whatever the arrival order
    assert volume.spacing_mm == pytest.approx((0.7, 0.7, THICKNESS))
    hot = np.argwhere(volume.hu > 500).mean(axis=0)
    assert volume.to_lps(hot) == pytest.approx(truth, abs=1e-6)
    assert volume.hu.min() == pytest.approx(-1024) and volume.hu.max() == pytest.approx(1000)
    # The reference bundle's own preprocessing (Orientationd LPS, AreaSpacingd 2 mm, intensity window)
    # keeps the position.
    image = (
        load_bundle(REFERENCE_BUNDLE).transforms(torch.device("cpu")).preprocess(volume, torch.device("cpu"))
    )
    affine = LPS_TO_RAS @ np.asarray(image.affine, float)
    assert np.linalg.norm(affine[:3, :3], axis=0) == pytest.approx([2.0, 2.0, 2.0], rel=0.06)
    assert float(image.min()) == 0.0 and float(image.max()) > 0.1
    found = findings_from_probability(
        image[0].as_tensor() / image.max(), affine, threshold=0.05, min_score=0.0
    )
    assert len(found) == 1
    assert np.asarray(found[0].position_lps) == pytest.approx(truth, abs=0.8)


def test_area_spacing_keeps_voxel_centres_in_place() -> None:
    """AreaSpacing (the reference bundle's resampling): each output voxel's world position is the mean of
    the input voxels it averages, along down-sampled (area) and up-sampled (linear) axes alike."""
    affine = torch.as_tensor(
        np.diag([0.7, 0.7, 5.0, 1.0])
        + np.array([[0, 0, 0, -30.0], [0, 0, 0, 12.0], [0, 0, 0, 100.0], [0, 0, 0, 0]])
    )
    ramp = torch.arange(60, dtype=torch.float32)[:, None, None].expand(60, 40, 8)  # value = x index
    out = AreaSpacing([2.1, 2.1, 2.5])(MetaTensor(ramp[None].clone(), affine=affine))
    assert tuple(out.shape[1:]) == (20, 13, 16)
    new = np.asarray(out.affine, float)
    # Output voxel i along x averages input voxels 3i..3i+2: its value (their mean x index) maps to the
    # same world x as the output voxel's own centre.
    for i in (0, 7, 19):
        world_from_value = -30.0 + 0.7 * float(out[0, i, 0, 0])
        assert (new @ [i, 0, 0, 1])[0] == pytest.approx(world_from_value, abs=1e-4)
    assert (new @ [0, 0, 0, 1])[2] == pytest.approx(100.0 + (0.5 - 1) / 2 * 5.0)  # z up-sampled linearly


def test_rescale_slope_and_intercept_are_applied_per_slice() -> None:
    datasets = planted()
    datasets[0].RescaleSlope, datasets[0].RescaleIntercept = 2, -2048
    volume = build_volume(datasets)
    k = [ds.SOPInstanceUID for ds in volume.datasets].index(datasets[0].SOPInstanceUID)
    assert float(volume.hu[0, 0, k]) == -2048.0
    assert float(volume.hu[0, 0, (k + 1) % COUNT]) == -1024.0


def test_gaps_duplicates_and_mixed_series_are_refused() -> None:
    datasets = planted()
    with pytest.raises(VolumeError, match=r"gap: 1 slice\(s\) missing"):
        build_volume(datasets[:10] + datasets[11:])
    assert build_volume([*datasets, datasets[3]]).hu.shape[2] == COUNT  # a re-sent instance counts once
    other = next(ct_series(count=1, rows=ROWS, columns=COLUMNS))
    with pytest.raises(VolumeError, match="more than one series"):
        build_volume([*datasets, other])
    with pytest.raises(VolumeError):
        build_volume([])
