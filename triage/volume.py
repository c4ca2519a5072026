"""One series of single-frame slices -> a 3D volume in Hounsfield units with its LPS affine, and the
model's view of it (orientation, spacing, intensity window).

Array convention (as MONAI/NIfTI): axes (i, j, k) = (column, row, slice); `affine_lps` maps a voxel
index to DICOM patient coordinates in mm. Slices are sorted along the slice normal so k increases
along it, whatever order the instances arrived in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Resize, ScaleIntensityRange, Spacing
from pydicom.dataset import Dataset

from imaging.errors import DataSetMismatch
from triage.spec import TriageSpec

# MONAI (like NIfTI) keeps affines in RAS; DICOM is LPS. The same matrix converts both ways.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class VolumeError(DataSetMismatch):
    """The instances do not form one regular volume (mixed series, gaps, tilted or multi-frame)."""


@dataclass
class Volume:
    hu: np.ndarray  # (columns, rows, slices) float32
    affine_lps: np.ndarray  # 4x4, voxel index -> LPS mm
    datasets: list[Dataset]  # sorted: datasets[k] is slice k

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine_lps[:3, :3], axis=0))  # type: ignore[return-value]

    def to_lps(self, ijk: Sequence[float]) -> np.ndarray:
        return (self.affine_lps @ np.append(np.asarray(ijk, float), 1.0))[:3]

    def to_index(self, lps: Sequence[float]) -> np.ndarray:
        return (np.linalg.inv(self.affine_lps) @ np.append(np.asarray(lps, float), 1.0))[:3]


def sort_slices(datasets: Sequence[Dataset]) -> tuple[list[Dataset], np.ndarray]:
    """Instances sorted along the slice normal, and that normal."""
    if not datasets:
        raise VolumeError("no instances")
    first = datasets[0]
    for keyword in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        if any(keyword not in ds for ds in datasets):
            raise VolumeError(f"an instance lacks {keyword}")
    iop = np.asarray(first.ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    for ds in datasets:
        if ds.SeriesInstanceUID != first.SeriesInstanceUID:
            raise VolumeError("instances from more than one series")
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
            raise VolumeError("multi-frame instances are not supported")
        if (ds.Rows, ds.Columns) != (first.Rows, first.Columns):
            raise VolumeError("slices differ in size")
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, float), iop, atol=1e-3):
            raise VolumeError("slices differ in orientation")
    return sorted(
        datasets, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float)))
    ), normal


def build_volume(datasets: Sequence[Dataset]) -> Volume:
    """Decode and stack one series (HU via each slice's rescale); refuses gaps and irregular spacing."""
    ordered, normal = sort_slices(datasets)
    positions = np.asarray([ds.ImagePositionPatient for ds in ordered], float)
    first = ordered[0]
    iop = np.asarray(first.ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    if len(ordered) > 1:
        steps = np.diff(positions @ normal)
        step = float(np.median(steps))
        if step <= 1e-3 or np.max(np.abs(steps - step)) > max(0.01 * step, 0.05):
            raise VolumeError("slice positions are duplicated, missing or irregular")
        slice_axis = (positions[-1] - positions[0]) / (len(ordered) - 1)
    else:
        slice_axis = normal * float(getattr(first, "SliceThickness", 1.0) or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * column_spacing  # i: along a row (next column)
    affine[:3, 1] = iop[3:] * row_spacing  # j: down a column (next row)
    affine[:3, 2] = slice_axis
    affine[:3, 3] = positions[0]
    hu = np.empty((int(first.Columns), int(first.Rows), len(ordered)), np.float32)
    for k, ds in enumerate(ordered):
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        hu[:, :, k] = (ds.pixel_array.astype(np.float32) * slope + intercept).T
    return Volume(hu, affine, list(ordered))


def orient(image: torch.Tensor, affine_lps: np.ndarray, axcodes: str) -> tuple[torch.Tensor, np.ndarray]:
    """Flip/permute (C, X, Y, Z) so the array axes point along `axcodes` (e.g. "LPS", "RAS").

    Done here rather than with monai.transforms.Orientation, which needs nibabel for the same
    permutation/flip arithmetic."""
    positive = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}
    directions = affine_lps[:3, :3] / np.linalg.norm(affine_lps[:3, :3], axis=0)
    source_axis_of = np.argmax(np.abs(directions), axis=1)  # world axis -> array axis most aligned with it
    if len(set(source_axis_of.tolist())) != 3:
        raise VolumeError("oblique volume: cannot assign array axes to patient axes")
    permutation, flips = [], []
    for code in axcodes.upper():
        world, sign = positive[code]
        axis = int(source_axis_of[world])
        permutation.append(axis)
        flips.append(np.sign(directions[world, axis]) != sign)
    shape = image.shape[1:]
    affine = affine_lps[:, [*permutation, 3]].copy()
    image = image.permute(0, *(a + 1 for a in permutation))
    for out_axis, flip in enumerate(flips):
        if flip:
            n = shape[permutation[out_axis]]
            affine[:3, 3] += affine[:3, out_axis] * (n - 1)
            affine[:3, out_axis] *= -1
            image = image.flip(out_axis + 1)
    return image, affine


def model_input(volume: Volume, spec: TriageSpec, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """(1, X, Y, Z) float32 on `device` in the model's orientation, spacing and intensity range, and the
    LPS affine of that grid."""
    image = torch.from_numpy(volume.hu).to(device)[None]
    image, affine = orient(image, volume.affine_lps, spec.axcodes)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    target = np.asarray(spec.pixdim, float)
    meta = MetaTensor(image, affine=torch.as_tensor(LPS_TO_RAS @ affine))
    if spec.resample == "area" and np.all(target >= spacing * 0.999):
        # Down-sampling by area averaging keeps small nodules' partial volume (and averages noise)
        # instead of sampling between them as linear interpolation would.
        size = tuple(
            max(round(n * s / t), 1) for n, s, t in zip(image.shape[1:], spacing, target, strict=True)
        )
        meta = Resize(size, mode="area")(meta)  # type: ignore[assignment]
    else:
        meta = Spacing(pixdim=tuple(target), mode="bilinear")(meta)  # type: ignore[assignment]
    meta = ScaleIntensityRange(spec.a_min, spec.a_max, spec.b_min, spec.b_max, clip=spec.clip)(meta)  # type: ignore[assignment]
    affine_out = LPS_TO_RAS @ np.asarray(meta.affine, float)
    return meta.as_tensor().float(), affine_out
