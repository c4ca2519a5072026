"""One series -> a 3D volume in Hounsfield units with its LPS affine.

Array convention (as MONAI/NIfTI): axes (i, j, k) = (column, row, slice); `affine_lps` maps a voxel index to
DICOM patient coordinates in mm. Slices are sorted along the slice normal (triage.geometry), whatever order
the instances arrived in; pixels are decoded in any transfer syntax pydicom has a decoder for, signed or
unsigned, and rescaled per slice (or per frame) to HU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from triage.geometry import Frame, VolumeError, frames_of, sort_frames

__all__ = ["LPS_TO_RAS", "Volume", "VolumeError", "build_volume"]

# MONAI (like NIfTI) keeps affines in RAS; DICOM is LPS. The same matrix converts both ways.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    hu: np.ndarray  # (columns, rows, slices) float32
    affine_lps: np.ndarray  # 4x4, voxel index -> LPS mm
    frames: list[Frame]  # frames[k] is slice k (an instance, and its frame number when multi-frame)

    @property
    def datasets(self) -> list[Dataset]:
        """The source instances, each once, in slice order of their first slice."""
        seen: dict[int, Dataset] = {}
        for frame in self.frames:
            seen.setdefault(id(frame.dataset), frame.dataset)
        return list(seen.values())

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.linalg.norm(self.affine_lps[:3, :3], axis=0))  # type: ignore[return-value]

    def to_lps(self, ijk: Sequence[float]) -> np.ndarray:
        return (self.affine_lps @ np.append(np.asarray(ijk, float), 1.0))[:3]

    def to_index(self, lps: Sequence[float]) -> np.ndarray:
        return (np.linalg.inv(self.affine_lps) @ np.append(np.asarray(lps, float), 1.0))[:3]


def build_volume(datasets: Sequence[Dataset]) -> Volume:
    """Decode and stack one series (HU via each slice's rescale). Raises VolumeError with the reason when
    the instances do not form one regular volume or their pixels cannot be decoded."""
    ordered, affine = sort_frames(frames_of(datasets))
    first = ordered[0].dataset
    hu = np.empty((int(first.Columns), int(first.Rows), len(ordered)), np.float32)
    decoded: dict[int, np.ndarray] = {}
    for k, frame in enumerate(ordered):
        ds = frame.dataset
        if id(ds) not in decoded:
            decoded[id(ds)] = _pixels(ds)
        pixels = decoded[id(ds)]
        plane = pixels[frame.frame_number - 1] if frame.frame_number is not None else pixels
        slope, intercept = frame.rescale
        hu[:, :, k] = (plane.astype(np.float32) * np.float32(slope) + np.float32(intercept)).T
    return Volume(hu, affine, ordered)


def _pixels(ds: Dataset) -> np.ndarray:
    """The stored values (before rescale): (rows, columns), or (frames, rows, columns) when multi-frame."""
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if int(getattr(ds, "SamplesPerPixel", 1) or 1) != 1:
        raise VolumeError("colour images are not CT slices (SamplesPerPixel is not 1)")
    try:
        array = ds.pixel_array
    except Exception as error:  # pydicom raises several types; the reason is the transfer syntax or the data
        name = getattr(syntax, "name", None) or "an unknown transfer syntax"
        raise VolumeError(f"pixel data in {name} cannot be decoded ({type(error).__name__})") from error
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    expected = (frames, int(ds.Rows), int(ds.Columns)) if frames > 1 else (int(ds.Rows), int(ds.Columns))
    if "PerFrameFunctionalGroupsSequence" in ds and frames == 1:
        array = array[None]
        expected = (1, *expected)
    if array.shape != expected:
        raise VolumeError(f"decoded pixel data has shape {array.shape}, expected {expected}")
    return array
