"""Regenerate the reference bundle's weights: `python -m triage.training.train [--steps N] [--seed S]`.

Deterministic for a given seed, torch version and thread count (all recorded in metadata.json). The pool
of training phantoms is rendered at 1 mm and averaged to the model's 2 mm grid (partial volume), with
noise drawn at the fine size, which matches what area-resampling a native CT does at inference time.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from monai.bundle import ConfigParser
from monai.losses import DiceLoss

from triage.training import bundle_files
from triage.training.phantom import Grid, nodule_fraction, random_phantom, render

REFERENCE_BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / bundle_files.BUNDLE_NAME
HU_MIN, HU_MAX = -1000.0, 400.0

app = typer.Typer(add_completion=False)


def lung_grid(seed: int, margin_mm: float = 16.0) -> tuple[Any, Grid]:
    """A training phantom (1-6 nodules) and the coarse grid around its lungs."""
    phantom = random_phantom(seed, nodule_count=1 + seed % 6)
    s = bundle_files.SPACING_MM
    lo = (
        np.min([np.subtract(lung.center_lps, lung.semi_axes_mm) for lung in phantom.lungs], axis=0)
        - margin_mm
    )
    hi = np.max([np.add(lung.center_lps, lung.semi_axes_mm) for lung in phantom.lungs], axis=0) + margin_mm
    shape = tuple(max(int(np.ceil((b - a) / s)), bundle_files.PATCH) for a, b in zip(lo, hi, strict=True))
    return phantom, Grid(tuple(float(v) for v in lo), (s, s, s), shape)  # type: ignore[arg-type]


def scale(hu: np.ndarray) -> np.ndarray:
    return np.clip((hu - HU_MIN) / (HU_MAX - HU_MIN), 0, 1).astype(np.float32)


def build_pool(seeds: range) -> list[tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]]:
    pool = []
    for seed in seeds:
        phantom, grid = lung_grid(seed)
        image = scale(render(phantom, grid, seed=seed, supersample=2)).astype(np.float16)
        target = nodule_fraction(phantom, grid, supersample=2).astype(np.float16)
        centres = [
            tuple(
                round((c - o) / s)
                for c, o, s in zip(n.center_lps, grid.origin_lps, grid.spacing_mm, strict=True)
            )
            for n in phantom.nodules
        ]
        pool.append((image, target, centres))
    return pool  # type: ignore[return-value]


def sample_batch(
    pool: list[tuple[np.ndarray, np.ndarray, list[tuple[int, int, int]]]],
    rng: np.random.Generator,
    batch: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    p = bundle_files.PATCH
    images, targets = [], []
    for _ in range(batch):
        image, target, centres = pool[int(rng.integers(len(pool)))]
        if centres and rng.random() < 0.5:  # half the patches around a nodule, at a random offset
            c = np.asarray(centres[int(rng.integers(len(centres)))]) + rng.integers(-p // 3, p // 3 + 1, 3)
            start = np.clip(c - p // 2, 0, np.asarray(image.shape) - p)
        else:
            start = np.asarray([int(rng.integers(0, n - p + 1)) for n in image.shape])
        sl = tuple(slice(int(a), int(a) + p) for a in start)
        x, y = image[sl].astype(np.float32), target[sl].astype(np.float32)
        for axis in range(3):
            if rng.random() < 0.5:
                x, y = np.flip(x, axis), np.flip(y, axis)
        # Contrast/brightness jitter and extra noise, so the model does not key on one exact HU scale.
        jittered = (
            x * rng.uniform(0.93, 1.07)
            + rng.uniform(-0.03, 0.03)
            + rng.normal(0, rng.uniform(0, 0.015), x.shape)
        )
        images.append(np.ascontiguousarray(jittered, dtype=np.float32))
        targets.append(np.ascontiguousarray(y))
    return torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(np.stack(targets)[:, None])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@app.command()
def main(
    steps: int = typer.Option(2000, help="optimiser steps"),
    seed: int = typer.Option(20240315, help="seed for phantoms, sampling and initial weights"),
    phantoms: int = typer.Option(48, help="training phantoms (seeds 0..N-1; evaluation uses 10000+)"),
    batch: int = typer.Option(8),
    threads: int = typer.Option(2, help="torch CPU threads (recorded: results depend on it bitwise)"),
    bundle: Path = typer.Option(REFERENCE_BUNDLE, help="bundle directory to (re)write"),
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
    pool = build_pool(range(phantoms))
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
        "torch_threads": threads,
        "torch_version": torch.__version__,
        "seconds": round(elapsed, 1),
        "model_sha256": sha256(weights),
        "command": "python -m triage.training.train",
    }
    previous = json.loads((bundle / "configs" / "metadata.json").read_text()).get("evaluation")
    bundle_files.write_configs(bundle, training=training, evaluation=previous)
    typer.echo(json.dumps(training, indent=2))


if __name__ == "__main__":
    app()
