"""`imaging token ...`: API bearer tokens (only their SHA-256 is stored)."""

from __future__ import annotations

from typing import Annotated

import typer

from imaging.access.tokens import ROLES, create_token
from imaging.console import ConfigOpt, DataDirOpt, fail, open_archive
from imaging.errors import ArchiveError

app = typer.Typer(no_args_is_help=True)


@app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="ingest | clinician | researcher | admin")],
    project: Annotated[str, typer.Option(help="research project the token opens")] = "",
    description: Annotated[str, typer.Option()] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print a new bearer token; only its hash is stored."""
    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}")
    if role == "researcher" and not project:
        raise typer.BadParameter("a researcher token needs --project")
    archive = open_archive(config, data_dir)
    try:
        token = create_token(archive.db, role=role, project=project, description=description)
    except ArchiveError as exc:
        fail(exc)
    print(token)
