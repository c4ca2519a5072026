"""`imaging import`, `reindex`, `fsck`, `stats`: bulk data operations, with progress bars."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imaging.console import ConfigOpt, DataDirOpt, console, open_archive, progress
from imaging.index.stats import partition_counts
from imaging.ingest.importer import count_sources, import_paths
from imaging.maintenance import fsck as run_fsck
from imaging.maintenance import reindex as run_reindex

app = typer.Typer()


@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="files, folders or zip archives")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Import DICOM files through the same ingest path as C-STORE."""
    archive = open_archive(config, data_dir)
    with progress() as bar:
        task = bar.add_task("importing", total=count_sources(paths))
        report = import_paths(archive.ingestor, paths, progress=lambda: bar.advance(task))
    for failure in report.failures[:20]:
        console.print(f"[red]failed[/red] {failure}")
    console.print(f"stored {report.stored}, duplicates {report.duplicates}, failed {report.failed}")
    raise typer.Exit(1 if report.failed else 0)


@app.command()
def reindex(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Rebuild the index from storage."""
    archive = open_archive(config, data_dir)
    with progress() as bar:
        task = bar.add_task("reindexing", total=sum(1 for _ in archive.store.keys()))
        report = run_reindex(archive, progress=lambda: bar.advance(task))
    console.print(
        f"indexed {report.indexed}, unreadable {len(report.unreadable)}; left out: rejected {report.rejected}, "
        f"awaiting deletion {report.pending}"
    )
    raise typer.Exit(1 if report.unreadable else 0)


@app.command()
def fsck(
    repair: Annotated[
        bool, typer.Option("--repair", help="fix the index and quarantine corrupt objects")
    ] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Compare index and storage and verify every object's SHA-256."""
    archive = open_archive(config, data_dir)
    with progress() as bar:
        task = bar.add_task("checking", total=None)
        report = run_fsck(archive, repair=repair, progress=lambda: bar.advance(task))
    console.print(
        f"checked {report.checked}: missing {len(report.missing)}, corrupt {len(report.corrupt)}, "
        f"unindexed {len(report.unindexed)}, repaired {report.repaired}; "
        f"awaiting deletion {report.pending}"
    )
    for key in (report.missing + report.corrupt + report.unindexed)[:20]:
        console.print(f"  {key}")
    raise typer.Exit(0 if report.clean or repair else 1)


@app.command()
def stats(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Counts per partition and storage size."""
    archive = open_archive(config, data_dir)
    table = Table("partition", "patients", "studies", "series", "instances", "bytes")
    with archive.db.read() as session:
        for row in partition_counts(session):
            table.add_row(
                row.partition,
                *(str(v) for v in (row.patients, row.studies, row.series, row.instances, row.bytes)),
            )
    Console().print(table)
