"""Evaluate a bundle on held-out phantoms: `python -m triage.training.evaluate [--scans N] [--output F]`.

The held-out phantoms come from distributions the training never saw, not just new seeds:
- anatomy: small patients (narrow, deep chests, thin fat, short lungs, large heart) and large ones (wide,
  flat chests, thick fat, tall lungs, small heart); lung density and vessel calibre outside the training
  ranges; contrast more often;
- acquisition: 512 x 512 slices with in-plane spacing 0.56-0.66 mm (small patients) or 0.88-0.98 mm
  (large ones), slice thickness 0.625, 2.5 or 3 mm, smooth (PSF 0.9-1.2 mm) or very sharp (edge gain
  0.8-1.2) kernels, noise 50-75 HU or 5-9 HU (training: 0.68-0.86 mm, 1-2 mm slices, PSF 0.4-0.85 mm,
  gain up to 0.7, noise 10-45 HU);
- orientation: supine head first, feet first, prone and decubitus arrays (flipped / transposed axes with
  the matching affine), so the patient-coordinate path is exercised too.
One scan in five has no nodule (it must come out LOW). Nodule density is not a held-out difference: the
held-out nodules are -60 to 110 HU and the phantoms' -30 to 80 HU, but training shifts nodule density by
-70 to +40 HU (triage.training.train, DENSITY_SHIFT).

Scoring (LUNA16 style): a finding hits a nodule when its centre lies within max(radius, 4 mm) of the
nodule's centre. Sensitivity counts nodules >= 6 mm; a finding that hits no nodule (of any size) is a
false positive; several findings on one nodule count once. The FROC table gives the sensitivity at 1/8,
1/4, 1/2, 1, 2, 4 and 8 false positives per scan (candidates down to probability 0.1), and the operating
point is the bundle's own thresholds.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import typer

from triage.findings import Finding
from triage.pipeline import TriagePipeline
from triage.priority import Priority, priority_of
from triage.training.phantom import Distribution, Phantom, random_phantom
from triage.training.render import Grid, render
from triage.training.train import REFERENCE_BUNDLE, ScanRanges, lung_box
from triage.volume import Volume

EVALUATION_SEED = 50_000
MIN_DIAMETER_MM = 6.0
FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
CANDIDATE_LEVEL = (0.1, 0.1)  # probability threshold and min score for the FROC candidates

SMALL = Distribution(
    body_x=(112.0, 128.0),
    body_ratio=(0.82, 0.92),
    fat_mm=(2.0, 6.0),
    lung_height=(80.0, 98.0),
    heart_scale=(1.12, 1.25),
    contrast_probability=0.7,
    lung_hu=(-905.0, -885.0),
    vessel_root_mm=(3.5, 4.5),
    nodules=(1, 5),
    nodule_mm=(4.0, 22.0),
    nodule_hu=(-60.0, 110.0),
    kinds=(0.5, 0.25, 0.25),
)
LARGE = dataclasses.replace(
    SMALL,
    body_x=(172.0, 186.0),
    body_ratio=(0.6, 0.67),
    fat_mm=(24.0, 34.0),
    lung_height=(132.0, 148.0),
    heart_scale=(0.75, 0.88),
    lung_hu=(-815.0, -790.0),
    vessel_root_mm=(6.5, 7.5),
)
SMALL_SCAN = ScanRanges(
    pixel_mm=(0.56, 0.66), thickness_mm=(0.625, 2.5, 3.0), psf_mm=(0.9, 1.2), sharpen=(0.0, 0.0)
)
LARGE_SCAN = ScanRanges(
    pixel_mm=(0.88, 0.98), thickness_mm=(0.625, 2.5, 3.0), psf_mm=(0.3, 0.4), sharpen=(0.8, 1.2)
)
ORIENTATIONS = ("HFS", "FFS", "HFP", "HFDL")

app = typer.Typer(add_completion=False)


@dataclasses.dataclass
class HeldOutScan:
    seed: int
    phantom: Phantom
    volume: Volume
    description: str


def held_out_scan(seed: int) -> HeldOutScan:
    rng = np.random.default_rng(seed)
    small = seed % 2 == 0
    nodule_free = seed % 5 == 0
    phantom = random_phantom(
        seed, distribution=SMALL if small else LARGE, nodule_count=0 if nodule_free else None
    )
    ranges = SMALL_SCAN if small else LARGE_SCAN
    pixel, scan = ranges.draw(rng)
    noise = float(rng.uniform(50, 75)) if rng.random() < 0.6 else float(rng.uniform(5, 9))
    scan = dataclasses.replace(scan, noise_hu=noise, sharpen=scan.sharpen if not small else 0.0)
    lo, hi = lung_box(phantom, 30.0)
    count = int(np.ceil((hi[2] - lo[2]) / scan.thickness_mm))
    grid = Grid(
        (-256 * pixel, -256 * pixel, float(lo[2])), (pixel, pixel, scan.thickness_mm), (512, 512, count)
    )
    hu = render(phantom, grid, scan, seed=seed)
    affine = np.eye(4)
    affine[:3, :3] = np.diag(grid.spacing_mm)
    affine[:3, 3] = grid.origin_lps
    orientation = ORIENTATIONS[seed % len(ORIENTATIONS)]
    hu, affine = reorient(hu, affine, orientation)
    description = (
        f"{'small' if small else 'large'} patient, {pixel:.2f} mm x {scan.thickness_mm:g} mm, PSF {scan.psf_mm:.2f} mm, "
        f"gain {scan.sharpen:.2f}, noise {noise:.0f} HU, {orientation}"
    )
    return HeldOutScan(seed, phantom, Volume(hu, affine, []), description)


def reorient(hu: np.ndarray, affine: np.ndarray, position: str) -> tuple[np.ndarray, np.ndarray]:
    """The LPS-aligned volume as a scanner stores it for another patient position: feet first (slices
    from the feet up, x flipped), prone (x and y flipped), decubitus (x and y swapped)."""
    affine = affine.copy()

    def flip(array: np.ndarray, axis: int) -> np.ndarray:
        affine[:3, 3] += affine[:3, axis] * (array.shape[axis] - 1)
        affine[:3, axis] *= -1
        return np.flip(array, axis)

    if position == "FFS":
        hu = flip(flip(hu, 0), 2)
    elif position == "HFP":
        hu = flip(flip(hu, 0), 1)
    elif position == "HFDL":
        hu = hu.transpose(1, 0, 2)
        affine[:3, [0, 1]] = affine[:3, [1, 0]]
        hu = flip(hu, 1)
    return np.ascontiguousarray(hu), affine


def hit(finding: Finding, nodule: Any) -> bool:
    distance = float(np.linalg.norm(np.subtract(finding.position_lps, nodule.center_lps)))
    return distance <= max(nodule.diameter_mm / 2, 4.0)


def froc(candidates: list[tuple[float, int | None]], total: int, scans: int) -> dict[str, float]:
    """Sensitivity at each FP_RATES point from (score, nodule key or None for a false positive) pairs,
    several hits on one nodule counting once; the best sensitivity whose FP rate stays within the point."""
    ordered = sorted(candidates, key=lambda c: -c[0])
    found: set[int] = set()
    false_positives = 0
    curve: list[tuple[float, float]] = [(0.0, 0.0)]
    for _, key in ordered:
        if key is None:
            false_positives += 1
        else:
            found.add(key)
        curve.append((false_positives / scans, len(found) / total if total else 0.0))
    return {f"{rate:g}": max(s for fp, s in curve if fp <= rate) for rate in FP_RATES}


def evaluate(pipeline: TriagePipeline, scans: int = 24, first_seed: int = EVALUATION_SEED) -> dict[str, Any]:
    candidates: list[tuple[float, int | None]] = []
    total = detected = false_positives = 0
    by_kind: dict[str, list[int]] = {}  # nodule kind -> [detected, total] (nodules >= 6 mm)
    free = free_low = 0
    missed: list[dict[str, Any]] = []
    size_errors: list[float] = []
    seconds_render = seconds_analyse = 0.0
    details = []
    for seed in range(first_seed, first_seed + scans):
        started = time.perf_counter()
        scan = held_out_scan(seed)
        seconds_render += time.perf_counter() - started
        started = time.perf_counter()
        low, operating = pipeline.analyse(scan.volume, levels=(CANDIDATE_LEVEL, (None, None)))
        seconds_analyse += time.perf_counter() - started
        relevant = {n: k for n, k in enumerate(scan.phantom.nodules) if k.diameter_mm >= MIN_DIAMETER_MM}
        for finding in low:
            keys = [n for n, nodule in enumerate(scan.phantom.nodules) if hit(finding, nodule)]
            if not keys:
                candidates.append((finding.score, None))
            elif keys[0] in relevant:
                candidates.append((finding.score, seed * 100 + keys[0]))
        scan_fp = sum(not any(hit(f, n) for n in scan.phantom.nodules) for f in operating)
        false_positives += scan_fp
        for nodule in relevant.values():
            total += 1
            kind = by_kind.setdefault(nodule.kind, [0, 0])
            kind[1] += 1
            hits = [f for f in operating if hit(f, nodule)]
            if hits:
                detected += 1
                kind[0] += 1
                size_errors.append(max(hits, key=lambda f: f.score).diameter_mm - nodule.diameter_mm)
            else:
                missed.append(
                    {
                        "seed": seed,
                        "kind": nodule.kind,
                        "diameter_mm": round(nodule.diameter_mm, 1),
                        "hu": round(nodule.hu),
                    }
                )
        priority = priority_of(operating)
        if not scan.phantom.nodules:
            free += 1
            free_low += priority is Priority.LOW
        details.append(
            {
                "seed": seed,
                "scan": scan.description,
                "nodules_ge_6mm": len(relevant),
                "false_positives": scan_fp,
                "priority": str(priority),
            }
        )
    return {
        "scans": scans,
        "seeds": [first_seed, first_seed + scans - 1],
        "nodules_ge_6mm": total,
        "froc_sensitivity_at_fp_per_scan": froc(candidates, total, scans),
        "operating_point": {
            "sensitivity_ge_6mm": round(detected / total, 4) if total else None,
            "false_positives_per_scan": round(false_positives / scans, 3),
            "missed": missed,
            "diameter_error_mm_mean": round(float(np.mean(size_errors)), 2) if size_errors else None,
            "found_by_kind": {k: {"found": v[0], "of": v[1]} for k, v in sorted(by_kind.items())},
        },
        "nodule_free_scans": free,
        "nodule_free_scans_low": free_low,
        "seconds_per_scan_render": round(seconds_render / scans, 1),
        "seconds_per_scan_analyse": round(seconds_analyse / scans, 1),
        "per_scan": details,
    }


def markdown(report: dict[str, Any]) -> str:
    rates = report["froc_sensitivity_at_fp_per_scan"]
    point = report["operating_point"]
    lines = [
        f"FROC on {report['scans']} held-out phantoms (seeds {report['seeds'][0]}-{report['seeds'][1]}), "
        f"{report['nodules_ge_6mm']} nodules >= 6 mm",
        "",
        "| FP / scan | " + " | ".join(rates) + " | mean |",
        "|---" * (len(rates) + 2) + "|",
        "| sensitivity | "
        + " | ".join(f"{v:.3f}" for v in rates.values())
        + f" | {float(np.mean(list(rates.values()))):.3f} |",
        "",
        f"Operating point (bundle thresholds): sensitivity {point['sensitivity_ge_6mm']}, "
        f"{point['false_positives_per_scan']} false positives per scan; nodule-free scans LOW: "
        f"{report['nodule_free_scans_low']} of {report['nodule_free_scans']}.",
    ]
    if point["found_by_kind"]:
        kinds = ", ".join(f"{k} {v['found']} of {v['of']}" for k, v in point["found_by_kind"].items())
        lines.append(f"Found by kind (nodules >= 6 mm): {kinds}.")
    if point["missed"]:
        missed = ", ".join(
            f"{m['kind']} {m['diameter_mm']:g} mm {m['hu']:+d} HU (seed {m['seed']})" for m in point["missed"]
        )
        lines.append(f"Missed: {missed}.")
    return "\n".join(lines) + "\n"


@app.command()
def main(
    bundle: Annotated[Path, typer.Option(help="bundle directory")] = REFERENCE_BUNDLE,
    scans: Annotated[int, typer.Option(help=f"held-out phantoms (seeds {EVALUATION_SEED}...)")] = 24,
    threads: Annotated[int, typer.Option()] = 2,
    output: Annotated[
        Path | None, typer.Option(help="write the report (JSON) and the FROC table (.md) here")
    ] = None,
    record: Annotated[bool, typer.Option(help="write the figures into the bundle's metadata.json")] = False,
) -> None:
    torch.set_num_threads(threads)
    pipeline = TriagePipeline.from_bundle(bundle, device="cpu")
    report = evaluate(pipeline, scans)
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "per_scan"}, indent=2))
    typer.echo(markdown(report))
    if output is not None:
        output.write_text(json.dumps(report, indent=2) + "\n")
        output.with_suffix(".md").write_text(markdown(report))
    if record:
        from triage.training import bundle_files

        metadata = json.loads((bundle / "configs" / "metadata.json").read_text())
        summary = {k: v for k, v in report.items() if k != "per_scan"}
        bundle_files.write_configs(bundle, training=metadata.get("training", {}), evaluation=summary)


if __name__ == "__main__":
    app()
