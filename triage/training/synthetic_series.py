"""A phantom rendered as a DICOM CT series (datasets from imaging.synthetic.ct_slice with the phantom's
pixels and the requested geometry), for tests, benchmarks and evaluation through the full DICOM path."""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from imaging.synthetic import SyntheticStudy, ct_slice
from triage.training.phantom import Phantom
from triage.training.render import Grid, Scan, render


def series_grid(rows: int, columns: int, count: int, pixel_spacing: float, slice_thickness: float) -> Grid:
    """The LPS grid of a series made by `phantom_series` (slices from z = 0 downwards, as ct_slice does)."""
    origin = (-0.5 * columns * pixel_spacing, -0.5 * rows * pixel_spacing, -(count - 1) * slice_thickness)
    return Grid(origin, (pixel_spacing, pixel_spacing, slice_thickness), (columns, rows, count))


def phantom_series(
    phantom: Phantom,
    *,
    study: SyntheticStudy | None = None,
    rows: int = 512,
    columns: int = 512,
    count: int = 300,
    pixel_spacing: float = 0.7,
    slice_thickness: float = 1.25,
    seed: int = 0,
    series_number: int = 1,
    scan: Scan | None = None,
    **ct_slice_options: object,
) -> list[Dataset]:
    """Instance i lies at z = -i * slice_thickness (head first, going down), like imaging.synthetic."""
    study = study or SyntheticStudy()
    grid = series_grid(rows, columns, count, pixel_spacing, slice_thickness)
    hu = render(phantom, grid, scan or Scan(thickness_mm=slice_thickness, noise_hu=20.0), seed=seed)
    stored = np.clip(np.rint(hu + 1024), 0, 4095).astype(np.uint16)
    series_uid = generate_uid()
    datasets = []
    for i in range(count):
        ds = ct_slice(
            study,
            series_uid,
            series_number,
            i,
            rows=rows,
            columns=columns,
            slice_thickness=slice_thickness,
            pixels=np.ascontiguousarray(stored[:, :, count - 1 - i].T),
            **ct_slice_options,  # type: ignore[arg-type]
        )
        ds.PixelSpacing = [pixel_spacing, pixel_spacing]
        ds.ImagePositionPatient = [grid.origin_lps[0], grid.origin_lps[1], -i * slice_thickness]
        datasets.append(ds)
    return datasets


def series_center_z(count: int, slice_thickness: float) -> float:
    return -(count - 1) * slice_thickness / 2
