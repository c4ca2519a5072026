"""`imaging project ...` and `imaging cohort ...`: research projects and cohort export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from sqlalchemy import select

from imaging.archive import Archive
from imaging.config import load_settings

project_app = typer.Typer(help="Research projects (de-identified partitions).", no_args_is_help=True)
cohort_app = typer.Typer(
    help="Cohorts: saved queries in a project, exported with a manifest.", no_args_is_help=True
)
console = Console(stderr=True)
DataDir = Annotated[Path | None, typer.Option("--data-dir", envvar="IMAGING_DATA_DIR")]
Config = Annotated[Path | None, typer.Option("--config", "-c", envvar="IMAGING_CONFIG")]


def _archive(config: Path | None, data_dir: Path | None) -> Archive:
    return Archive.open(load_settings(config, data_dir=data_dir))


@project_app.command("create")
def project_create(
    name: str,
    option: Annotated[
        list[str], typer.Option(help="PS3.15 option, repeatable (e.g. CLEAN_DESCRIPTORS)")
    ] = [],  # noqa: B006
    key_file: Annotated[
        Path | None, typer.Option(help="share pseudonyms with sites holding this key")
    ] = None,
    reidentification: Annotated[
        bool, typer.Option(help="keep a re-identification table (admin only)")
    ] = False,
    description: str = "",
    config: Config = None,
    data_dir: DataDir = None,
) -> None:
    """Create a research project with its own profile and secret key."""
    from imaging.projects import create_project

    key = bytes.fromhex(key_file.read_text().strip()) if key_file else None
    archive = _archive(config, data_dir)
    create_project(
        archive,
        name,
        options=option,
        description=description,
        key=key,
        keep_reidentification=reidentification,
    )
    console.print(
        f"project {name} created; key in {archive.settings.keys_path} (keep it apart from the data)"
    )


@project_app.command("list")
def project_list(config: Config = None, data_dir: DataDir = None) -> None:
    from imaging.projects import Project

    archive = _archive(config, data_dir)
    table = Table("name", "options", "description")
    with archive.db.read() as session:
        for p in session.scalars(select(Project).order_by(Project.name)):
            table.add_row(p.name, ",".join(p.options), p.description)
    Console().print(table)


@project_app.command("publish")
def project_publish(
    name: str,
    study_uid: Annotated[list[str], typer.Argument(help="clinical Study Instance UIDs")],
    config: Config = None,
    data_dir: DataDir = None,
) -> None:
    """De-identify studies into the project (consent is checked; quarantined images are reported)."""
    from imaging.projects import publish_study

    archive = _archive(config, data_dir)
    failed = 0
    for uid in study_uid:
        try:
            report = publish_study(archive, name, uid, user="cli")
        except Exception as exc:
            failed += 1
            console.print(f"[red]not published[/red]: {exc}")
            continue
        console.print(
            f"published {report.published} instances as study {report.study_uid}"
            f" (pseudonym {report.patient_pseudonym}); quarantined {report.quarantined}"
        )
    raise typer.Exit(1 if failed else 0)


@cohort_app.command("save")
def cohort_save(
    project: str,
    name: str,
    filter_: Annotated[
        list[str], typer.Option("--filter", help="KEY=VALUE (DICOM matching), repeatable")
    ] = [],  # noqa: B006
    min_priority: Annotated[str, typer.Option(help="only studies the AI flagged at least this high")] = "",
    config: Config = None,
    data_dir: DataDir = None,
) -> None:
    from imaging.cohorts import save_cohort

    filters = dict(f.split("=", 1) for f in filter_)
    save_cohort(_archive(config, data_dir), project, name, filters, min_priority.upper())
    console.print(f"cohort {project}/{name} saved")


@cohort_app.command("export")
def cohort_export(
    project: str,
    name: str,
    output: Annotated[Path, typer.Option(help="a folder (resumable) or a .zip file")],
    config: Config = None,
    data_dir: DataDir = None,
) -> None:
    """Export a cohort with its manifest (series, counts, sizes, SHA-256). Re-running resumes a folder."""
    from imaging.cohorts import export_to_folder, manifest, write_zip

    archive = _archive(config, data_dir)
    m = manifest(archive, project, name)
    if output.suffix == ".zip":
        with output.open("wb") as f:
            write_zip(archive, m, f)
        console.print(f"{len(m.series)} series, {m.size} bytes → {output}")
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=console
    ) as bar:
        task = bar.add_task("exporting series", total=len(m.series))
        report = export_to_folder(archive, m, output, progress=lambda: bar.advance(task))
    console.print(
        f"series written {report.series_written}, already complete {report.series_skipped}, objects {report.objects}"
    )
