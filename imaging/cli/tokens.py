"""`imaging token create|list|revoke`: API bearer tokens for PACS and scripts (only their SHA-256 is
stored). The same domain functions as `/api/tokens`, so both validate and audit alike."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from imaging.access.tokens import (
    ROLES,
    create_token,
    list_tokens,
    parse_expiry,
    revoke_token,
    token_info,
)
from imaging.console import CLI_USER, ConfigOpt, DataDirOpt, console, fail, open_archive
from imaging.errors import ArchiveError

app = typer.Typer(no_args_is_help=True)
DEFAULT_EXPIRY = "365d"


@app.command("create")
def token_create(
    role: Annotated[str, typer.Option(help="ingest | clinician | researcher | admin")],
    project: Annotated[str, typer.Option(help="the research project a researcher token opens")] = "",
    description: Annotated[str, typer.Option(help="what the token is for (shown by `token list`)")] = "",
    expires: Annotated[str, typer.Option(help="90d, 12h, 30m, an ISO date (UTC), or never")] = DEFAULT_EXPIRY,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print a new bearer token (shown once; only its hash is stored)."""
    if role not in ROLES:
        raise typer.BadParameter(f"role must be one of {', '.join(ROLES)}")
    archive = open_archive(config, data_dir)
    try:
        token, row = create_token(
            archive.db,
            role=role,
            project=project,
            description=description,
            expires_at=parse_expiry(expires),
            created_by=CLI_USER,
        )
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()
    expiry = row.expires_at.isoformat(timespec="seconds") + "Z" if row.expires_at else "never"
    console.print(f"token {row.token_pk} ({role}) expires {expiry}")
    print(token)


@app.command("list")
def token_list(
    all_: Annotated[bool, typer.Option("--all", help="also revoked and expired tokens")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """The tokens (never the tokens themselves: id, role, project, expiry, who created them)."""
    archive = open_archive(config, data_dir)
    try:
        with archive.db.read() as session:
            rows = [token_info(t) for t in list_tokens(session, include_inactive=all_)]
    finally:
        archive.close()
    if as_json:
        for info in rows:
            print(json.dumps(info))
        return
    table = Table("id", "role", "project", "description", "created", "expires", "state")
    for info in rows:
        state = "revoked" if info["revoked_at"] else ("active" if info["active"] else "expired")
        table.add_row(
            str(info["id"]),
            info["role"],
            info["project"],
            info["description"],
            info["created_at"],
            info["expires_at"] or "never",
            state,
        )
    console.print(table)


@app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="the id `token list` shows")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke a token (a running server stops accepting it within 2 seconds)."""
    archive = open_archive(config, data_dir)
    try:
        done = revoke_token(archive.db, token_id, user=CLI_USER)
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()
    console.print(f"token {token_id} revoked" if done else f"token {token_id} was already revoked")
