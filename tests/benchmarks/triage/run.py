"""Triage benchmark (a script, not a test): `python tests/benchmarks/triage/run.py [--threads 2]`.

End-to-end latency of a bundle on a 512 x 512 x 300 synthetic chest CT (0.7 x 0.7 x 1.25 mm, three planted
nodules), split into decode / preprocess / lung_field / inference / postprocess / encode, median of
`--runs`; then throughput (series per minute) with `--queued` series queued, one at a time and batched.
Devices: `--device auto` (CPU, and CUDA when torch.cuda.is_available()), `cpu` or `cuda` (a GPU node:
`--device cuda` skips the slow CPU pass). Each run parses the instances afresh from their encoded bytes,
so decoding is measured and not served from pydicom's pixel cache.

`--zoo` benchmarks the Model Zoo lung_nodule_ct_detection architecture instead (its published configs
from tests/triage/fixtures, random weights, `whether_raw_luna16=true`): the cost of the real detector.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from monai.bundle import ConfigParser

from imaging.synthetic import SyntheticStudy
from triage import torchvision_free
from triage.pipeline import Finding, TriagePipeline
from triage.training.phantom import Nodule, random_phantom
from triage.training.synthetic_series import phantom_series, series_center_z
from triage.training.train import REFERENCE_BUNDLE

ZOO_CONFIGS = (
    Path(__file__).resolve().parents[2] / "triage" / "fixtures" / "lung_nodule_ct_detection" / "configs"
)

ROWS, COUNT, PIXEL, THICKNESS = 512, 300, 0.7, 1.25


PLANTED: list[Nodule] = []


def encoded_series() -> list[bytes]:
    phantom = random_phantom(
        77, z_center=series_center_z(COUNT, THICKNESS), nodule_diameters=(7.0, 10.0, 5.0)
    )
    PLANTED[:] = list(phantom.nodules)
    datasets = phantom_series(
        phantom,
        study=SyntheticStudy(),
        rows=ROWS,
        columns=ROWS,
        count=COUNT,
        pixel_spacing=PIXEL,
        slice_thickness=THICKNESS,
    )
    encoded = []
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        encoded.append(buffer.getvalue())
    return encoded


def parse(encoded: list[bytes], series_uid: str | None = None) -> list[Dataset]:
    datasets = [dcmread(io.BytesIO(b)) for b in encoded]
    if series_uid:
        for ds in datasets:
            ds.SeriesInstanceUID = series_uid
    return datasets


def hit(finding: Finding, nodule: Nodule) -> bool:
    distance = math.dist(finding.position_lps, nodule.center_lps)
    return distance <= max(nodule.diameter_mm / 2, 4.0)


def latency(pipeline: TriagePipeline, encoded: list[bytes], runs: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    for _ in range(runs):
        started = time.perf_counter()
        datasets = parse(encoded)
        parsed = time.perf_counter() - started
        result = pipeline.run(datasets)
        total = time.perf_counter() - started
        if pipeline.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(pipeline.device) / 2**30
            samples.setdefault("gpu_peak_gib", []).append(peak)
        for key, value in {"parse": parsed, **result.timings, "total": total}.items():
            samples.setdefault(key, []).append(value)
        findings = [
            (
                round(f.diameter_mm, 1),
                round(f.score, 2),
                [round(n.diameter_mm, 1) for n in PLANTED if hit(f, n)],
            )
            for f in result.findings
        ]
    report = {key: round(statistics.median(values), 3) for key, values in samples.items()}
    print(f"  findings (diameter mm, score, planted nodule hit): {findings}; priority {result.priority}")
    return report


def throughput(pipeline: TriagePipeline, encoded: list[bytes], series: int, batch: int) -> float:
    pipeline.max_batch = batch
    queue = [parse(encoded, str(generate_uid())) for _ in range(series)]
    started = time.perf_counter()
    results = pipeline.run_many(queue)
    elapsed = time.perf_counter() - started
    assert len(results) == series
    return round(series / elapsed * 60, 2)


def zoo_bundle(folder: Path) -> Path:
    """The Model Zoo detector's published configs with random weights of its architecture."""
    (folder / "models").mkdir(parents=True)
    (folder / "docs").mkdir()
    (folder / "docs" / "README.md").write_text("benchmark\n")
    (folder / "configs").mkdir()
    for name in ("inference.json", "metadata.json"):
        (folder / "configs" / name).write_bytes((ZOO_CONFIGS / name).read_bytes())
    torchvision_free.install()
    parser = ConfigParser()
    parser.read_config(folder / "configs" / "inference.json")
    torch.manual_seed(0)
    torch.save(parser.get_parsed_content("network_def").state_dict(), folder / "models" / "model.pt")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queued", type=int, default=4, help="series queued for the throughput figure")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--bundle", type=Path, default=REFERENCE_BUNDLE)
    parser.add_argument("--zoo", action="store_true", help="the Model Zoo detector (random weights)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    encoded = encoded_series()
    print(f"synthetic CT {ROWS}x{ROWS}x{COUNT} rendered and encoded in {time.perf_counter() - started:.1f} s")
    if args.device == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    bundle, overrides = args.bundle, None
    if args.zoo:
        bundle = zoo_bundle(Path(tempfile.mkdtemp()) / "lung_nodule_ct_detection")
        overrides = {"whether_raw_luna16": True}
    figures: dict[str, dict[str, object]] = {}
    for device in devices:
        pipeline = TriagePipeline.from_bundle(bundle, device=device, overrides=overrides)
        label = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {args.threads} threads"
        print(f"[{device}] {label}, bundle {pipeline.bundle.name} {pipeline.bundle.version}")
        pipeline.run(parse(encoded))  # warm-up (allocator, cuDNN autotune, lazy imports)
        lat = latency(pipeline, encoded, args.runs)
        print(f"  latency, median of {args.runs} (s): {json.dumps(lat)}")
        sequential = throughput(pipeline, encoded, args.queued, batch=1)
        batched = throughput(pipeline, encoded, args.queued, batch=args.queued)
        print(f"  throughput, {args.queued} queued: {sequential} series/min one at a time, {batched} batched")
        figures[device] = {
            "device": label,
            "bundle": pipeline.bundle.name,
            "latency_s": lat,
            "series_per_minute_sequential": sequential,
            "series_per_minute_batched": batched,
        }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
