"""Regenerate the reference bundle's weights: `python -m triage.training.train [--steps N] [--seed S]`.

Deterministic for a given seed, torch version and thread count (all recorded in metadata.json).

Each training phantom (triage.training.phantom, TRAINING distribution) is rendered around its lungs the
way a scanner would (random in-plane spacing, slice thickness, kernel sharpness and noise:
triage.training.render) and brought to the model's grid by the bundle's own AreaSpacing transform, so
the network sees what inference feeds it. Patches are drawn around nodules, around hard negatives
(vessel forks, airway walls, the pleura next to ribs) and anywhere; the target is the fraction of each
voxel inside a nodule.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.losses import DiceLoss

from triage.training import bundle_files
from triage.training.phantom import TRAINING, Phantom, random_phantom
from triage.training.render import Grid, Scan, nodule_fraction, render
from triage.transforms import AreaSpacing

REFERENCE_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / bundle_files.BUNDLE_NAME
HU_MIN, HU_MAX = bundle_files.HU_WINDOW

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


def model_grid_sample(seed: int, ranges: ScanRanges = ScanRanges()) -> dict[str, Any]:
    """One training phantom on the model's grid: scaled image, nodule fraction, and the voxel indices of
    its nodules and hard negatives."""
    rng = np.random.default_rng(seed + 1_000_000)
    phantom = random_phantom(seed, distribution=TRAINING, nodule_count=int(seed % 6))
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
        "target": nodule_fraction(phantom, model_grid).astype(np.float16),
        "nodules": index(n.center_lps for n in phantom.nodules),
        "negatives": index(phantom.hard_negatives),
    }


def sample_batch(
    pool: list[dict[str, Any]], rng: np.random.Generator, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    p = bundle_files.PATCH
    images, targets = [], []
    for _ in range(batch):
        item = pool[int(rng.integers(len(pool)))]
        image, target = item["image"], item["target"]
        draw = rng.random()
        points = item["nodules"] if draw < 0.3 else item["negatives"] if draw < 0.75 else []
        if points:
            centre = np.asarray(points[int(rng.integers(len(points)))]) + rng.integers(-p // 3, p // 3 + 1, 3)
            start = np.clip(centre - p // 2, 0, np.asarray(image.shape) - p)
        else:
            start = np.asarray([int(rng.integers(0, max(n - p, 0) + 1)) for n in image.shape])
        region = tuple(slice(int(a), int(a) + p) for a in start)
        x, y = _pad(image[region].astype(np.float32), p), _pad(target[region].astype(np.float32), p)
        for axis in range(3):
            if rng.random() < 0.5:
                x, y = np.flip(x, axis), np.flip(y, axis)
        jittered = x * rng.uniform(0.95, 1.05) + rng.uniform(-0.02, 0.02)
        images.append(np.ascontiguousarray(jittered, dtype=np.float32))
        targets.append(np.ascontiguousarray(y))
    return torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(np.stack(targets)[:, None])


def _pad(array: np.ndarray, size: int) -> np.ndarray:
    """Volumes smaller than a patch along an axis are padded with air (0 after scaling)."""
    pad = [(0, max(size - n, 0)) for n in array.shape]
    return np.pad(array, pad) if any(b for _, b in pad) else array


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@app.command()
def main(
    steps: Annotated[int, typer.Option(help="optimiser steps")] = 3000,
    seed: Annotated[int, typer.Option(help="seed for sampling and initial weights")] = 20240315,
    phantoms: Annotated[
        int, typer.Option(help="training phantoms (seeds 0..N-1; evaluation uses other seeds)")
    ] = 56,
    batch: Annotated[int, typer.Option()] = 8,
    threads: Annotated[
        int, typer.Option(help="torch CPU threads (recorded: results depend on it bitwise)")
    ] = 2,
    bundle: Annotated[Path, typer.Option(help="bundle directory to (re)write")] = REFERENCE_BUNDLE,
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
    pool = [model_grid_sample(s) for s in range(phantoms)]
    pool_seconds = time.perf_counter() - started
    typer.echo(f"pool of {phantoms} phantoms in {pool_seconds:.0f} s")
    optimiser = torch.optim.AdamW(network.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    dice = DiceLoss(sigmoid=True, batch=True)
    bce = torch.nn.BCEWithLogitsLoss()
    network.train()
    running = 0.0
    for step in range(1, steps + 1):
        x, y = sample_batch(pool, rng, batch)
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
