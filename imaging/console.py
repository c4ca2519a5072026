"""What every command line of the archive shares — the core commands (imaging.cli) and the features' sub-apps
(research, sharing, triage): the --config / --data-dir options, opening the archive, progress bars, and one
way to report a refused operation. Kept below the features so that each feature's CLI can use it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from imaging.archive import Archive
from imaging.config import Settings, load_settings

console = Console(stderr=True)  # messages; results go to stdout
CLI_USER = "cli"  # the audit trail's user for what an operator does at the command line

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file", envvar="IMAGING_CONFIG")
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="storage and index folder", envvar="IMAGING_DATA_DIR")
]


def settings(config: Path | None, data_dir: Path | None, **overrides: object) -> Settings:
    return load_settings(config, data_dir=data_dir, **overrides)


def open_archive(config: Path | None, data_dir: Path | None) -> Archive:
    return Archive.open(settings(config, data_dir))


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def fail(exc: Exception | str) -> NoReturn:
    """Report a refused operation (its message never holds PHI) and exit with status 1."""
    console.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(1)
