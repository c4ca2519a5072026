"""Rendering a phantom (triage.training.phantom) as a CT volume on a grid, like a scanner would:
a slice profile of the slice thickness along z, an in-plane point spread function and an optional
edge-enhancing (sharp, "bone") kernel, then noise with the kernel's texture.

Arrays are (x, y, z) on an axis-aligned LPS grid; `triage.training.synthetic_series` turns them into
DICOM series of any orientation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from triage.training.phantom import Nodule, Phantom, Tube

CHUNK = 16  # z planes rendered at a time (memory stays bounded on 512 x 512 x 600 grids)


@dataclass(frozen=True)
class Grid:
    """Axis-aligned LPS grid: voxel (i, j, k) centre = origin + (i, j, k) * spacing; arrays are (x, y, z)."""

    origin_lps: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    shape: tuple[int, int, int]

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(  # type: ignore[return-value]
            (o + s * np.arange(n)).astype(np.float32)
            for o, s, n in zip(self.origin_lps, self.spacing_mm, self.shape, strict=True)
        )

    def refined(self, factor: int) -> Grid:
        """The grid `factor` times finer covering the same voxels (for supersampled partial volume)."""
        spacing = tuple(s / factor for s in self.spacing_mm)
        origin = tuple(o - (factor - 1) / 2 * s for o, s in zip(self.origin_lps, spacing, strict=True))
        return Grid(origin, spacing, tuple(n * factor for n in self.shape))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Scan:
    """How the volume is acquired and reconstructed."""

    thickness_mm: float = 1.25  # slice profile (may exceed the slice spacing: overlapping slices)
    psf_mm: float = 0.6  # in-plane Gaussian point spread (sigma): larger is a smoother kernel
    sharpen: float = 0.0  # unsharp-mask gain: 0 soft tissue kernel, about 1 a lung/bone kernel
    noise_hu: float = 25.0  # standard deviation of the noise in the reconstructed slices


def render(phantom: Phantom, grid: Grid, scan: Scan = Scan(), *, seed: int = 0) -> np.ndarray:
    """HU volume (x, y, z) float32 on `grid` (its z spacing is the slice spacing)."""
    x, y, z = grid.axes()
    sub = max(1, math.ceil(scan.thickness_mm / 0.8))
    offsets = ((np.arange(sub) + 0.5) / sub - 0.5) * scan.thickness_mm
    volume = np.empty(grid.shape, np.float32)
    for k0 in range(0, len(z), CHUNK):
        planes = (z[k0 : k0 + CHUNK, None] + offsets[None, :]).ravel().astype(np.float32)
        fine = _anatomy_planes(phantom, x, y, planes)
        volume[:, :, k0 : k0 + CHUNK] = fine.reshape(len(x), len(y), -1, sub).mean(axis=3)
    image = torch.from_numpy(volume)
    pixel = grid.spacing_mm[0]
    blurred = _blur_xy(image, scan.psf_mm / pixel)
    if scan.sharpen:
        blurred = blurred + scan.sharpen * (blurred - _blur_xy(blurred, 1.5 / pixel))
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(image.shape, generator=generator)
    noise = _blur_xy(noise, max(0.6, 0.8 * scan.psf_mm / pixel))
    noise *= scan.noise_hu / max(float(noise.std()), 1e-6)
    return (blurred + noise).numpy()


def nodule_fraction(nodules: Sequence[Nodule], grid: Grid, *, supersample: int = 3) -> np.ndarray:
    """Fraction of each voxel inside a nodule (the soft training target), (x, y, z) float32."""
    fine = grid.refined(supersample)
    x, y, z = fine.axes()
    mask = np.zeros(fine.shape, np.float32)
    for nodule in nodules:
        box = _box(x, y, z, np.asarray(nodule.center_lps), max(nodule.semi_axes_mm))
        if box is None:
            continue
        _paint_ellipsoid(mask, x, y, z, box, nodule.center_lps, nodule.semi_axes_mm, 1.0)
    nx, ny, nz = grid.shape
    f = supersample
    return mask.reshape(nx, f, ny, f, nz, f).mean(axis=(1, 3, 5), dtype=np.float32)


def _anatomy_planes(phantom: Phantom, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Noise-free HU on the (x, y) grid at the z planes listed."""
    a = phantom.anatomy
    ax, ay = a.body_semi_axes
    cax, cay = a.cavity_semi_axes
    X, Y = x[:, None], y[None, :]
    r_body = (X / ax) ** 2 + (Y / ay) ** 2
    r_muscle = (X / (ax - a.fat_mm)) ** 2 + (Y / (ay - a.fat_mm)) ** 2
    r_cavity = (X / cax) ** 2 + (Y / cay) ** 2
    plane = np.full(r_body.shape, -1000.0, np.float32)
    plane[r_body <= 1] = -100  # subcutaneous fat
    plane[r_muscle <= 1] = 45  # chest wall muscle and intercostal spaces
    plane[r_cavity <= 1] = 20  # mediastinal soft tissue and fat
    spine_r2 = X**2 + (Y - a.spine_center_y) ** 2
    plane[spine_r2 <= a.spine_radius**2] = 600  # cortex
    plane[spine_r2 <= (a.spine_radius - 2.5) ** 2] = 250  # cancellous bone
    canal = X**2 + (Y - a.spine_center_y - a.spine_radius - 9) ** 2 <= 7**2
    plane[canal] = 15
    sternum = (np.abs(X) <= 14) & (np.abs(Y + cay + 6) <= 5)
    plane[sternum] = 350
    volume = np.repeat(plane[:, :, None], len(z), axis=2)
    Z = z[None, None, :]
    # Abdomen under the domes: liver on the right, spleen and stomach on the left (soft tissue).
    below = np.zeros(volume.shape, bool)
    for index, dome in enumerate(a.dome_tops):
        cx, cy, _ = a.lung_centers[index]
        dome_z = dome - a.dome_curvature * ((X - cx) ** 2 + (Y - cy - 10) ** 2)
        side = (X < 0) if index == 0 else (X >= 0)
        below |= (dome_z[:, :, None] > Z) & side[:, :, None]
    below &= (r_cavity <= 1)[:, :, None]
    volume[below] = 60
    if phantom.stomach_gas is not None:
        centre, radius = phantom.stomach_gas
        _paint_ellipsoid_all(volume, x, y, z, centre, (radius, radius, radius * 0.7), -1000.0)
    hx, hy, hz = a.heart_center
    _paint_ellipsoid_all(volume, x, y, z, a.heart_center, a.heart_semi_axes, 45.0)
    inner = tuple(s * 0.72 for s in a.heart_semi_axes)
    _paint_ellipsoid_all(volume, x, y, z, (hx, hy + 3, hz), inner, phantom.blood_hu)  # type: ignore[arg-type]
    for tube in a.aorta:
        _paint_tube(volume, x, y, z, tube, phantom.blood_hu)
    for rib in phantom.ribs:
        # The anterior ends (front of the chest) are cartilage.
        hu = 130.0 if rib.start[1] < -0.55 * cay and rib.end[1] < -0.55 * cay else 550.0
        _paint_tube(volume, x, y, z, rib, hu)
    lungs = np.zeros(volume.shape, bool)
    for centre, semi in zip(a.lung_centers, a.lung_semi_axes, strict=True):
        # Only inside each lung's bounding box: most of the plane is not lung.
        box = _box(x, y, z, np.subtract(centre, semi) - 1, np.add(centre, semi) + 1)
        if box is not None:
            sx, sy, sz = box
            lungs[sx, sy, sz] |= a.in_lungs(x[sx, None, None], y[None, sy, None], z[None, None, sz]) > 0
    volume[lungs] = phantom.lung_hu
    for vessel in phantom.vessels:
        _paint_tube(volume, x, y, z, vessel, phantom.blood_hu, only=lungs)
    for airway in phantom.airways:
        segment = airway.segment
        wall = Tube(segment.start, segment.end, segment.radius_mm + airway.wall_mm)
        central = segment.radius_mm >= 5
        _paint_tube(volume, x, y, z, wall, 40.0, only=None if central else lungs)
        _paint_tube(volume, x, y, z, segment, -990.0, only=None if central else lungs)
    for nodule in phantom.nodules:
        _paint_ellipsoid_all(volume, x, y, z, nodule.center_lps, nodule.semi_axes_mm, nodule.hu)
    return volume


def _box(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, lo: np.ndarray, hi: np.ndarray | float
) -> tuple[slice, slice, slice] | None:
    """Index ranges of the axes inside [lo, hi] (or the cube of half-size `hi` around `lo`)."""
    if not isinstance(hi, np.ndarray):
        lo, hi = lo - hi, lo + hi
    slices = []
    for axis, a, b in zip((x, y, z), lo, hi, strict=True):
        i0, i1 = int(np.searchsorted(axis, a, "left")), int(np.searchsorted(axis, b, "right"))
        if i0 >= i1:
            return None
        slices.append(slice(i0, i1))
    return tuple(slices)  # type: ignore[return-value]


def _paint_ellipsoid(
    volume: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    box: tuple[slice, slice, slice],
    centre: tuple[float, float, float],
    semi: tuple[float, float, float],
    value: float,
) -> None:
    sx, sy, sz = box
    inside = (
        ((x[sx, None, None] - centre[0]) / semi[0]) ** 2
        + ((y[None, sy, None] - centre[1]) / semi[1]) ** 2
        + ((z[None, None, sz] - centre[2]) / semi[2]) ** 2
    ) <= 1
    volume[sx, sy, sz][inside] = value


def _paint_ellipsoid_all(
    volume: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    centre: tuple[float, float, float],
    semi: tuple[float, float, float],
    value: float,
) -> None:
    c = np.asarray(centre, float)
    box = _box(x, y, z, c - np.asarray(semi), c + np.asarray(semi))
    if box is not None:
        _paint_ellipsoid(volume, x, y, z, box, centre, semi, value)


def _paint_tube(
    volume: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    tube: Tube,
    value: float,
    only: np.ndarray | None = None,
) -> None:
    a, b = np.asarray(tube.start, np.float32), np.asarray(tube.end, np.float32)
    r = tube.radius_mm
    box = _box(x, y, z, np.minimum(a, b) - r, np.maximum(a, b) + r)
    if box is None:
        return
    sx, sy, sz = box
    px, py, pz = x[sx, None, None] - a[0], y[None, sy, None] - a[1], z[None, None, sz] - a[2]
    d = b - a
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / max(float(d @ d), 1e-6), 0, 1)
    inside = (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2 <= r * r
    if only is not None:
        inside &= only[sx, sy, sz]
    volume[sx, sy, sz][inside] = value


def _blur_xy(image: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Separable Gaussian blur of (x, y, z) along x and y (replicate padding)."""
    if sigma_px < 0.2:
        return image
    radius = max(1, math.ceil(3 * sigma_px))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / sigma_px) ** 2)
    kernel /= kernel.sum()
    out = image
    for axis in (0, 1):
        n = out.shape[axis]
        padded = torch.cat(
            [
                out.narrow(axis, 0, 1).expand_as(out.narrow(axis, 0, radius)),
                out,
                out.narrow(axis, n - 1, 1).expand_as(out.narrow(axis, 0, radius)),
            ],
            dim=axis,
        )
        # Shifted copies summed with the kernel's weights: far faster on CPU than a 1-channel conv.
        summed = padded.narrow(axis, 0, n) * kernel[0]
        for k in range(1, 2 * radius + 1):
            summed.add_(padded.narrow(axis, k, n), alpha=float(kernel[k]))
        out = summed
    return out
