"""`imaging triage ...`: run a bundle on DICOM files, or evaluate a bundle on held-out phantoms."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import MediaStorageDirectoryStorage as MEDIA_DIRECTORY

app = typer.Typer(add_completion=False, no_args_is_help=True, help="AI triage with a pinned MONAI bundle.")


def read_series(paths: Iterable[Path], unreadable: list[str] | None = None) -> dict[str, list[Dataset]]:
    """DICOM files under `paths` (files or folders, recursively) grouped by SeriesInstanceUID. Files that
    are not DICOM are skipped; DICOM files that cannot be parsed (truncated, corrupt) are listed in
    `unreadable`; instances without pixel data or a series are skipped."""
    series: dict[str, list[Dataset]] = defaultdict(list)
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            try:
                ds = dcmread(file)
            except InvalidDicomError:
                continue  # not DICOM at all (notes, DICOMDIR companions...)
            except (OSError, ValueError, EOFError, KeyError, TypeError) as error:
                if unreadable is not None:
                    unreadable.append(f"{file}: {type(error).__name__}")
                continue
            if "SOPInstanceUID" not in ds or "SeriesInstanceUID" not in ds:
                # pydicom reads truncated files without complaint: one that stops before its identifiers
                # is reported, not silently dropped (a DICOMDIR has none and is not an instance).
                directory = (
                    getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") == MEDIA_DIRECTORY
                )
                if unreadable is not None and not directory:
                    unreadable.append(f"{file}: incomplete DICOM file (no SOP Instance or Series UID)")
                continue
            if "PixelData" in ds:
                series[str(ds.SeriesInstanceUID)].append(ds)
    return dict(series)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE is read as JSON (true, 1.5, [1, 2]) and else kept as a string."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--override")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    return overrides


@app.command()
def run(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="DICOM files or folders")],
    bundle: Annotated[
        Path, typer.Option("--bundle", exists=True, file_okay=False, help="installed bundle directory")
    ],
    sha256: Annotated[
        str | None, typer.Option("--sha256", help="pinned bundle digest; refuse to run on mismatch")
    ] = None,
    override: Annotated[
        list[str],
        typer.Option(
            "--override", help="bundle config override KEY=VALUE (e.g. whether_raw_luna16=true); repeatable"
        ),
    ] = [],  # noqa: B006  (typer copies it)
    output: Annotated[Path | None, typer.Option("--output", help="write SR/SEG files here")] = None,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1 ... (default: CUDA when present)")
    ] = None,
    all_series: Annotated[
        bool, typer.Option("--all", help="also run series the selection rules reject")
    ] = False,
) -> None:
    """Group PATHs by series, run the bundle on each selected series and print a JSON report: per series
    its findings and priority, or why it failed. Exit status 1 when a series failed or a DICOM file could
    not be read, 2 when the bundle cannot be loaded."""
    from triage.bundle_transforms import BundleConfigError
    from triage.pipeline import TriageFailure, TriagePipeline, describe

    try:
        pipeline = TriagePipeline.from_bundle(
            bundle, expected_sha256=sha256, device=device, overrides=parse_overrides(override)
        )
    except BundleConfigError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    unreadable: list[str] = []
    series = read_series(paths, unreadable)
    skipped: list[dict[str, Any]] = []
    selected: list[list[Dataset]] = []
    entries: list[dict[str, Any]] = []
    for uid, datasets in series.items():
        try:
            decision = pipeline.selection_decision(datasets)
        except Exception as error:  # malformed attributes: this series fails, the others go on
            entries.append(TriageFailure(uid, f"selection: {describe(error)[0]}").as_json())
            continue
        if decision.selected or all_series:
            selected.append(datasets)
        else:
            skipped.append({"SeriesInstanceUID": uid, "reasons": list(decision.reasons)})
    for outcome in pipeline.run_many(selected):
        entry = outcome.as_json()
        if output is not None and not isinstance(outcome, TriageFailure):
            try:
                entry["files"] = _save(outcome, output)
            except OSError as error:
                entry = TriageFailure(
                    outcome.series_instance_uid, f"writing SR/SEG: {describe(error)[0]}"
                ).as_json()
        entries.append(entry)
    failed = sum(e["status"] == "failed" for e in entries)
    report = {"results": entries, "skipped": skipped, "unreadable": unreadable, "failed": failed}
    typer.echo(json.dumps(report, indent=2))
    if failed or unreadable:
        raise typer.Exit(1)


def _save(result: Any, output: Path) -> list[str]:
    output.mkdir(parents=True, exist_ok=True)
    files = []
    for kind, ds in (("sr", result.sr), ("seg", result.seg)):
        if ds is None:
            continue
        # File names from a hash, never from a raw UID.
        name = f"{kind}-{hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest()[:16]}.dcm"
        ds.save_as(output / name, enforce_file_format=True)
        files.append(str(output / name))
    return files


@app.command()
def evaluate(
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="bundle directory (default: the reference bundle)")
    ] = None,
    scans: Annotated[int, typer.Option(help="held-out phantoms")] = 24,
    sha256: Annotated[str | None, typer.Option("--sha256")] = None,
    output: Annotated[
        Path | None, typer.Option(help="write the report (JSON) and its FROC table (.md) here")
    ] = None,
) -> None:
    """FROC (sensitivity for nodules >= 6 mm at 1/8 ... 8 false positives per scan) and the operating point
    on held-out phantoms drawn from distributions the training never saw (triage.training.evaluate)."""
    from triage.pipeline import TriagePipeline
    from triage.training.evaluate import evaluate as run_evaluation
    from triage.training.evaluate import markdown
    from triage.training.train import REFERENCE_BUNDLE

    pipeline = TriagePipeline.from_bundle(bundle or REFERENCE_BUNDLE, expected_sha256=sha256, device="cpu")
    report = run_evaluation(pipeline, scans)
    if output is not None:
        output.write_text(json.dumps(report, indent=2) + "\n")
        output.with_suffix(".md").write_text(markdown(report))
    typer.echo(markdown(report))


if __name__ == "__main__":
    app()
