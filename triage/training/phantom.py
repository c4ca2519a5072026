"""Synthetic chest-CT anatomy for training and evaluating the reference nodule detector.

A phantom is a frozen description in patient coordinates (LPS, mm; x to the patient's left, y posterior,
z superior), rendered on any grid by `triage.training.render`. It holds what a nodule detector must learn
to ignore, not only nodules: a chest wall (fat, muscle, ribs with cartilage, sternum, spine), the
mediastinum with the heart and the aorta, lungs shaped by them and cut by the diaphragm domes with the
liver, spleen and sometimes a stomach gas bubble beneath, branching vessel trees from each hilum
(Murray's law radii), and an airway tree (trachea, main bronchi, bronchi with soft-tissue walls).
Nodules are solid ellipsoids, isolated in the parenchyma, on the pleura (juxtapleural) or touching a
vessel (juxtavascular).

`Distribution` says how phantoms are drawn (body proportions, contrast, nodule sizes); the training
and the held-out evaluation use different ones. Nothing here is real patient data.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np

Point = tuple[float, float, float]


@dataclass(frozen=True)
class Tube:
    """A capsule from `start` to `end` (vessel segment, airway segment or rib piece)."""

    start: Point
    end: Point
    radius_mm: float


@dataclass(frozen=True)
class Airway:
    segment: Tube  # lumen radius
    wall_mm: float


@dataclass(frozen=True)
class Nodule:
    center_lps: Point
    semi_axes_mm: Point
    hu: float
    kind: str = "isolated"  # isolated, juxtapleural, juxtavascular

    @property
    def diameter_mm(self) -> float:
        """Diameter of the sphere of the same volume."""
        a, b, c = self.semi_axes_mm
        return 2 * (a * b * c) ** (1 / 3)


@dataclass(frozen=True)
class Anatomy:
    """The shapes every structure is placed against (all mm, LPS)."""

    z_center: float
    body_semi_axes: tuple[float, float]  # elliptic cylinder, x and y
    fat_mm: float
    muscle_mm: float
    cavity_semi_axes: tuple[float, float]  # thoracic cavity inside the ribs
    lung_centers: tuple[Point, Point]  # right (x < 0), left
    lung_semi_axes: tuple[Point, Point]  # (x, y, z below the centre); the apex uses apex_ratio
    apex_ratio: float
    mediastinum_half_width: float
    heart_center: Point
    heart_semi_axes: Point
    aorta: tuple[Tube, ...]
    dome_tops: tuple[float, float]  # z of the right and left diaphragm domes
    dome_curvature: float  # mm of descent per mm^2 from the dome top
    spine_center_y: float
    spine_radius: float

    def in_lungs(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Lung index 1 (right) / 2 (left) where a point lies in a lung, else 0; broadcasting arrays."""
        x, y, z = np.broadcast_arrays(np.asarray(x), np.asarray(y), np.asarray(z))
        region = np.zeros(x.shape, np.uint8)
        cax, cay = self.cavity_semi_axes
        cavity = (x / cax) ** 2 + (y / cay) ** 2 <= 1
        hx, hy, hz = self.heart_center
        ha, hb, hc = (s + 4 for s in self.heart_semi_axes)
        heart = ((x - hx) / ha) ** 2 + ((y - hy) / hb) ** 2 + ((z - hz) / hc) ** 2 <= 1
        for index, (centre, semi, dome) in enumerate(
            zip(self.lung_centers, self.lung_semi_axes, self.dome_tops, strict=True), start=1
        ):
            side = -1.0 if index == 1 else 1.0
            cx, cy, cz = centre
            a, b, c = semi
            cz_scale = np.where(z > cz, c * self.apex_ratio, c)
            ellipsoid = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / cz_scale) ** 2 <= 1
            medial = side * x >= self.mediastinum_half_width
            dome_z = dome - self.dome_curvature * ((x - cx) ** 2 + (y - cy - 10) ** 2)
            inside = ellipsoid & medial & cavity & (z >= dome_z) & ~heart
            for tube in self.aorta:
                _carve_tube(inside, x, y, z, tube, tube.radius_mm + 3)
            region[inside] = index
        return region

    def lung_of(self, point: Point) -> int:
        """`in_lungs` for one point, in plain floats (tree growth asks this thousands of times)."""
        x, y, z = (float(v) for v in point)
        cax, cay = self.cavity_semi_axes
        if (x / cax) ** 2 + (y / cay) ** 2 > 1:
            return 0
        hx, hy, hz = self.heart_center
        ha, hb, hc = (s + 4 for s in self.heart_semi_axes)
        if ((x - hx) / ha) ** 2 + ((y - hy) / hb) ** 2 + ((z - hz) / hc) ** 2 <= 1:
            return 0
        for tube in self.aorta:
            if _tube_distance2(x, y, z, tube) <= (tube.radius_mm + 3) ** 2:  # type: ignore[arg-type]
                return 0
        for index, (centre, semi, dome) in enumerate(
            zip(self.lung_centers, self.lung_semi_axes, self.dome_tops, strict=True), start=1
        ):
            side = -1.0 if index == 1 else 1.0
            cx, cy, cz = centre
            a, b, c = semi
            c = c * self.apex_ratio if z > cz else c
            if (
                ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 <= 1
                and side * x >= self.mediastinum_half_width
                and z >= dome - self.dome_curvature * ((x - cx) ** 2 + (y - cy - 10) ** 2)
            ):
                return index
        return 0


@dataclass(frozen=True)
class Phantom:
    anatomy: Anatomy
    ribs: tuple[Tube, ...]
    vessels: tuple[Tube, ...]
    airways: tuple[Airway, ...]
    nodules: tuple[Nodule, ...]
    lung_hu: float
    blood_hu: float  # vessels, heart and aorta: about 40 without contrast, 150-350 with
    stomach_gas: tuple[Point, float] | None  # centre and radius of a gas bubble under the left dome
    hard_negatives: tuple[Point, ...] = field(default=(), repr=False)  # vessel forks, airway walls...


@dataclass(frozen=True)
class Distribution:
    """Ranges a phantom is drawn from (uniform unless said otherwise)."""

    body_x: tuple[float, float] = (138.0, 168.0)  # body semi-axis, left-right
    body_ratio: tuple[float, float] = (0.68, 0.8)  # anterior-posterior / left-right
    fat_mm: tuple[float, float] = (6.0, 22.0)
    lung_height: tuple[float, float] = (100.0, 130.0)  # semi-axis below the centre
    heart_scale: tuple[float, float] = (0.9, 1.1)
    contrast_probability: float = 0.4
    lung_hu: tuple[float, float] = (-880.0, -820.0)
    vessel_root_mm: tuple[float, float] = (4.2, 6.5)
    vessel_segments: int = 900  # per tree
    nodules: tuple[int, int] = (0, 6)
    nodule_mm: tuple[float, float] = (3.0, 24.0)
    nodule_hu: tuple[float, float] = (-30.0, 80.0)
    kinds: tuple[float, float, float] = (0.4, 0.3, 0.3)  # isolated, juxtapleural, juxtavascular
    stomach_gas_probability: float = 0.5


TRAINING = Distribution()


def random_phantom(
    seed: int,
    *,
    z_center: float = 0.0,
    distribution: Distribution = TRAINING,
    nodule_count: int | None = None,
    nodule_diameters: tuple[float, ...] | None = None,
) -> Phantom:
    """A phantom drawn from `seed` with its lungs centred on `z_center`."""
    d = distribution
    rng = np.random.default_rng(seed)
    anatomy = _anatomy(rng, d, z_center)
    ribs = _ribs(rng, anatomy)
    vessels: list[Tube] = []
    forks: list[Point] = []
    for lung in (1, 2):
        for root in _vessel_roots(rng, anatomy, lung):
            segments, tree_forks = _tree(
                rng, anatomy, lung, root, float(rng.uniform(*d.vessel_root_mm)), d.vessel_segments, 0.6
            )
            vessels += segments
            forks += tree_forks
    airways = _airways(rng, anatomy)
    contrast = bool(rng.random() < d.contrast_probability)
    if nodule_diameters is None:
        count = int(rng.integers(d.nodules[0], d.nodules[1] + 1)) if nodule_count is None else nodule_count
        # Sizes: half log-uniform over the range, half concentrated on 4-12 mm where detection is hard.
        nodule_diameters = tuple(
            float(
                math.exp(rng.uniform(math.log(d.nodule_mm[0]), math.log(d.nodule_mm[1])))
                if rng.random() < 0.5
                else rng.uniform(max(4.0, d.nodule_mm[0]), min(12.0, d.nodule_mm[1]))
            )
            for _ in range(count)
        )
    nodules = _nodules(rng, anatomy, vessels, nodule_diameters, d)
    gas = None
    if rng.random() < d.stomach_gas_probability:
        lx, ly, _ = anatomy.lung_centers[1]
        radius = float(rng.uniform(15, 30))
        gas = ((lx + float(rng.uniform(-10, 10)), ly - 15, anatomy.dome_tops[1] - radius - 8), radius)
    airway_points = [a.segment.start for a in airways if a.segment.radius_mm < 4]
    # Vessels seen across, where they look most like a nodule on a slice: midpoints of thicker segments.
    midpoints = [_tuple((np.asarray(v.start) + np.asarray(v.end)) / 2) for v in vessels if v.radius_mm >= 1.5]
    return Phantom(
        anatomy=anatomy,
        ribs=ribs,
        vessels=tuple(vessels),
        airways=tuple(airways),
        nodules=tuple(nodules),
        lung_hu=float(rng.uniform(*d.lung_hu)),
        blood_hu=float(rng.uniform(150, 350)) if contrast else float(rng.uniform(30, 50)),
        stomach_gas=gas,
        hard_negatives=tuple(forks + midpoints + airway_points + _pleural_points(rng, anatomy, 60)),
    )


def _anatomy(rng: np.random.Generator, d: Distribution, z_center: float) -> Anatomy:
    ax = float(rng.uniform(*d.body_x))
    ay = ax * float(rng.uniform(*d.body_ratio))
    fat = float(rng.uniform(*d.fat_mm))
    muscle = float(rng.uniform(8, 16))
    wall = fat + muscle + 12  # ribs and intercostal space
    cax, cay = ax - wall, ay - wall
    mediastinum = float(rng.uniform(14, 24))
    height = float(rng.uniform(*d.lung_height))
    centers = []
    semis = []
    for side in (-1.0, 1.0):
        a = (cax - mediastinum) / 2 + 8
        cx = side * (mediastinum + a - 8)
        centers.append((cx, float(rng.uniform(-6, 6)), z_center + float(rng.uniform(-6, 6))))
        semis.append((a * float(rng.uniform(0.95, 1.08)), cay * float(rng.uniform(0.95, 1.05)), height))
    scale = float(rng.uniform(*d.heart_scale))
    heart_semi = (55 * scale * ax / 150, 45 * scale * ay / 110, 50 * scale)
    heart = (
        float(rng.uniform(5, 20)),
        -cay + heart_semi[1] + float(rng.uniform(-5, 10)),
        z_center - height * 0.45 + float(rng.uniform(-10, 10)),
    )
    aorta_radius = float(rng.uniform(10, 15))
    descending_x = mediastinum + aorta_radius * 0.2
    descending_y = cay * 0.45
    arch_z = z_center + height * 0.45
    aorta = (
        Tube((10.0, -cay * 0.2, heart[2]), (5.0, -cay * 0.1, arch_z), aorta_radius),
        Tube((5.0, -cay * 0.1, arch_z), (descending_x, descending_y, arch_z), aorta_radius),
        Tube(
            (descending_x, descending_y, arch_z), (descending_x, descending_y, z_center - 300), aorta_radius
        ),
    )
    dome_right = z_center - height * float(rng.uniform(0.45, 0.7))
    return Anatomy(
        z_center=z_center,
        body_semi_axes=(ax, ay),
        fat_mm=fat,
        muscle_mm=muscle,
        cavity_semi_axes=(cax, cay),
        lung_centers=(centers[0], centers[1]),  # type: ignore[arg-type]
        lung_semi_axes=(semis[0], semis[1]),  # type: ignore[arg-type]
        apex_ratio=float(rng.uniform(0.75, 0.95)),
        mediastinum_half_width=mediastinum,
        heart_center=heart,
        heart_semi_axes=heart_semi,
        aorta=aorta,
        dome_tops=(dome_right, dome_right - float(rng.uniform(5, 20))),
        dome_curvature=float(rng.uniform(0.006, 0.012)),
        spine_center_y=ay - fat - muscle - 18,
        spine_radius=float(rng.uniform(15, 20)),
    )


def _ribs(rng: np.random.Generator, anatomy: Anatomy) -> tuple[Tube, ...]:
    """Pairs of ribs hugging the cavity wall, from the spine round to the front, sloping down anteriorly."""
    cax, cay = anatomy.cavity_semi_axes
    top = anatomy.z_center + anatomy.lung_semi_axes[0][2] * anatomy.apex_ratio + 10
    spacing = float(rng.uniform(20, 27))
    pieces: list[Tube] = []
    z0 = top
    while z0 > anatomy.z_center - 260:
        radius = float(rng.uniform(3.5, 5.5))
        drop = float(rng.uniform(25, 45))
        for side in (-1.0, 1.0):
            # Angle from posterior (+y, beside the spine) round the side to anterior (-y, the cartilage).
            angles = np.linspace(0.42 * math.pi, -0.4 * math.pi, 14)
            points = [
                (
                    side * (cax + radius + 2) * math.cos(t),
                    (cay + radius + 2) * math.sin(t),
                    z0 - drop * (0.42 * math.pi - t) / (0.82 * math.pi),
                )
                for t in angles
            ]
            for p, q in itertools.pairwise(points):
                pieces.append(Tube(p, q, radius))
        z0 -= spacing
    return tuple(pieces)


def _vessel_roots(rng: np.random.Generator, anatomy: Anatomy, lung: int) -> list[tuple[Point, np.ndarray]]:
    """Hilum points of a lung (an arterial and a venous trunk) and their initial directions."""
    side = -1.0 if lung == 1 else 1.0
    _, cy, cz = anatomy.lung_centers[lung - 1]
    roots = []
    for dz in (float(rng.uniform(5, 25)), float(rng.uniform(-30, -10))):
        start = (side * (anatomy.mediastinum_half_width + 2.0), cy + float(rng.uniform(-15, 10)), cz + dz)
        for _ in range(40):  # move laterally out of the heart's or the aorta's way into the lung
            if anatomy.lung_of(start) == lung:
                break
            start = (start[0] + side * 2.0, start[1], start[2])
        direction = np.array([side * 1.0, float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.3, 0.3))])
        roots.append((start, direction / np.linalg.norm(direction)))
    return roots


def _tree(
    rng: np.random.Generator,
    anatomy: Anatomy,
    lung: int,
    root: tuple[Point, np.ndarray],
    radius: float,
    max_segments: int,
    min_radius: float,
) -> tuple[list[Tube], list[Point]]:
    """A branching tree grown breadth-first from `root` inside one lung: each segment forks into a main
    branch (0.8-0.95 of the radius) and a side branch whose radius follows Murray's law (r^3 = r1^3 + r2^3).
    Returns the segments and the fork points."""
    segments: list[Tube] = []
    forks: list[Point] = []
    queue = [(np.asarray(root[0], float), root[1], radius)]
    centre = np.asarray(anatomy.lung_centers[lung - 1], float)
    while queue and len(segments) < max_segments:
        start, direction, r = queue.pop(0)
        length = r * float(rng.uniform(3, 6)) + 2
        end = start + direction * length
        for _ in range(6):  # turn towards the lung when heading out of it
            if anatomy.lung_of(_tuple(end)) == lung:
                break
            turned = _rotate(rng, direction, math.radians(float(rng.uniform(20, 70))))
            if anatomy.lung_of(_tuple(start + turned * length)) == lung:
                direction, end = turned, start + turned * length
        if anatomy.lung_of(_tuple(end)) != lung:
            # Shorten to the lung boundary (a few halvings) and stop this branch there.
            for _ in range(4):
                length /= 2
                end = start + direction * length
                if anatomy.lung_of(_tuple(end)) == lung:
                    segments.append(Tube(_tuple(start), _tuple(end), r))
                    break
            continue
        segments.append(Tube(_tuple(start), _tuple(end), r))
        main = r * float(rng.uniform(0.8, 0.95))
        side_r = (r**3 - main**3) ** (1 / 3)
        outward = end - centre
        outward /= max(float(np.linalg.norm(outward)), 1e-6)
        for child, angle in ((main, rng.uniform(5, 20)), (side_r, rng.uniform(25, 55))):
            if child < min_radius:
                continue
            # A few tries for a direction that stays in the lung (branches fan out into the lung).
            for _ in range(4):
                new = _rotate(rng, direction, math.radians(float(angle))) + 0.2 * outward
                new /= np.linalg.norm(new)
                if anatomy.lung_of(_tuple(end + new * (child * 4 + 2))) == lung:
                    break
            queue.append((end, new, child))
        if side_r >= 1.2:
            forks.append(_tuple(end))
    return segments, forks


def _airways(rng: np.random.Generator, anatomy: Anatomy) -> list[Airway]:
    """Trachea down to the carina, main bronchi to each hilum, then a bronchial tree per lung."""
    cay = anatomy.cavity_semi_axes[1]
    carina = np.array([0.0, -cay * 0.05, anatomy.z_center + float(rng.uniform(15, 30))])
    trachea = Tube((0.0, -cay * 0.15, anatomy.z_center + 300), _tuple(carina), float(rng.uniform(7, 9.5)))
    airways = [Airway(trachea, 2.0)]
    for lung in (1, 2):
        side = -1.0 if lung == 1 else 1.0
        _, cy, cz = anatomy.lung_centers[lung - 1]
        hilum = np.array([side * (anatomy.mediastinum_half_width + 4.0), cy - 5, cz + 5])
        main_radius = float(rng.uniform(5, 6.5))
        airways.append(Airway(Tube(_tuple(carina), _tuple(hilum), main_radius), 1.5))
        direction = np.array([side, -0.2, -0.3])
        segments, _ = _tree(
            rng, anatomy, lung, (_tuple(hilum), direction / np.linalg.norm(direction)), 4.0, 60, 1.0
        )
        airways += [Airway(s, 0.3 + 0.2 * s.radius_mm) for s in segments]
    return airways


def _nodules(
    rng: np.random.Generator,
    anatomy: Anatomy,
    vessels: list[Tube],
    diameters: tuple[float, ...],
    d: Distribution,
) -> list[Nodule]:
    nodules: list[Nodule] = []
    big_vessels = [v for v in vessels if 1.0 <= v.radius_mm <= 4.0]
    for diameter in diameters:
        for _ in range(200):
            kind = str(rng.choice(["isolated", "juxtapleural", "juxtavascular"], p=list(d.kinds)))
            r = diameter / 2
            if kind == "juxtavascular" and big_vessels:
                vessel = big_vessels[int(rng.integers(len(big_vessels)))]
                t = float(rng.uniform(0.2, 0.8))
                on_axis = np.asarray(vessel.start) + t * (np.subtract(vessel.end, vessel.start))
                axis = np.subtract(vessel.end, vessel.start)
                offset = _rotate(rng, axis / np.linalg.norm(axis), math.pi / 2)
                centre = on_axis + offset * (vessel.radius_mm + 0.7 * r)
                ok = _clear_inside(anatomy, centre, r + 2)
            elif kind == "juxtapleural":
                centre, ok = _on_pleura(rng, anatomy, r)
            else:
                centre = _point_in_lung(rng, anatomy)
                ok = _clear_inside(anatomy, centre, r + 3)
            if ok and all(
                np.linalg.norm(centre - np.asarray(n.center_lps)) > r + n.diameter_mm / 2 + 8 for n in nodules
            ):
                stretch = rng.uniform(0.85, 1.15, 3)
                stretch /= np.prod(stretch) ** (1 / 3)  # keep the equivalent diameter
                semi = tuple(float(r * s) for s in stretch)
                nodules.append(Nodule(_tuple(centre), semi, float(rng.uniform(*d.nodule_hu)), kind))  # type: ignore[arg-type]
                break
    return nodules


def _point_in_lung(rng: np.random.Generator, anatomy: Anatomy) -> np.ndarray:
    lung = int(rng.integers(1, 3))
    centre = np.asarray(anatomy.lung_centers[lung - 1])
    semi = np.asarray(anatomy.lung_semi_axes[lung - 1])
    for _ in range(1000):
        point = centre + rng.uniform(-1, 1, 3) * semi
        if anatomy.lung_of(_tuple(point)):
            return point
    return centre


def _sphere_points(centre: np.ndarray, radius: float) -> np.ndarray:
    directions = np.array(
        [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]
        + [[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)],
        float,
    )
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return centre + radius * directions


def _clear_inside(anatomy: Anatomy, centre: np.ndarray, radius: float) -> bool:
    points = _sphere_points(centre, radius)
    return bool(np.all(anatomy.in_lungs(points[:, 0], points[:, 1], points[:, 2]) > 0))


def _on_pleura(rng: np.random.Generator, anatomy: Anatomy, r: float) -> tuple[np.ndarray, bool]:
    """A nodule centre 0.6 radius inside the lung boundary along a random ray: attached to the wall."""
    start = _point_in_lung(rng, anatomy)
    direction = rng.normal(size=3)
    direction[2] *= 0.3  # mostly the lateral and posterior walls
    direction /= np.linalg.norm(direction)
    step = 0.0
    while anatomy.lung_of(_tuple(start + direction * (step + 1.0))) and step < 300:
        step += 1.0
    centre = start + direction * (step - 0.6 * r)
    return centre, step > r and bool(anatomy.lung_of(_tuple(centre)))


def _pleural_points(rng: np.random.Generator, anatomy: Anatomy, count: int) -> list[Point]:
    points = []
    for _ in range(count):
        centre, ok = _on_pleura(rng, anatomy, 0.0)
        if ok:
            points.append(_tuple(centre))
    return points


def _rotate(rng: np.random.Generator, direction: np.ndarray, angle: float) -> np.ndarray:
    """`direction` turned by `angle` about a random axis perpendicular to it."""
    axis = np.cross(direction, rng.normal(size=3))
    axis /= max(float(np.linalg.norm(axis)), 1e-9)
    rotated = direction * math.cos(angle) + np.cross(axis, direction) * math.sin(angle)
    return rotated / np.linalg.norm(rotated)


def _carve_tube(
    inside: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray, tube: Tube, radius: float
) -> None:
    """Clear `inside` within `radius` of the tube (evaluated only near the tube: it is a small part)."""
    lo = np.minimum(tube.start, tube.end) - radius
    hi = np.maximum(tube.start, tube.end) + radius
    near = inside & (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2])
    index = np.nonzero(near)
    if index[0].size:
        close = _tube_distance2(x[index], y[index], z[index], tube) <= radius**2
        inside[tuple(i[close] for i in index)] = False


def _tube_distance2(x: np.ndarray, y: np.ndarray, z: np.ndarray, tube: Tube) -> np.ndarray:
    a = tube.start
    d = (tube.end[0] - a[0], tube.end[1] - a[1], tube.end[2] - a[2])
    px, py, pz = x - a[0], y - a[1], z - a[2]
    t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / (d[0] ** 2 + d[1] ** 2 + d[2] ** 2), 0, 1)
    return (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2


def _tuple(v: np.ndarray) -> Point:
    return (float(v[0]), float(v[1]), float(v[2]))
