"""The slices of one series, whatever the scanner or export made of it: single-frame images or multi-frame
(Enhanced / Legacy Converted Enhanced CT) instances, geometry from the root attributes or the functional
groups, any patient position. Sorted along the slice normal and checked to form one regular volume; a
series that does not is refused with a precise reason (no PHI: counts, sizes and positions in mm only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from imaging.errors import DataSetMismatch


class VolumeError(DataSetMismatch):
    """The instances do not form one regular volume (mixed series, gaps, duplicates, mixed orientations,
    missing geometry, undecodable pixels). The message says why; it never quotes patient data."""


@dataclass(frozen=True)
class Frame:
    """One slice: an instance, and for a multi-frame instance its 1-based frame number."""

    dataset: Dataset
    frame_number: int | None
    position: np.ndarray  # ImagePositionPatient, mm
    orientation: np.ndarray  # ImageOrientationPatient (row, column direction cosines)
    pixel_spacing: tuple[float, float]  # (between rows, between columns), mm
    slice_thickness: float | None
    rescale: tuple[float, float]  # slope, intercept


def frames_of(datasets: Sequence[Dataset]) -> list[Frame]:
    """Every slice of the instances, in no particular order; one instance per SOP Instance UID (a
    re-sent instance is counted once)."""
    if not datasets:
        raise VolumeError("no instances")
    unique: dict[str, Dataset] = {}
    for ds in datasets:
        unique.setdefault(str(getattr(ds, "SOPInstanceUID", id(ds))), ds)
    instances = list(unique.values())
    series = {str(getattr(ds, "SeriesInstanceUID", "")) for ds in instances}
    if len(series) != 1 or "" in series:
        raise VolumeError(
            "instances from more than one series" if len(series) > 1 else "no SeriesInstanceUID"
        )
    if len({str(getattr(ds, "StudyInstanceUID", "")) for ds in instances}) != 1:
        raise VolumeError("instances of one series in different studies")
    if any(not getattr(ds, "FrameOfReferenceUID", "") for ds in instances):
        raise VolumeError("no FrameOfReferenceUID: findings could not be placed in patient coordinates")
    missing_pixels = sum("PixelData" not in ds for ds in instances)
    if missing_pixels:
        raise VolumeError(f"{missing_pixels} of {len(instances)} instances have no pixel data")
    frames: list[Frame] = []
    for ds in instances:
        if "PerFrameFunctionalGroupsSequence" in ds or int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            frames += _multi_frame(ds)
        else:
            frames.append(_single_frame(ds))
    sizes = {(int(f.dataset.Rows), int(f.dataset.Columns)) for f in frames}
    if len(sizes) > 1:
        shown = ", ".join(f"{c}x{r}" for r, c in sorted(sizes))
        raise VolumeError(f"slices differ in size ({shown} pixels)")
    return frames


def sort_frames(frames: Sequence[Frame]) -> tuple[list[Frame], np.ndarray]:
    """Slices sorted along the slice normal, and the 4x4 affine mapping (column, row, slice) indices to
    LPS mm. Refuses mixed orientations, duplicate positions, gaps and irregular spacing."""
    first = frames[0]
    iop = first.orientation
    orientations = {tuple(np.round(f.orientation, 3)) for f in frames}
    if any(not np.allclose(f.orientation, iop, atol=1e-3) for f in frames):
        raise VolumeError(f"mixed orientations: {len(orientations)} different ImageOrientationPatient values")
    if any(not np.allclose(f.pixel_spacing, first.pixel_spacing, rtol=1e-3) for f in frames):
        raise VolumeError("slices differ in pixel spacing")
    normal = np.cross(iop[:3], iop[3:])
    ordered = sorted(frames, key=lambda f: float(normal @ f.position))
    positions = np.asarray([f.position for f in ordered])
    row_spacing, column_spacing = first.pixel_spacing
    affine = np.eye(4)
    affine[:3, 0] = iop[:3] * column_spacing  # i: along a row (next column)
    affine[:3, 1] = iop[3:] * row_spacing  # j: down a column (next row)
    affine[:3, 3] = positions[0]
    if len(ordered) == 1:
        affine[:3, 2] = normal * (first.slice_thickness or 1.0)
        return ordered, affine
    along = positions @ normal
    steps = np.diff(along)
    duplicates = int(np.sum(steps < 1e-3))
    if duplicates:
        at = float(along[int(np.argmax(steps < 1e-3))])
        raise VolumeError(
            f"duplicate slice positions: {duplicates} slices share a position with another "
            f"(first at {at:.2f} mm along the slice normal)"
        )
    step = float(np.median(steps))
    tolerance = max(0.02 * step, 0.05)
    off = np.abs(steps - step) > tolerance
    if off.any():
        ratios = steps[off] / step
        if np.all(ratios > 1.5) and np.all(np.abs(ratios - np.rint(ratios)) < 0.1):
            k = int(np.nonzero(off)[0][0])
            missing = round(float(steps[k]) / step) - 1
            raise VolumeError(
                f"gap: {missing} slice(s) missing between positions {along[k]:.2f} and {along[k + 1]:.2f} mm "
                f"along the slice normal (step {step:.2f} mm; {int(off.sum())} gap(s) in all)"
            )
        raise VolumeError(
            f"irregular slice spacing: steps from {float(steps.min()):.2f} to {float(steps.max()):.2f} mm"
        )
    # Along the slices: the mean step vector, which also carries a gantry tilt (positions not on the normal).
    affine[:3, 2] = (positions[-1] - positions[0]) / (len(ordered) - 1)
    return ordered, affine


def _floats(value: object, count: int, keyword: str) -> np.ndarray:
    try:
        array = np.array([float(v) for v in value], dtype=np.float64)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as error:
        raise VolumeError(f"{keyword} is not numeric") from error
    if array.shape != (count,) or not np.all(np.isfinite(array)):
        raise VolumeError(f"{keyword} must have {count} finite values")
    return array


def _rescale(item: Dataset) -> tuple[float, float]:
    slope = getattr(item, "RescaleSlope", None)
    intercept = getattr(item, "RescaleIntercept", None)
    try:
        return float(1 if slope in (None, "") else slope), float(0 if intercept in (None, "") else intercept)
    except (TypeError, ValueError) as error:
        raise VolumeError("RescaleSlope or RescaleIntercept is not numeric") from error


def _orientation(iop: np.ndarray) -> np.ndarray:
    row, column = iop[:3], iop[3:]
    if (
        not (0.98 < np.linalg.norm(row) < 1.02 and 0.98 < np.linalg.norm(column) < 1.02)
        or abs(row @ column) > 0.02
    ):
        raise VolumeError("ImageOrientationPatient is not two orthogonal unit vectors")
    return np.concatenate([row / np.linalg.norm(row), column / np.linalg.norm(column)])


def _single_frame(ds: Dataset) -> Frame:
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns"):
        if ds.get(keyword) in (None, ""):
            raise VolumeError(f"an instance lacks {keyword}")
    thickness = ds.get("SliceThickness")
    return Frame(
        ds,
        None,
        _floats(ds.ImagePositionPatient, 3, "ImagePositionPatient"),
        _orientation(_floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient")),
        tuple(_floats(ds.PixelSpacing, 2, "PixelSpacing")),  # type: ignore[arg-type]
        float(thickness) if thickness not in (None, "") else None,
        _rescale(ds),
    )


def _group(ds: Dataset, per_frame: Dataset | None, sequence: str) -> Dataset | None:
    """A functional group macro's item: per-frame first, else shared (PS3.3 C.7.6.16)."""
    for holder in (per_frame, _first(ds, "SharedFunctionalGroupsSequence")):
        if holder is not None and sequence in holder and len(holder[sequence].value):
            return holder[sequence].value[0]
    return None


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    value = ds.get(keyword)
    return value[0] if value else None


def _multi_frame(ds: Dataset) -> list[Frame]:
    count = int(getattr(ds, "NumberOfFrames", 1) or 1)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != count:
        raise VolumeError("multi-frame instance without one PerFrameFunctionalGroupsSequence item per frame")
    frames = []
    for number, item in enumerate(per_frame, start=1):
        position = _group(ds, item, "PlanePositionSequence")
        orientation = _group(ds, item, "PlaneOrientationSequence")
        measures = _group(ds, item, "PixelMeasuresSequence")
        if position is None or orientation is None or measures is None or "PixelSpacing" not in measures:
            raise VolumeError("multi-frame instance lacks plane position, orientation or pixel measures")
        transformation = _group(ds, item, "PixelValueTransformationSequence")
        thickness = measures.get("SliceThickness")
        frames.append(
            Frame(
                ds,
                number,
                _floats(position.ImagePositionPatient, 3, "ImagePositionPatient"),
                _orientation(_floats(orientation.ImageOrientationPatient, 6, "ImageOrientationPatient")),
                tuple(_floats(measures.PixelSpacing, 2, "PixelSpacing")),  # type: ignore[arg-type]
                float(thickness) if thickness not in (None, "") else None,
                _rescale(transformation if transformation is not None else ds),
            )
        )
    return frames
