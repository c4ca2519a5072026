"""`imaging audit export`: the audit trail as JSON lines or DICOM audit messages."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer

from imaging import audit
from imaging.console import ConfigOpt, DataDirOpt, fail, open_archive

app = typer.Typer(no_args_is_help=True)


@app.command("export")
def audit_export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl | xml")] = "jsonl",
    event: Annotated[str | None, typer.Option(help="EventID code, e.g. 110104")] = None,
    study: Annotated[str | None, typer.Option()] = None,
    since: Annotated[dt.datetime | None, typer.Option(help="UTC")] = None,
    until: Annotated[dt.datetime | None, typer.Option(help="UTC")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Write the audit trail as JSON lines or DICOM audit messages (one per line)."""
    archive = open_archive(config, data_dir)
    out = output.open("w", encoding="utf-8") if output else sys.stdout
    try:
        with archive.db.read() as session:
            for line in audit.export(session, fmt, event=event, study_uid=study, since=since, until=until):
                out.write(line)
    except ValueError as exc:
        fail(exc)
    finally:
        if output:
            out.close()
        archive.close()
