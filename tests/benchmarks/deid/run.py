"""Side-by-side benchmark: this engine vs dicognito on the same synthetic CT files.

    python tests/benchmarks/deid/run.py [--count 200] [--size 512] [--repeats 3]

Each engine reads every file, de-identifies it and writes the result, in one process (one core),
after one warm-up instance (one-off loads); the figure is instances per CPU-second of the process
(per core; wall-clock rate printed too, but the machine may be shared), the median of `repeats` runs. Ours runs the default
profile (Basic + Retain Longitudinal Modified Dates + Clean Pixel Data; CT originals are not at risk of
burned-in text, so no OCR runs). Data: imaging.synthetic CT slices with synthetic PHI.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from imaging.deid import Deidentifier, DeidProfile
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient


def make_files(folder: Path, count: int, size: int) -> list[Path]:
    paths = []
    studies = [SyntheticStudy(patient=synthetic_patient(n)) for n in range(max(1, count // 50))]
    series_uids = [generate_uid() for _ in studies]
    for i in range(count):
        study = studies[i % len(studies)]
        ds = next(ct_series(study, 1, rows=size, columns=size, series_uid=series_uids[i % len(studies)]))
        ds.InstanceNumber = i + 1
        path = folder / f"in{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def run_once(
    paths: list[Path], out: Path, transform: Callable[[Dataset], Dataset | None]
) -> tuple[float, float]:
    """(instances per CPU-second of this process, instances per wall-clock second).

    CPU time is the per-core figure: the machine is shared, and wall time also counts other processes.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    for i, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        result = transform(ds)
        if result is None:
            raise SystemExit(f"{path.name} was quarantined")
        result.save_as(out / f"out{i:05d}.dcm", enforce_file_format=True)
    return len(paths) / (time.process_time() - cpu), len(paths) / (time.perf_counter() - wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from dicognito.anonymizer import Anonymizer

    ours = Deidentifier(key=os.urandom(32), profile=DeidProfile())
    theirs = Anonymizer()

    def with_ours(ds: Dataset) -> Dataset | None:
        return ours.deidentify(ds).dataset

    def with_dicognito(ds: Dataset) -> Dataset | None:
        theirs.anonymize(ds)
        return ds

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        paths = make_files(root / "in", args.count, args.size)
        for transform in (with_ours, with_dicognito):  # warm-up: one-off loads (IOD tables, imports)
            transform(pydicom.dcmread(paths[0]))
        rates: dict[str, list[tuple[float, float]]] = {"ours": [], "dicognito": []}
        for repeat in range(args.repeats):
            for name, transform in (("ours", with_ours), ("dicognito", with_dicognito)):
                out = root / f"{name}{repeat}"
                out.mkdir()
                rates[name].append(run_once(paths, out, transform))
        print(
            f"{args.count} CT instances {args.size}x{args.size}, median of {args.repeats}, one process each"
        )
        medians = {}
        for name, runs in rates.items():
            cpu = statistics.median(r[0] for r in runs)
            wall = statistics.median(r[1] for r in runs)
            medians[name] = cpu
            print(
                f"{name:10s} {cpu:7.1f} instances/s per core (CPU time), {wall:7.1f} instances/s wall "
                f"(runs: {', '.join(f'{r[0]:.1f}' for r in runs)})"
            )
        print(f"ratio ours/dicognito (per core): {medians['ours'] / medians['dicognito']:.2f}")


if __name__ == "__main__":
    main()
