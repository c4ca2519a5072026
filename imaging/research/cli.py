"""`imaging project ...` and `imaging cohort ...`: research projects, publication and cohort export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imaging.console import CLI_USER, ConfigOpt, DataDirOpt, console, fail, open_archive, progress
from imaging.errors import ArchiveError
from imaging.research.cohorts import export_audit, export_to_folder, manifest, save_cohort, write_zip
from imaging.research.projects import create_project, list_projects
from imaging.research.publication import publish_study

project_app = typer.Typer(help="Research projects (de-identified partitions).", no_args_is_help=True)
cohort_app = typer.Typer(
    help="Cohorts: saved queries in a project, exported with a manifest.", no_args_is_help=True
)


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
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create a research project with its own profile and secret key."""
    key = bytes.fromhex(key_file.read_text().strip()) if key_file else None
    archive = open_archive(config, data_dir)
    try:
        create_project(
            archive,
            name,
            options=option,
            description=description,
            key=key,
            keep_reidentification=reidentification,
        )
    except ArchiveError as exc:
        fail(exc)
    console.print(
        f"project {name} created; key in {archive.settings.keys_path} (keep it apart from the data)"
    )


@project_app.command("list")
def project_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    archive = open_archive(config, data_dir)
    table = Table("name", "options", "description")
    with archive.db.read() as session:
        for p in list_projects(session):
            table.add_row(p.name, ",".join(p.options), p.description)
    Console().print(table)


@project_app.command("publish")
def project_publish(
    name: str,
    study_uid: Annotated[list[str], typer.Argument(help="clinical Study Instance UIDs")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """De-identify studies into the project (consent is checked; quarantined images are reported)."""
    archive = open_archive(config, data_dir)
    failed = 0
    for uid in study_uid:
        try:
            report = publish_study(archive, name, uid, user=CLI_USER)
        except ArchiveError as exc:
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
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    filters = dict(f.split("=", 1) for f in filter_)
    try:
        save_cohort(open_archive(config, data_dir), project, name, filters, min_priority)
    except ArchiveError as exc:
        fail(exc)
    console.print(f"cohort {project}/{name} saved")


@cohort_app.command("export")
def cohort_export(
    project: str,
    name: str,
    output: Annotated[Path, typer.Option(help="a folder (resumable) or a .zip file")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Export a cohort with its manifest (series, counts, sizes, SHA-256). Re-running resumes a folder."""
    archive = open_archive(config, data_dir)
    m = manifest(archive, project, name)
    export_audit(archive, m, user=CLI_USER, to="zip file" if output.suffix == ".zip" else "folder")
    if output.suffix == ".zip":
        with output.open("wb") as f:
            write_zip(archive, m, f)
        console.print(f"{len(m.series)} series, {m.size} bytes → {output}")
        return
    with progress() as bar:
        task = bar.add_task("exporting series", total=len(m.series))
        report = export_to_folder(archive, m, output, progress=lambda: bar.advance(task))
    console.print(
        f"series written {report.series_written}, already complete {report.series_skipped}, objects {report.objects}"
    )
