"""Synthetic chest-CT phantoms: body with a fat rim, spine, two lungs at about -850 HU with vessel-like
tubes, and spherical soft-tissue nodules. One phantom is a frozen description in patient coordinates
(LPS, mm) rendered on any axis-aligned grid, so training (coarse, supersampled) and tests (native DICOM
grid) see the same anatomy. Nothing here is real patient data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Nodule:
    center_lps: tuple[float, float, float]
    diameter_mm: float
    hu: float


@dataclass(frozen=True)
class Vessel:
    start_lps: tuple[float, float, float]
    end_lps: tuple[float, float, float]
    radius_mm: float
    hu: float


@dataclass(frozen=True)
class Lung:
    center_lps: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]


@dataclass(frozen=True)
class Phantom:
    body_semi_axes_mm: tuple[float, float]  # elliptic cylinder along z, centred on x = y = 0
    lungs: tuple[Lung, Lung]
    lung_hu: float
    nodules: tuple[Nodule, ...]
    vessels: tuple[Vessel, ...]
    noise_hu: float  # standard deviation of the noise at the rendered (native) voxel size


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


def random_phantom(
    seed: int,
    *,
    z_center: float = 0.0,
    nodule_count: int | None = None,
    diameter_range: tuple[float, float] = (3.0, 15.0),
    noise_hu: float | None = None,
) -> Phantom:
    """A phantom drawn from `seed`; lungs centred on `z_center`."""
    rng = np.random.default_rng(seed)
    ax, ay = float(rng.uniform(135, 170)), float(rng.uniform(100, 125))
    lz = float(rng.uniform(95, 130))
    lungs = tuple(
        Lung(
            (side * 0.5 * ax, float(rng.uniform(-8, 4)), z_center + float(rng.uniform(-10, 10))),
            (0.34 * ax * float(rng.uniform(0.9, 1.05)), 0.66 * ay * float(rng.uniform(0.9, 1.05)), lz),
        )
        for side in (-1.0, 1.0)
    )
    vessels = []
    for lung in lungs:
        for _ in range(int(rng.integers(20, 45))):
            start = _point_in_ellipsoid(rng, lung, margin=0.8)
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            end = np.asarray(start) + direction * rng.uniform(20, 70)
            vessels.append(
                Vessel(start, _tuple(end), float(rng.uniform(0.7, 2.2)), float(rng.uniform(0, 60)))
            )
    count = int(rng.integers(0, 6)) if nodule_count is None else nodule_count
    nodules: list[Nodule] = []
    while len(nodules) < count:
        diameter = float(rng.uniform(*diameter_range))
        lung = lungs[int(rng.integers(0, 2))]
        centre = _point_in_ellipsoid(rng, lung, margin=0.75, inset_mm=diameter / 2 + 4)
        if all(_distance(centre, n.center_lps) > (diameter + n.diameter_mm) / 2 + 10 for n in nodules):
            nodules.append(Nodule(centre, diameter, float(rng.uniform(-40, 80))))
    return Phantom(
        body_semi_axes_mm=(ax, ay),
        lungs=lungs,  # type: ignore[arg-type]
        lung_hu=float(rng.uniform(-880, -820)),
        nodules=tuple(nodules),
        vessels=tuple(vessels),
        noise_hu=float(rng.uniform(10, 50)) if noise_hu is None else noise_hu,
    )


def render(phantom: Phantom, grid: Grid, *, seed: int = 0, supersample: int = 1) -> np.ndarray:
    """HU volume (x, y, z) float32; with `supersample` > 1 each voxel averages a finer rendering
    (partial volume, and the noise is drawn at the finer, native-like voxel size)."""
    fine = grid.refined(supersample) if supersample > 1 else grid
    x, y, z = fine.axes()
    ax, ay = phantom.body_semi_axes_mm
    r2 = (x[:, None] / ax) ** 2 + (y[None, :] / ay) ** 2
    plane = np.where(r2 < 1, np.float32(40), np.float32(-1000))
    plane[(r2 < 1) & (r2 > 0.85)] = -100  # subcutaneous fat
    spine = (x[:, None] ** 2 + (y[None, :] - 0.72 * ay) ** 2) < 16**2
    plane[spine] = 600
    volume = np.repeat(plane[:, :, None], len(z), axis=2)
    for lung in phantom.lungs:
        _paint(volume, fine, lung.center_lps, lung.semi_axes_mm, phantom.lung_hu)
    for vessel in phantom.vessels:
        _paint_tube(volume, fine, vessel)
    for nodule in phantom.nodules:
        r = nodule.diameter_mm / 2
        _paint(volume, fine, nodule.center_lps, (r, r, r), nodule.hu)
    rng = np.random.default_rng(seed)
    volume += rng.normal(0, phantom.noise_hu, volume.shape).astype(np.float32)
    return _pool(volume, supersample)


def nodule_fraction(phantom: Phantom, grid: Grid, *, supersample: int = 2) -> np.ndarray:
    """Fraction of each voxel inside a nodule (the soft training target), (x, y, z) float32."""
    fine = grid.refined(supersample) if supersample > 1 else grid
    mask = np.zeros(fine.shape, np.float32)
    for nodule in phantom.nodules:
        r = nodule.diameter_mm / 2
        _paint(mask, fine, nodule.center_lps, (r, r, r), 1.0)
    return _pool(mask, supersample)


def _paint(
    volume: np.ndarray, grid: Grid, centre: tuple[float, float, float], semi: tuple[float, ...], value: float
) -> None:
    box = _box(grid, np.asarray(centre) - semi, np.asarray(centre) + semi)
    if box is None:
        return
    sx, sy, sz = box
    x, y, z = (a[s] for a, s in zip(grid.axes(), box, strict=True))
    inside = (
        ((x[:, None, None] - centre[0]) / semi[0]) ** 2
        + ((y[None, :, None] - centre[1]) / semi[1]) ** 2
        + ((z[None, None, :] - centre[2]) / semi[2]) ** 2
    ) <= 1
    volume[sx, sy, sz][inside] = value


def _paint_tube(volume: np.ndarray, grid: Grid, vessel: Vessel) -> None:
    a, b = np.asarray(vessel.start_lps), np.asarray(vessel.end_lps)
    box = _box(grid, np.minimum(a, b) - vessel.radius_mm, np.maximum(a, b) + vessel.radius_mm)
    if box is None:
        return
    x, y, z = (ax[s] for ax, s in zip(grid.axes(), box, strict=True))
    p = np.stack(np.meshgrid(x, y, z, indexing="ij"), axis=-1)
    d = b - a
    t = np.clip(((p - a) @ d) / float(d @ d), 0, 1)
    dist2 = ((p - a - t[..., None] * d) ** 2).sum(-1)
    # Vessels only show inside the lungs (elsewhere they are soft tissue in soft tissue anyway).
    region = volume[box[0], box[1], box[2]]
    region[(dist2 <= vessel.radius_mm**2) & (region < -500)] = vessel.hu


def _box(grid: Grid, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice] | None:
    slices = []
    for o, s, n, a, b in zip(grid.origin_lps, grid.spacing_mm, grid.shape, lo, hi, strict=True):
        i0, i1 = max(int(np.floor((a - o) / s)), 0), min(int(np.ceil((b - o) / s)) + 1, n)
        if i0 >= i1:
            return None
        slices.append(slice(i0, i1))
    return tuple(slices)  # type: ignore[return-value]


def _pool(volume: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return volume
    nx, ny, nz = (n // factor for n in volume.shape)
    return volume.reshape(nx, factor, ny, factor, nz, factor).mean(axis=(1, 3, 5), dtype=np.float32)


def _point_in_ellipsoid(
    rng: np.random.Generator, lung: Lung, *, margin: float, inset_mm: float = 0.0
) -> tuple[float, float, float]:
    semi = np.maximum(np.asarray(lung.semi_axes_mm) - inset_mm, 1.0) * margin
    while True:
        u = rng.uniform(-1, 1, 3)
        if (u**2).sum() <= 1:
            return _tuple(np.asarray(lung.center_lps) + u * semi)


def _distance(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    return float(np.linalg.norm(np.subtract(a, b)))


def _tuple(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))
