"""`imaging triage ...`: run a bundle on DICOM files, or evaluate a bundle on held-out phantoms."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import typer
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="AI triage with a pinned MONAI bundle.")


def read_series(paths: Iterable[Path]) -> dict[str, list[Dataset]]:
    """DICOM files under `paths` (files or folders, recursively) grouped by SeriesInstanceUID; files
    that are not DICOM, or lack pixel data or a series, are skipped."""
    series: dict[str, list[Dataset]] = defaultdict(list)
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            try:
                ds = dcmread(file)
            except (InvalidDicomError, OSError, ValueError):
                continue
            if "PixelData" in ds and "SeriesInstanceUID" in ds:
                series[str(ds.SeriesInstanceUID)].append(ds)
    return dict(series)


@app.command()
def run(
    paths: list[Path] = typer.Argument(..., exists=True, help="DICOM files or folders"),
    bundle: Path = typer.Option(
        ..., "--bundle", exists=True, file_okay=False, help="installed bundle directory"
    ),
    sha256: str | None = typer.Option(
        None, "--sha256", help="pinned bundle digest; refuse to run on mismatch"
    ),
    output: Path | None = typer.Option(None, "--output", help="write SR/SEG files here"),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:1 ... (default: CUDA when present)"),
    all_series: bool = typer.Option(False, "--all", help="also run series the selection rules reject"),
) -> None:
    """Group PATHs by series, run the bundle on each selected series and print the findings as JSON."""
    from triage.bundle import BundleError
    from triage.pipeline import TriagePipeline

    try:
        pipeline = TriagePipeline.from_bundle(bundle, expected_sha256=sha256, device=device)
    except BundleError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    series = read_series(paths)
    skipped = []
    selected = []
    for uid, datasets in series.items():
        decision = pipeline.selection_decision(datasets)
        if decision.selected or all_series:
            selected.append(datasets)
        else:
            skipped.append({"SeriesInstanceUID": uid, "reasons": list(decision.reasons)})
    results = pipeline.run_many(selected)
    report = {"results": [r.as_json() for r in results], "skipped": skipped}
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        for result, entry in zip(results, report["results"], strict=True):
            files = []
            for kind, ds in (("sr", result.sr), ("seg", result.seg)):
                if ds is None:
                    continue
                # File names from a hash, never from a raw UID.
                name = f"{kind}-{hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest()[:16]}.dcm"
                ds.save_as(output / name, enforce_file_format=True)
                files.append(str(output / name))
            entry["files"] = files
    typer.echo(json.dumps(report, indent=2))


@app.command()
def evaluate(
    bundle: Path | None = typer.Option(
        None, "--bundle", help="bundle directory (default: the reference bundle)"
    ),
    scans: int = typer.Option(20, help="held-out phantoms"),
    sha256: str | None = typer.Option(None, "--sha256"),
) -> None:
    """Per-nodule sensitivity (>= 6 mm) and false positives per scan on held-out synthetic phantoms."""
    from triage.pipeline import TriagePipeline
    from triage.training.evaluate import evaluate as run_evaluation
    from triage.training.train import REFERENCE_BUNDLE

    pipeline = TriagePipeline.from_bundle(bundle or REFERENCE_BUNDLE, expected_sha256=sha256, device="cpu")
    typer.echo(json.dumps(run_evaluation(pipeline, scans), indent=2))


if __name__ == "__main__":
    app()
