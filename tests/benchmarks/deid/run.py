"""Side-by-side benchmark: this engine vs dicognito, in one run, on the same files.

    python tests/benchmarks/deid/run.py [--count 200] [--size 512] [--repeats 5]

Each engine reads every file, de-identifies it and writes the result, file to file, in one process
(one core), after one warm-up instance (one-off loads): ours as `imaging deid` does it (the direct
Part 10 reader, the engine, the direct Part 10 writer), dicognito as its own command does (pydicom's reader,
Anonymizer.anonymize, pydicom's writer). The figures are instances per CPU-second of the process and
its children (OCR) (per core: the machine may be shared, so wall-clock rates are printed too), the median of `repeats` runs,
the engines alternating run by run.

Two sets of files:
- CT: imaging.synthetic slices (size x size, 16 bit) with synthetic PHI. Ours runs the default profile
  (Basic + Retain Longitudinal Modified Dates + Clean Pixel Data: the burned-in text header checks and
  the overlay-bit check of the pixel data run on every file; CT originals are not at risk, so no OCR)
  and the full cleaning profile (also Clean Descriptors, Structured Content, Graphics, Retain Safe
  Private).
- the tests/deid corpus (CT, enhanced CT, PET, SR with planted PHI at every depth): ms per file.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from imaging.deid import Deidentifier, DeidOption, DeidProfile, part10
from imaging.deid.batch import read_file
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.deid.corpus import build

Transform = Callable[[Path, Path], None]
FULL = DeidProfile(
    options=frozenset(
        {
            DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES,
            DeidOption.CLEAN_PIXEL_DATA,
            DeidOption.CLEAN_DESCRIPTORS,
            DeidOption.CLEAN_STRUCTURED_CONTENT,
            DeidOption.CLEAN_GRAPHICS,
            DeidOption.RETAIN_SAFE_PRIVATE,
        }
    )
)


def make_ct_files(folder: Path, count: int, size: int) -> list[Path]:
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


def make_corpus_files(folder: Path) -> list[Path]:
    paths = []
    for kind, ds in build().datasets.items():
        path = folder / f"{kind}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def ours(profile: DeidProfile) -> Transform:
    engine = Deidentifier(key=os.urandom(32), profile=profile)

    def run(source: Path, target: Path) -> None:
        result = engine.deidentify(read_file(source))
        if result.dataset is None:
            raise SystemExit(f"{source.name} was quarantined")
        target.write_bytes(part10.encode(result.dataset))

    return run


def dicognito() -> Transform:
    from dicognito.anonymizer import Anonymizer  # a benchmark-only dependency, loaded when run

    anonymizer = Anonymizer()

    def run(source: Path, target: Path) -> None:
        ds = pydicom.dcmread(source)
        anonymizer.anonymize(ds)
        ds.save_as(target, enforce_file_format=True)

    return run


def _cpu() -> float:
    """CPU seconds of this process and its children (tesseract runs as a child process)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_once(paths: list[Path], out: Path, transform: Transform, passes: int = 1) -> tuple[float, float]:
    """(CPU seconds per file, wall seconds per file) over `passes` passes."""
    out.mkdir(exist_ok=True)
    wall, cpu = time.perf_counter(), _cpu()
    for _ in range(passes):
        for i, path in enumerate(paths):
            transform(path, out / f"out{i:05d}.dcm")
    files = len(paths) * passes
    return (_cpu() - cpu) / files, (time.perf_counter() - wall) / files


def compare(
    title: str, paths: list[Path], engines: dict[str, Transform], root: Path, repeats: int, passes: int = 1
) -> dict[str, float]:
    """Median CPU seconds per file of each engine; prints the table."""
    for transform in engines.values():  # warm-up: one-off loads (IOD tables, imports)
        transform(paths[0], root / "warm-up.dcm")
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    for repeat in range(repeats):
        for name, transform in engines.items():  # alternating, so load changes hit both alike
            runs[name].append(run_once(paths, root / f"{name}-{repeat}", transform, passes))
    print(f"\n{title}: {len(paths)} files x {passes}, median of {repeats} runs, one process each")
    medians = {}
    for name, results in runs.items():
        cpu = statistics.median(r[0] for r in results)
        wall = statistics.median(r[1] for r in results)
        medians[name] = cpu
        print(
            f"  {name:18s} {1 / cpu:7.1f} instances/s per core  {cpu * 1000:6.2f} ms/file (CPU)  "
            f"{1 / wall:7.1f} instances/s wall  (runs, ms/file: "
            f"{', '.join(f'{r[0] * 1000:.2f}' for r in results)})"
        )
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "ct").mkdir()
        (root / "corpus").mkdir()
        ct = make_ct_files(root / "ct", args.count, args.size)
        corpus = make_corpus_files(root / "corpus")
        engines = {"ours (default)": ours(DeidProfile()), "ours (full)": ours(FULL), "dicognito": dicognito()}
        medians = compare(f"CT {args.size}x{args.size}", ct, engines, root, args.repeats)
        for name in ("ours (default)", "ours (full)"):
            ratio = medians["dicognito"] / medians[name]
            print(f"  ratio {name} / dicognito (per core): {ratio:.2f}x")
        compare(
            "tests/deid corpus (CT, enhanced CT, PET, SR)", corpus, engines, root, args.repeats, passes=20
        )


if __name__ == "__main__":
    main()
