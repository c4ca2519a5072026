"""Benchmark: how long a site takes to answer a federated count (the "count as you type" of a cohort
builder), against the number of clinical studies it holds.

    python tests/benchmarks/federation/run.py [--studies 2000] [--released 50] [--repeats 7]

An archive (SQLite, in a temporary folder) is filled with `studies` one-instance synthetic CT/MR studies
(imaging.synthetic: synthetic patients, 16x16 pixels), made stable, a third of them with a triage outcome.
Then, for three definitions (broad, with an age band, with AI findings), the median of `repeats` timings of:
* `matching_studies` — the matching function alone (what `imaging federation count --here-only` runs);
* `disclosure.answer` — matching plus the disclosure control (small cells, differencing against `released`
  counts already released in the window, their log and audit record), what a peer's query costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from sqlalchemy import select

import imaging.app  # noqa: F401  (every table)
from imaging.archive import Archive
from imaging.config import load_settings
from imaging.federation.criteria import definition, matching_studies
from imaging.federation.disclosure import answer
from imaging.index.schema import Study
from imaging.jobs.stability import mark_stable
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from triage.records import TriageOutcome

DEFINITIONS = {
    "broad (CT CHEST)": {"filters": {"Modality": "CT", "BodyPartExamined": "CHEST"}},
    "age band + sex": {"filters": {"Modality": "CT", "PatientSex": "F"}, "age_min": 40, "age_max": 70},
    "AI findings": {"filters": {"Modality": "CT"}, "min_priority": "MEDIUM", "min_diameter_mm": 6.0},
}


def fill(archive: Archive, studies: int) -> None:
    for n in range(studies):
        study = SyntheticStudy(patient=synthetic_patient(n % max(1, studies // 2)), AccessionNumber=f"B{n}")
        modality, part = ("CT", "CHEST") if n % 4 else ("MR", "HEAD")
        ds = next(ct_series(study, 1, rows=16, columns=16, modality=modality, body_part=part))
        archive.ingestor.ingest_dataset(ds)
        if n % 3 == 0:
            uid, series_uid = study.StudyInstanceUID, str(ds.SeriesInstanceUID)
            with archive.db.write() as session:
                session.add(
                    TriageOutcome(
                        partition="clinical",
                        StudyInstanceUID=uid,
                        SeriesInstanceUID=series_uid,
                        bundle_version="bench",
                        priority="HIGH",
                        findings=[{"diameter_mm": float(n % 15), "score": 0.9, "position_lps": [0, 0, 0]}],
                    )
                )
                row = session.scalar(select(Study).where(Study.StudyInstanceUID == uid))
                assert row is not None
                row.priority = "HIGH"
    changed = 1
    while changed:  # it marks a batch at a time, series first, then their studies
        with archive.db.write() as session:
            changed = mark_stable(session, 0, set())


def timed(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--studies", type=int, default=2000)
    parser.add_argument("--released", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(None, data_dir=Path(tmp) / "data", dev_mode=True, min_free_bytes=0)
        archive = Archive.open(settings)
        start = time.perf_counter()
        fill(archive, args.studies)
        print(f"{args.studies} studies ingested in {time.perf_counter() - start:.1f} s")
        broad = definition(DEFINITIONS["broad (CT CHEST)"])
        for i in range(args.released):  # released counts in the differencing window, of similar size
            answer(archive, broad, requester=f"site:bench-{i}", user="bench", source="bench")
        print(
            f"{'definition':<20} {'matching':>10} {'studies':>8} {'answer':>10}  (medians of {args.repeats})"
        )
        for name, body in DEFINITIONS.items():
            cohort = definition(body)
            with archive.db.read() as session:
                found = len(matching_studies(session, cohort))

            def match(cohort: object = cohort) -> None:
                with archive.db.read() as session:
                    matching_studies(session, cohort)  # type: ignore[arg-type]

            def release(cohort: object = cohort) -> None:
                answer(archive, cohort, requester="site:bench", user="bench", source="bench")  # type: ignore[arg-type]

            m, a = timed(match, args.repeats), timed(release, args.repeats)
            print(f"{name:<20} {m * 1000:>8.1f}ms {found:>8} {a * 1000:>8.1f}ms")
        archive.close()


if __name__ == "__main__":
    main()
