"""Evaluate a bundle on held-out phantoms: `python -m triage.training.evaluate [--scans N] [--record]`.

Each held-out phantom (seeds 10000+, never used in training) is rendered on a native-like CT grid
(0.7 x 0.7 mm, 1.25 mm slices) and run through the pipeline's own preprocessing, inference and
post-processing. A finding hits a nodule when its centre lies within max(radius, 4 mm) of the nodule's
centre. Sensitivity counts nodules >= 6 mm; a false positive is a finding that hits no nodule (findings
on nodules under 6 mm are neither hits nor false positives, as in LUNA16-style scoring).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer

from triage.pipeline import TriagePipeline
from triage.training.phantom import Phantom, random_phantom, render
from triage.training.synthetic_series import series_grid
from triage.training.train import REFERENCE_BUNDLE
from triage.volume import Volume

EVALUATION_SEED = 10_000
MIN_DIAMETER_MM = 6.0

app = typer.Typer(add_completion=False)


def hit(finding_position: tuple[float, float, float], phantom_nodule: Any) -> bool:
    distance = float(np.linalg.norm(np.subtract(finding_position, phantom_nodule.center_lps)))
    return distance <= max(phantom_nodule.diameter_mm / 2, 4.0)


def phantom_volume(phantom: Phantom, seed: int, *, rows: int = 512, count: int = 240) -> Volume:
    grid = series_grid(rows, rows, count, 0.7, 1.25)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(grid.spacing_mm)
    affine[:3, 3] = grid.origin_lps
    return Volume(render(phantom, grid, seed=seed), affine, [])


def evaluate(pipeline: TriagePipeline, scans: int = 20, first_seed: int = EVALUATION_SEED) -> dict[str, Any]:
    count = 240
    z_center = -(count - 1) * 1.25 / 2
    detected = total = false_positives = 0
    size_errors: list[float] = []
    position_errors: list[float] = []
    seconds = 0.0
    missed: list[float] = []
    for seed in range(first_seed, first_seed + scans):
        phantom = random_phantom(seed, z_center=z_center)
        volume = phantom_volume(phantom, seed, count=count)
        started = time.perf_counter()
        findings = pipeline.analyse(volume)
        seconds += time.perf_counter() - started
        for finding in findings:
            if not any(hit(finding.position_lps, n) for n in phantom.nodules):
                false_positives += 1
        for nodule in phantom.nodules:
            if nodule.diameter_mm < MIN_DIAMETER_MM:
                continue
            total += 1
            hits = [f for f in findings if hit(f.position_lps, nodule)]
            if hits:
                detected += 1
                best = max(hits, key=lambda f: f.score)
                size_errors.append(best.diameter_mm - nodule.diameter_mm)
                position_errors.append(
                    float(np.linalg.norm(np.subtract(best.position_lps, nodule.center_lps)))
                )
            else:
                missed.append(round(nodule.diameter_mm, 1))
    return {
        "scans": scans,
        "seeds": [first_seed, first_seed + scans - 1],
        "nodules_ge_6mm": total,
        "sensitivity_ge_6mm": round(detected / total, 4) if total else None,
        "false_positives_per_scan": round(false_positives / scans, 3),
        "missed_diameters_mm": missed,
        "diameter_error_mm_mean": round(float(np.mean(size_errors)), 2) if size_errors else None,
        "diameter_error_mm_abs_mean": round(float(np.mean(np.abs(size_errors))), 2) if size_errors else None,
        "position_error_mm_mean": round(float(np.mean(position_errors)), 2) if position_errors else None,
        "seconds_per_scan_analyse": round(seconds / scans, 2),
        "grid": "512 x 512 x 240, 0.7 x 0.7 x 1.25 mm",
    }


@app.command()
def main(
    bundle: Path = typer.Option(REFERENCE_BUNDLE, help="bundle directory"),
    scans: int = typer.Option(20, help="held-out phantoms (seeds 10000...)"),
    threads: int = typer.Option(2),
    record: bool = typer.Option(False, help="write the figures into the bundle's metadata.json"),
) -> None:
    torch.set_num_threads(threads)
    pipeline = TriagePipeline.from_bundle(bundle, device="cpu")
    report = evaluate(pipeline, scans)
    typer.echo(json.dumps(report, indent=2))
    if record:
        from triage.training import bundle_files

        metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
        bundle_files.write_configs(bundle, training=metadata.get("training", {}), evaluation=report)


if __name__ == "__main__":
    app()
