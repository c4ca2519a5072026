"""Regenerate the reference bundle's weights: `python -m triage.training.train [--steps N] [--seed S]`.

Deterministic for a given seed, torch version and thread count (all recorded in metadata.json).

Each training phantom (triage.training.phantom, TRAINING distribution) is rendered around its lungs the
way a scanner would (random in-plane spacing, slice thickness, kernel sharpness and noise:
triage.training.render) and brought to the model's grid by the bundle's own AreaSpacing transform, so
the network sees what inference feeds it. Patches are drawn around nodules, around hard negatives
(vessel forks, airway walls, the pleura next to ribs) and anywhere; nodules on the pleura or on a vessel
are drawn twice as often as isolated ones, and `--planted-share` plants more against hard negatives as
patches are drawn (off by default). Patches are augmented beyond the rendered ranges (kernel, noise,
intensity, contrast, nodule density). The target is the fraction of each voxel inside a nodule.
`--pool-cache DIR` keeps the rendered phantoms (most of a run's time) for the next run.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.losses import DiceLoss
from monai.transforms import (
    Compose,
    RandAdjustContrast,
    RandGaussianNoise,
    RandGaussianSharpen,
    RandGaussianSmooth,
    RandScaleIntensity,
    RandShiftIntensity,
)

from triage.training import bundle_files
from triage.training.phantom import TRAINING, Nodule, Phantom, random_phantom
from triage.training.render import Grid, Scan, nodule_fraction, render
from triage.transforms import AreaSpacing

REFERENCE_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / bundle_files.BUNDLE_NAME
HU_MIN, HU_MAX = bundle_files.HU_WINDOW
DENSITY_SHIFT = (-70 / (HU_MAX - HU_MIN), 40 / (HU_MAX - HU_MIN))  # on the scaled image
# Bump when the phantoms, their rendering or the nodule counts change: cached samples then no longer apply.
POOL_VERSION = "pool2"
PLANTED_DIAMETER_MM = (4.0, 16.0)

app = typer.Typer(add_completion=False)


@dataclass(frozen=True)
class ScanRanges:
    """Acquisition settings drawn per phantom (training; evaluation draws from other ranges)."""

    pixel_mm: tuple[float, float] = (0.68, 0.86)
    thickness_mm: tuple[float, ...] = (1.0, 1.25, 1.5, 2.0)
    psf_mm: tuple[float, float] = (0.4, 0.85)
    sharpen: tuple[float, float] = (0.0, 0.7)
    noise_hu: tuple[float, float] = (10.0, 45.0)

    def draw(self, rng: np.random.Generator) -> tuple[float, Scan]:
        sharpen = float(rng.uniform(*self.sharpen)) if rng.random() < 0.5 else 0.0
        scan = Scan(
            thickness_mm=float(rng.choice(self.thickness_mm)),
            psf_mm=float(rng.uniform(*self.psf_mm)),
            sharpen=sharpen,
            noise_hu=float(rng.uniform(*self.noise_hu)),
        )
        return float(rng.uniform(*self.pixel_mm)), scan


@dataclass(frozen=True)
class PatchDraws:
    """Shares of the patch draws: around a phantom's nodules, around a hard negative with a nodule planted
    against it (plant_nodule), around a hard negative as it is; the rest anywhere."""

    nodules: float = 0.4
    planted: float = 0.0
    negatives: float = 0.35

    def of(self, draw: float) -> str:
        """The kind of patch for a uniform draw in [0, 1)."""
        for kind, upper in (
            ("nodules", self.nodules),
            ("planted", self.nodules + self.planted),
            ("negatives", self.nodules + self.planted + self.negatives),
        ):
            if draw < upper:
                return kind
        return "anywhere"


def lung_box(phantom: Phantom, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    anatomy = phantom.anatomy
    lo = np.min(
        [np.subtract(c, s) for c, s in zip(anatomy.lung_centers, anatomy.lung_semi_axes, strict=True)], 0
    )
    hi = np.max([np.add(c, s) for c, s in zip(anatomy.lung_centers, anatomy.lung_semi_axes, strict=True)], 0)
    lo[2] = min(lo[2], *anatomy.dome_tops) - 20
    return lo - margin_mm, hi + margin_mm


def scale(hu: np.ndarray | torch.Tensor) -> Any:
    return ((hu - HU_MIN) / (HU_MAX - HU_MIN)).clip(0, 1)


def nodule_count(seed: int) -> int:
    """Nodules in training phantom `seed`: none in one phantom of six (they teach what a clear scan looks
    like), else 2 to 10; nodules are the scarce class, and many per phantom cost no extra rendering."""
    return 2 * (seed % 6)


def model_grid_sample(seed: int, ranges: ScanRanges = ScanRanges()) -> dict[str, Any]:
    """One training phantom on the model's grid: scaled image, nodule fraction, and the voxel indices of
    its nodules (those on the pleura or on a vessel listed twice: the hard ones) and hard negatives."""
    rng = np.random.default_rng(seed + 1_000_000)
    phantom = random_phantom(seed, distribution=TRAINING, nodule_count=nodule_count(seed))
    pixel, scan = ranges.draw(rng)
    lo, hi = lung_box(phantom, 24.0)
    spacing = (pixel, pixel, scan.thickness_mm * float(rng.uniform(0.7, 1.0)))
    shape = tuple(int(np.ceil((b - a) / s)) for a, b, s in zip(lo, hi, spacing, strict=True))
    grid = Grid(tuple(float(v) for v in lo), spacing, shape)  # type: ignore[arg-type]
    hu = render(phantom, grid, scan, seed=seed)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = lo
    resampled = AreaSpacing([bundle_files.SPACING_MM] * 3)(
        MetaTensor(torch.from_numpy(hu)[None], affine=torch.as_tensor(affine))
    )
    model_affine = np.asarray(resampled.affine, float)
    model_grid = Grid(
        tuple(float(v) for v in model_affine[:3, 3]),  # type: ignore[arg-type]
        tuple(float(v) for v in np.diag(model_affine)[:3]),  # type: ignore[arg-type]
        tuple(int(v) for v in resampled.shape[1:]),  # type: ignore[arg-type]
    )
    inverse = np.linalg.inv(model_affine)

    def index(points: Any) -> list[tuple[int, int, int]]:
        found = []
        for p in points:
            i = np.rint((inverse @ np.append(p, 1.0))[:3]).astype(int)
            if np.all(i >= 0) and np.all(i < model_grid.shape):
                found.append((int(i[0]), int(i[1]), int(i[2])))
        return found

    return {
        "image": scale(resampled.as_tensor()[0].numpy()).astype(np.float16),
        "target": nodule_fraction(phantom.nodules, model_grid).astype(np.float16),
        "nodules": index(
            n.center_lps for n in phantom.nodules for _ in range(1 if n.kind == "isolated" else 2)
        ),
        "negatives": index(phantom.hard_negatives),
    }


def cached_sample(seed: int, cache: Path | None) -> dict[str, Any]:
    """`model_grid_sample`, kept in `cache` (one .npz per seed) when given: rendering is most of a run."""
    path = None if cache is None else cache / f"{POOL_VERSION}-{bundle_files.SPACING_MM:g}mm-{seed}.npz"
    if path is not None and path.exists():
        with np.load(path) as stored:
            return {
                "image": stored["image"],
                "target": stored["target"],
                "nodules": [tuple(int(v) for v in i) for i in stored["nodules"]],
                "negatives": [tuple(int(v) for v in i) for i in stored["negatives"]],
            }
    sample = model_grid_sample(seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp.npz")
        np.savez(
            partial,
            image=sample["image"],
            target=sample["target"],
            nodules=np.asarray(sample["nodules"], np.int32).reshape(-1, 3),
            negatives=np.asarray(sample["negatives"], np.int32).reshape(-1, 3),
        )
        partial.replace(path)
    return sample


def intensity_augmentation(seed: int) -> Compose:
    """Scanner variation beyond the rendered ranges, on the scaled patch (1.0 = 1400 HU): softer and
    sharper kernels, more noise, denser or lighter lungs and tissue. It widens what the network accepts
    without drawing from the held-out distributions."""
    augment = Compose(
        [
            RandGaussianSmooth(sigma_x=(0.3, 0.9), sigma_y=(0.3, 0.9), sigma_z=(0.3, 0.9), prob=0.2),
            RandGaussianSharpen(prob=0.1),
            RandGaussianNoise(prob=0.3, std=0.03),
            RandShiftIntensity(offsets=0.03, prob=0.3),
            RandScaleIntensity(factors=0.08, prob=0.3),
            RandAdjustContrast(gamma=(0.8, 1.25), prob=0.2),
        ]
    )
    augment.set_random_state(seed)
    return augment


def sample_batch(
    pool: list[dict[str, Any]],
    rng: np.random.Generator,
    batch: int,
    augment: Compose | None = None,
    draws: PatchDraws = PatchDraws(),
) -> tuple[torch.Tensor, torch.Tensor]:
    p = bundle_files.PATCH
    images, targets = [], []
    for _ in range(batch):
        item = pool[int(rng.integers(len(pool)))]
        image, target = item["image"], item["target"]
        kind = draws.of(rng.random())
        points = item["nodules"] if kind == "nodules" else item["negatives"] if kind != "anywhere" else []
        point = np.asarray(points[int(rng.integers(len(points)))]) if points else None
        if point is not None:
            centre = point + rng.integers(-p // 3, p // 3 + 1, 3)
            start = np.clip(centre - p // 2, 0, np.asarray(image.shape) - p)
        else:
            start = np.asarray([int(rng.integers(0, max(n - p, 0) + 1)) for n in image.shape])
        region = tuple(slice(int(a), int(a) + p) for a in start)
        x, y = _pad(image[region].astype(np.float32), p), _pad(target[region].astype(np.float32), p)
        if kind == "planted" and point is not None:
            x, y = plant_nodule(x, y, point - start, rng)
        for axis in range(3):
            if rng.random() < 0.5:
                x, y = np.flip(x, axis), np.flip(y, axis)
        jittered = x * rng.uniform(0.95, 1.05) + rng.uniform(-0.02, 0.02)
        if augment is not None:
            if rng.random() < 0.5:
                # Nodule density: the phantoms' nodules are -30 to 80 HU; solid nodules in patients span
                # about -100 to 120 HU. Shifting by the nodule fraction keeps the partial volume right.
                jittered = jittered + rng.uniform(*DENSITY_SHIFT) * y
            jittered = np.asarray(augment(jittered[None]))[0].clip(0, 1)
        images.append(np.ascontiguousarray(jittered, dtype=np.float32))
        targets.append(np.ascontiguousarray(y))
    return torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(np.stack(targets)[:, None])


def plant_nodule(
    image: np.ndarray, target: np.ndarray, point: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A nodule planted against the structure at `point` (a vessel, an airway wall, the pleura), on the lung
    side: the phantoms hold a few hundred attached nodules, this gives the network thousands.

    The centre moves from `point` towards the darker side (the lung) by 0.3 to 1 radius, so the nodule
    ranges from half buried in the wall to just touching it. Its density is blended in by each voxel's
    nodule fraction over the local mean, so the scan's noise and the partial volume at its edge stay.
    """
    spacing = bundle_files.SPACING_MM
    radius = float(rng.uniform(*PLANTED_DIAMETER_MM)) / 2 / spacing  # voxels
    stretch = rng.uniform(0.85, 1.15, 3)
    semi = radius * stretch / np.prod(stretch) ** (1 / 3)
    centre = np.asarray(point, float) + _lung_side(image, point, rng) * radius * rng.uniform(0.3, 1.0)
    # In voxel units: a grid of 1 "mm" voxels over the patch.
    patch = Grid((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), image.shape)  # type: ignore[arg-type]
    fraction = nodule_fraction([Nodule(_point(centre), _point(semi), 0.0)], patch)
    if not fraction.any():
        return image, target
    hu = rng.uniform(*TRAINING.nodule_hu)
    local = torch.nn.functional.avg_pool3d(
        torch.from_numpy(np.ascontiguousarray(image))[None, None], 3, 1, 1, count_include_pad=False
    )[0, 0].numpy()
    planted = image + fraction * (float(scale(np.asarray(hu, np.float32))) - local)
    return planted.clip(0, 1).astype(np.float32), np.maximum(target, fraction)


def _point(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def _lung_side(image: np.ndarray, point: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unit vector from `point` towards the darker side of its 7-voxel neighbourhood (random if even)."""
    lo = np.clip(np.asarray(point) - 3, 0, np.asarray(image.shape))
    hi = np.clip(np.asarray(point) + 4, 0, np.asarray(image.shape))
    cube = image[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    offsets = np.stack(
        np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"), -1
    )
    if cube.size:
        darkness = (cube.mean() - cube)[..., None]
        direction = (darkness * (offsets - np.asarray(point))).sum(axis=(0, 1, 2))
        norm = float(np.linalg.norm(direction))
        if norm > 1e-3 * cube.size:
            return direction / norm
    direction = rng.normal(size=3)
    return direction / np.linalg.norm(direction)


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    """Volumes smaller than a patch along an axis are padded with air (0 after scaling)."""
    pad = [(0, max(size - n, 0)) for n in array.shape]
    return np.pad(array, pad) if any(b for _, b in pad) else array


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@app.command()
def main(
    steps: Annotated[int, typer.Option(help="optimiser steps")] = 7000,
    seed: Annotated[int, typer.Option(help="seed for sampling and initial weights")] = 20240315,
    phantoms: Annotated[
        int, typer.Option(help="training phantoms (seeds 0..N-1; evaluation uses other seeds)")
    ] = 120,
    batch: Annotated[int, typer.Option()] = 8,
    threads: Annotated[
        int, typer.Option(help="torch CPU threads (recorded: results depend on it bitwise)")
    ] = 2,
    bundle: Annotated[Path, typer.Option(help="bundle directory to (re)write")] = REFERENCE_BUNDLE,
    workers: Annotated[int, typer.Option(help="processes rendering the phantoms")] = 2,
    pool_cache: Annotated[
        Path | None, typer.Option(help="keep rendered phantoms here and reuse them (a directory)")
    ] = None,
    augment: Annotated[bool, typer.Option(help="intensity augmentation of the patches")] = True,
    nodule_share: Annotated[
        float, typer.Option(help="share of patches around a phantom's nodules")
    ] = PatchDraws.nodules,
    planted_share: Annotated[
        float, typer.Option(help="share of patches with a nodule planted against a hard negative")
    ] = PatchDraws.planted,
    negative_share: Annotated[
        float, typer.Option(help="share of patches around a hard negative as it is")
    ] = PatchDraws.negatives,
) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    bundle_files.write_configs(bundle, training={})
    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    network: torch.nn.Module = parser.get_parsed_content("network_def")
    # spawn: a forked child of a process whose OpenMP pool has started can hang in its first parallel op.
    with ProcessPoolExecutor(
        max_workers=max(1, workers),
        mp_context=get_context("spawn"),
        initializer=torch.set_num_threads,  # one thread per worker: the workers are the parallelism
        initargs=(1,),
    ) as executor:
        pool = list(executor.map(cached_sample, range(phantoms), [pool_cache] * phantoms))
    pool_seconds = time.perf_counter() - started
    typer.echo(f"pool of {phantoms} phantoms in {pool_seconds:.0f} s")
    optimiser = torch.optim.AdamW(network.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    augmentation = intensity_augmentation(seed) if augment else None
    draws = PatchDraws(nodule_share, planted_share, negative_share)
    dice = DiceLoss(sigmoid=True, batch=True)
    bce = torch.nn.BCEWithLogitsLoss()
    network.train()
    running = 0.0
    for step in range(1, steps + 1):
        x, y = sample_batch(pool, rng, batch, augmentation, draws)
        logits = network(x)
        loss = bce(logits, y) + dice(logits, y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running += float(loss.detach())
        if step % 100 == 0:
            typer.echo(
                f"step {step}/{steps} loss {running / 100:.4f} ({time.perf_counter() - started:.0f} s)"
            )
            running = 0.0
    weights = bundle / "models" / "model.pt"
    torch.save({k: v.detach().clone() for k, v in network.state_dict().items()}, weights)
    elapsed = time.perf_counter() - started
    training = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch,
        "patch_size": [bundle_files.PATCH] * 3,
        "phantom_seeds": [0, phantoms - 1],
        "phantom_distribution": "triage.training.phantom.TRAINING",
        "nodules_per_phantom": "2 * (seed % 6)",
        "patch_draws": draws.__dict__,
        **({"planted_diameter_mm": list(PLANTED_DIAMETER_MM)} if draws.planted else {}),
        "intensity_augmentation": augment,
        "scan_ranges": ScanRanges().__dict__,
        "torch_threads": threads,
        "torch_version": torch.__version__,
        "pool_seconds": round(pool_seconds, 1),
        "seconds": round(elapsed, 1),
        "model_sha256": sha256(weights),
        "command": "python -m triage.training.train",
    }
    # New weights: an earlier evaluation no longer applies (python -m triage.training.evaluate --record).
    bundle_files.write_configs(bundle, training=training, evaluation={})
    typer.echo(json.dumps(training, indent=2))


if __name__ == "__main__":
    app()
