"""`imaging` command line: serve, import, reindex, fsck, stats, token (and the sub-apps of deid/triage)."""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from imaging.archive import Archive
from imaging.config import Settings, load_settings
from imaging.lifecycle import configure_server_process, wait_until_terminated

app = typer.Typer(help="Medical imaging sharing archive with AI triage.", no_args_is_help=True)
console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="TOML settings file", envvar="IMAGING_CONFIG")
]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="storage and index folder", envvar="IMAGING_DATA_DIR")
]


def _settings(config: Path | None, data_dir: Path | None, **overrides: object) -> Settings:
    return load_settings(config, data_dir=data_dir, **overrides)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


@app.command()
def serve(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    dicom_port: Annotated[int | None, typer.Option(envvar="IMAGING_DICOM_PORT")] = None,
    http_port: Annotated[int | None, typer.Option(envvar="IMAGING_HTTP_PORT")] = None,
    ae_title: Annotated[str | None, typer.Option(envvar="IMAGING_AE_TITLE")] = None,
    dev: Annotated[bool, typer.Option("--dev", help="development mode: HTTP without tokens")] = False,
    no_http: Annotated[bool, typer.Option("--no-http", help="DIMSE gateway only")] = False,
) -> None:
    """Start the DICOM gateway, the DICOMweb API and the background workers."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_server_process()
    settings = _settings(
        config, data_dir, dicom_port=dicom_port, http_port=http_port, ae_title=ae_title, dev_mode=dev or None
    )
    archive = Archive.open(settings)
    from imaging.dimse.server import Gateway
    from imaging.jobs.setup import build_runner

    # The job runner first: building it imports the triage stack (torch, MONAI: seconds of CPU under the
    # GIL), which must not compete with the first associations. The port opens once the server is ready.
    runner = build_runner(archive)
    if settings.broker_url:
        from imaging.jobs.broker import BrokerDispatch

        runner.publisher = BrokerDispatch(settings.broker_url, namespace=settings.broker_namespace)
    gateway = Gateway(archive)
    extra = None
    processes = settings.gateway_processes()
    if processes > 1:
        from imaging.dimse.processes import GatewayProcesses

        # Our gateway accepts every connection and hands each to the least-loaded process.
        extra = GatewayProcesses(archive, processes - 1)
        port = gateway.start(dispatcher=extra.dispatcher)
        extra.start(settings.dicom_host, port)
    else:
        port = gateway.start()
    if settings.workers:
        runner.start()
    print(f"DICOM gateway: AE title {settings.ae_title} on {settings.dicom_host}:{port}", flush=True)
    try:
        if no_http:
            print("HTTP disabled", flush=True)
            wait_until_terminated()
        else:
            import uvicorn

            from dicomweb.app import create_app

            print(f"DICOMweb: http://{settings.http_host}:{settings.http_port}/dicomweb", flush=True)
            print(f"Viewer:   http://{settings.http_host}:{settings.http_port}/viewer", flush=True)
            uvicorn.run(
                create_app(archive), host=settings.http_host, port=settings.http_port, log_level="warning"
            )
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
        gateway.stop()
        if extra is not None:
            extra.stop()
        archive.close()


@app.command()
def worker(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    kind: Annotated[list[str], typer.Option(help="only these job kinds (e.g. triage on a GPU node)")] = [],  # noqa: B006
    threads: Annotated[int, typer.Option(help="concurrent jobs (broker mode)")] = 2,
) -> None:
    """Run background jobs only: from the broker when `broker_url` is set (scale-out), else in process."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_server_process()
    from imaging.jobs.setup import build_runner

    archive = Archive.open(_settings(config, data_dir))
    runner = build_runner(archive)
    if kind:
        runner.kinds = {k: v for k, v in runner.kinds.items() if k in kind}
    dispatch = None
    if archive.settings.broker_url:
        from imaging.jobs.broker import BrokerDispatch

        dispatch = BrokerDispatch(archive.settings.broker_url, namespace=archive.settings.broker_namespace)
        consumer = dispatch.worker(runner, threads=threads)
        consumer.start()
    else:
        runner.start()
    print("worker running; job kinds: " + ", ".join(sorted(runner.kinds)), flush=True)
    try:
        wait_until_terminated()
    except KeyboardInterrupt:
        pass
    finally:
        if dispatch is not None:
            consumer.stop()
            dispatch.close()
        else:
            runner.stop()
        archive.close()


@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(exists=True, help="files, folders or zip archives")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Import DICOM files through the same ingest path as C-STORE."""
    from imaging.importer import count_sources, import_paths

    archive = Archive.open(_settings(config, data_dir))
    with _progress() as progress:
        task = progress.add_task("importing", total=count_sources(paths))
        report = import_paths(archive.ingestor, paths, progress=lambda: progress.advance(task))
    for failure in report.failures[:20]:
        console.print(f"[red]failed[/red] {failure}")
    console.print(f"stored {report.stored}, duplicates {report.duplicates}, failed {report.failed}")
    raise typer.Exit(1 if report.failed else 0)


@app.command()
def reindex(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Rebuild the index from storage."""
    from imaging.maintenance import reindex as run

    archive = Archive.open(_settings(config, data_dir))
    with _progress() as progress:
        task = progress.add_task("reindexing", total=sum(1 for _ in archive.store.keys()))
        report = run(archive, progress=lambda: progress.advance(task))
    console.print(f"indexed {report.indexed}, unreadable {len(report.unreadable)}")
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
    from imaging.maintenance import fsck as run

    archive = Archive.open(_settings(config, data_dir))
    with _progress() as progress:
        task = progress.add_task("checking", total=None)
        report = run(archive, repair=repair, progress=lambda: progress.advance(task))
    console.print(
        f"checked {report.checked}: missing {len(report.missing)}, corrupt {len(report.corrupt)}, "
        f"unindexed {len(report.unindexed)}, repaired {report.repaired}"
    )
    for key in (report.missing + report.corrupt + report.unindexed)[:20]:
        console.print(f"  {key}")
    raise typer.Exit(0 if report.clean or repair else 1)


@app.command()
def stats(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Counts per partition and storage size."""
    from imaging.index.schema import Instance, Patient, Series, Study

    archive = Archive.open(_settings(config, data_dir))
    table = Table("partition", "patients", "studies", "series", "instances", "bytes")
    with archive.db.read() as s:
        partitions = s.scalars(select(Study.partition).distinct()).all()
        for part in partitions:
            table.add_row(
                part,
                str(s.scalar(select(func.count()).select_from(Patient).where(Patient.partition == part))),
                str(s.scalar(select(func.count()).select_from(Study).where(Study.partition == part))),
                str(
                    s.scalar(
                        select(func.count()).select_from(Series).join(Study).where(Study.partition == part)
                    )
                ),
                *[
                    str(v or 0)
                    for v in s.execute(
                        select(func.count(), func.sum(Instance.size))
                        .join(Series)
                        .join(Study)
                        .where(Study.partition == part)
                    ).one()
                ],
            )
    Console().print(table)


token_app = typer.Typer(help="API tokens (stored hashed).", no_args_is_help=True)
app.add_typer(token_app, name="token")

ROLES = ("ingest", "clinician", "researcher", "admin")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="ingest | clinician | researcher | admin")],
    project: Annotated[str, typer.Option(help="research project the token opens")] = "",
    description: Annotated[str, typer.Option()] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print a new bearer token; only its hash is stored."""
    from imaging.index.schema import ApiToken

    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}")
    if role == "researcher" and not project:
        raise typer.BadParameter("a researcher token needs --project")
    archive = Archive.open(_settings(config, data_dir))
    token = secrets.token_urlsafe(32)
    with archive.db.write() as s:
        s.add(
            ApiToken(
                token_hash=hashlib.sha256(token.encode()).hexdigest(),
                role=role,
                project=project,
                description=description,
            )
        )
    print(token)


viewer_app = typer.Typer(help="The built-in OHIF viewer, served at /viewer.", no_args_is_help=True)
app.add_typer(viewer_app, name="viewer")


@viewer_app.command("fetch")
def viewer_fetch(
    version: Annotated[str, typer.Option(help="@ohif/app version (default: the tested one)")] = "",
    dest: Annotated[Path | None, typer.Option(help="folder (default: settings.viewer_dir)")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Download the prebuilt OHIF viewer from the npm registry (`npm pack`) and unpack it."""
    from dicomweb.viewer import OHIF_VERSION, fetch_viewer, viewer_dir

    target = dest or viewer_dir(_settings(config, data_dir))
    console.print(f"fetching @ohif/app@{version or OHIF_VERSION} into {target}")
    fetch_viewer(target, version or OHIF_VERSION)
    console.print("done: `imaging serve` now serves it at /viewer")


def _mount_optional() -> None:
    """Sub-apps of the feature packages, mounted when present."""
    from imaging.research_cli import cohort_app, project_app

    app.add_typer(project_app, name="project")
    app.add_typer(cohort_app, name="cohort")
    from imaging.sharing.cli import audit_app, consent_app, share_app

    app.add_typer(share_app, name="share")
    app.add_typer(consent_app, name="consent")
    app.add_typer(audit_app, name="audit")
    try:
        from imaging.deid.cli import deid

        app.command("deid")(deid)
    except ImportError:
        pass
    try:
        from triage.cli import app as triage_app

        app.add_typer(triage_app, name="triage", help="AI triage with MONAI bundles.")
    except ImportError:
        pass


_mount_optional()

if __name__ == "__main__":
    app()
