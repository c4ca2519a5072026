"""`imaging share ...`: peers, policies, the outbox, share links."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from imaging.console import CLI_USER, ConfigOpt, DataDirOpt, console, fail, open_archive
from imaging.errors import ArchiveError
from imaging.sharing import outbox
from imaging.sharing.links import create_link, expires_in_days, link_info, list_links, revoke
from imaging.sharing.peers import add_peer, list_peers, peer_info, remove_peer
from imaging.sharing.policies import add_policy, list_policies, policy_info, remove_policy

share_app = typer.Typer(
    help="Cross-site sharing: peers, policies, deliveries, share links.", no_args_is_help=True
)
peer_app = typer.Typer(help="Peer sites.", no_args_is_help=True)
policy_app = typer.Typer(help="Sharing policies.", no_args_is_help=True)
link_app = typer.Typer(
    help="Share links (expiring, revocable read-only DICOMweb roots).", no_args_is_help=True
)
share_app.add_typer(peer_app, name="peer")
share_app.add_typer(policy_app, name="policy")
share_app.add_typer(link_app, name="link")


# ------------------------------------------------------------------------------------ share
@share_app.command("status")
def status(
    peer: Annotated[str | None, typer.Option(help="only this peer")] = None,
    study: Annotated[str | None, typer.Option(help="only this Study Instance UID (source or peer)")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Deliveries per peer and study: counts per status and the last error."""

    archive = open_archive(config, data_dir)
    with archive.db.read() as session:
        summary = outbox.summary(session)
        groups = outbox.groups(session, peer=peer, study_uid=study)
    totals = Table(
        "peer", "pending", "verified", "sent", "failed", "cancelled", "quarantined", title="outbox"
    )
    for name, counts in sorted(summary.items()):
        totals.add_row(
            name,
            *[
                str(counts.get(s, 0))
                for s in ("pending", "verified", "sent", "failed", "cancelled", "quarantined")
            ],
        )
    out = Console()
    out.print(totals)
    detail = Table("peer", "project", "study (source)", "counts", "last error", title="deliveries")
    for g in groups:
        group_counts = ", ".join(f"{k} {v}" for k, v in sorted(g.counts.items()))
        detail.add_row(
            g.peer, g.project or "(identified)", g.StudyInstanceUID, group_counts, g.last_error[:80]
        )
    out.print(detail)
    archive.close()


@share_app.command("study")
def share_study(
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID (clinical)")],
    peer: Annotated[list[str], typer.Option("--peer", "-p", help="peer name (repeatable)")],
    project: Annotated[str, typer.Option(help="research project whose profile and key de-identify")] = "",
    identified: Annotated[bool, typer.Option("--identified", help="send identified (no project)")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Queue a stable study for peers now (delivered by the server's workers)."""

    archive = open_archive(config, data_dir)
    try:
        queued = outbox.share_study(
            archive, study_uid, peer, project=project, identified=identified, user=CLI_USER
        )
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()
    for name, count in queued.items():
        console.print(f"{name}: {count} instances queued")


@share_app.command("retry")
def retry(
    peer: Annotated[str | None, typer.Option()] = None,
    study: Annotated[str | None, typer.Option()] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Re-arm failed deliveries."""

    archive = open_archive(config, data_dir)
    with archive.db.write() as session:
        count = outbox.retry(session, peer=peer, study_uid=study)
    archive.close()
    console.print(f"re-armed {count} deliveries")


@peer_app.command("add")
def peer_add(
    name: str,
    kind: Annotated[str, typer.Option(help="dicomweb | dimse | orthanc")],
    url: Annotated[str, typer.Option(help="DICOMweb root or Orthanc URL")] = "",
    ae_title: Annotated[str, typer.Option(help="called AE title (dimse)")] = "",
    host: Annotated[str, typer.Option()] = "",
    port: Annotated[int, typer.Option()] = 0,
    auth: Annotated[str, typer.Option(help="none | basic | bearer")] = "none",
    username: Annotated[str, typer.Option()] = "",
    secret_env: Annotated[
        str, typer.Option(help="environment variable holding the password / token (kept out of argv)")
    ] = "",
    ca_file: Annotated[str, typer.Option()] = "",
    client_cert: Annotated[str, typer.Option()] = "",
    client_key: Annotated[str, typer.Option()] = "",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="do not verify the peer's TLS certificate")
    ] = False,
    tls: Annotated[bool, typer.Option("--tls", help="DIMSE over TLS")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Add or change a peer site."""

    secret = os.environ.get(secret_env) if secret_env else None
    if secret_env and secret is None:
        fail(f"environment variable {secret_env} is not set")
    archive = open_archive(config, data_dir)
    try:
        add_peer(
            archive,
            name,
            kind,
            secret=secret,
            url=url,
            ae_title=ae_title,
            host=host,
            port=port,
            auth=auth,
            username=username,
            ca_file=ca_file,
            client_cert=client_cert,
            client_key=client_key,
            tls_verify=not insecure,
            tls=tls,
            user=CLI_USER,
        )
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()
    console.print(f"peer {name} saved")


@peer_app.command("list")
def peer_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:

    archive = open_archive(config, data_dir)
    with archive.db.read() as session:
        for peer in list_peers(session):
            print(json.dumps(peer_info(peer)))
    archive.close()


@peer_app.command("remove")
def peer_remove(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:

    archive = open_archive(config, data_dir)
    try:
        remove_peer(archive, name, user=CLI_USER)
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()


@policy_app.command("add")
def policy_add(
    name: str,
    peer: Annotated[list[str], typer.Option("--peer", "-p", help="peer name (repeatable)")],
    project: Annotated[str, typer.Option(help="research project (de-identification profile + key)")] = "",
    identified: Annotated[bool, typer.Option("--identified")] = False,
    modality: Annotated[list[str] | None, typer.Option("--modality", help="any of (repeatable)")] = None,
    body_part: Annotated[list[str] | None, typer.Option("--body-part", help="any of (repeatable)")] = None,
    description_regex: Annotated[
        str, typer.Option(help="searched in StudyDescription, case-insensitive")
    ] = "",
    priority: Annotated[
        list[str] | None, typer.Option("--priority", help="HIGH | MEDIUM | LOW (repeatable)")
    ] = None,
    disabled: Annotated[bool, typer.Option("--disabled")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Add or replace a sharing policy."""

    archive = open_archive(config, data_dir)
    try:
        add_policy(
            archive,
            name,
            peers=peer,
            project=project,
            identified=identified,
            modalities=modality or [],
            body_parts=body_part or [],
            description_regex=description_regex,
            priorities=priority or [],
            enabled=not disabled,
            user=CLI_USER,
        )
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()
    console.print(f"policy {name} saved")


@policy_app.command("list")
def policy_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:

    archive = open_archive(config, data_dir)
    with archive.db.read() as session:
        for policy in list_policies(session):
            print(json.dumps(policy_info(policy)))
    archive.close()


@policy_app.command("remove")
def policy_remove(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:

    archive = open_archive(config, data_dir)
    try:
        remove_policy(archive, name, user=CLI_USER)
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()


@link_app.command("create")
def link_create(
    study: Annotated[
        list[str] | None, typer.Option("--study", help="Study Instance UID (repeatable)")
    ] = None,
    partition: Annotated[str, typer.Option(help="partition of the studies")] = "clinical",
    cohort: Annotated[str, typer.Option(help="PROJECT/COHORT: the cohort's studies as they are now")] = "",
    days: Annotated[float, typer.Option(help="expires after this many days")] = 7.0,
    description: Annotated[str, typer.Option()] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Print a new share-link token (shown once; only its hash is stored)."""

    archive = open_archive(config, data_dir)
    try:
        token, link = create_link(
            archive,
            study_uids=study or None,
            cohort=tuple(cohort.split("/", 1)) if cohort else None,  # type: ignore[arg-type]
            partition=partition,
            expires_in=expires_in_days(days),
            created_by=CLI_USER,
            description=description,
        )
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()
    console.print(f"share link {link.link_pk}, expires {link.expires_at.isoformat()}Z")
    print(token)


@link_app.command("revoke")
def link_revoke(link_id: int, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:

    archive = open_archive(config, data_dir)
    try:
        with archive.db.write() as session:
            revoke(session, link_id, user=CLI_USER)
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()
    console.print(f"share link {link_id} revoked")


@link_app.command("list")
def link_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:

    archive = open_archive(config, data_dir)
    with archive.db.read() as session:
        for link in list_links(session, include_inactive=True):
            print(json.dumps(link_info(link)))
    archive.close()
