"""`imaging federation ...`: this site's id and key, peer sites, federated counts, access requests sent
(`request`) and received (`incoming`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Column, Table

from imaging.archive import Archive
from imaging.console import CLI_USER, ConfigOpt, DataDirOpt, console, fail, open_archive
from imaging.errors import ArchiveError
from imaging.federation import client, permits, requesting
from imaging.federation.criteria import CohortDefinition, matching_studies, parse_cli
from imaging.federation.keys import key_path, public_key_pem
from imaging.federation.peers import list_peers, peer_info, remove_peer, set_peer

federation_app = typer.Typer(
    help="Federated cohort discovery and access requests across sites.", no_args_is_help=True
)
peer_app = typer.Typer(help="Peer sites: ids, public keys, discovery switches.", no_args_is_help=True)
request_app = typer.Typer(help="Access requests this site sends for its projects.", no_args_is_help=True)
incoming_app = typer.Typer(help="Access requests received from peer sites.", no_args_is_help=True)
federation_app.add_typer(peer_app, name="peer")
federation_app.add_typer(request_app, name="request")
federation_app.add_typer(incoming_app, name="incoming")

FilterOpt = Annotated[
    list[str], typer.Option("--filter", help="KEY=VALUE, DICOM matching (Modality, BodyPartExamined, ...)")
]
PriorityOpt = Annotated[str, typer.Option(help="AI triage priority at least: HIGH, MEDIUM, LOW")]
AgeOpt = Annotated[str, typer.Option(help="age band in years at the study: 50-70, 50- or -40")]
SexOpt = Annotated[str, typer.Option(help="PatientSex: M, F or O")]
FindingsOpt = Annotated[int | None, typer.Option(help="at least this many AI findings")]
DiameterOpt = Annotated[float | None, typer.Option(help="largest AI finding at least this diameter (mm)")]


def _cohort(
    filters: list[str], min_priority: str, age: str, sex: str, findings: int | None, diameter: float | None
) -> CohortDefinition:
    try:
        return parse_cli(
            filters,
            min_priority=min_priority,
            age=age,
            sex=sex,
            min_findings=findings,
            min_diameter_mm=diameter,
        )
    except ArchiveError as exc:
        fail(exc)


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=1, default=str))


def _run(archive: Archive, fn: Any, *args: Any, **kw: Any) -> Any:
    try:
        return fn(archive, *args, **kw)
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()


# ------------------------------------------------------------------------------------ site
@federation_app.command("site")
def site(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """This site's id and public key (made on first use): register them at every peer site."""
    archive = open_archive(config, data_dir)
    settings = archive.settings
    pem = public_key_pem(settings)
    archive.close()
    console.print(f"site id: {settings.federation_site_id or '(not set: federation_site_id)'}")
    console.print(f"private key: {key_path(settings)} (keep it apart from the data)")
    typer.echo(pem, nl=False)


# ------------------------------------------------------------------------------------ peers
@peer_app.command("add")
def peer_add(
    name: str,
    site_id: Annotated[str | None, typer.Option(help="the peer's federation_site_id")] = None,
    url: Annotated[str | None, typer.Option(help="its base URL, e.g. https://archive.example.org")] = None,
    public_key_file: Annotated[Path | None, typer.Option(help="its public key (PEM, from `site`)")] = None,
    discovery: Annotated[
        bool | None, typer.Option("--discovery/--no-discovery", help="answer its counts")
    ] = None,
    requests: Annotated[
        bool | None, typer.Option("--requests/--no-requests", help="accept its requests")
    ] = None,
    ask: Annotated[bool | None, typer.Option("--ask/--no-ask", help="ask it when we count")] = None,
    delivery_peer: Annotated[str | None, typer.Option(help="sharing peer for its approved requests")] = None,
    ca_file: Annotated[str | None, typer.Option(help="CA bundle for its https URL")] = None,
    description: str | None = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Add a peer site, or change one (options left out keep their value)."""
    key = public_key_file.read_text() if public_key_file else None
    fields = {"site_id": site_id, "url": url, "public_key": key, "discovery": discovery, "requests": requests}
    fields |= {"ask": ask, "delivery_peer": delivery_peer, "ca_file": ca_file, "description": description}
    peer = _run(open_archive(config, data_dir), set_peer, name, user=CLI_USER, **fields)
    console.print(f"peer {name} ({peer.site_id}): discovery {'on' if peer.discovery else 'off'}")


@peer_app.command("discovery")
def peer_discovery(
    name: str,
    state: Annotated[str, typer.Argument(help="on or off")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Switch discovery on or off for a peer site (refused queries are audited)."""
    if state not in ("on", "off"):
        fail("state is on or off")
    _run(open_archive(config, data_dir), set_peer, name, user=CLI_USER, discovery=state == "on")
    console.print(f"discovery {state} for {name}")


@peer_app.command("list")
def peer_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    archive = open_archive(config, data_dir)
    table = Table("name", "site id", "url", "discovery", "requests", "ask", "delivery peer")
    with archive.db.read() as session:
        for p in list_peers(session):
            info = peer_info(p)
            table.add_row(
                p.name,
                p.site_id,
                p.url,
                *(str(info[k]) for k in ("discovery", "requests", "ask")),
                p.delivery_peer,
            )
    archive.close()
    Console().print(table)


@peer_app.command("remove")
def peer_remove(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    _run(open_archive(config, data_dir), remove_peer, name, user=CLI_USER)
    console.print(f"peer {name} removed")


@peer_app.command("test")
def peer_test(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """A signed call the peer site must accept (it knows our site id and key)."""
    _print_json(_run(open_archive(config, data_dir), client.ping, name))


# ------------------------------------------------------------------------------------ counts
@federation_app.command("count")
def count(
    filter_: FilterOpt = [],  # noqa: B006
    min_priority: PriorityOpt = "",
    age: AgeOpt = "",
    sex: SexOpt = "",
    min_findings: FindingsOpt = None,
    min_diameter: DiameterOpt = None,
    peer: Annotated[list[str] | None, typer.Option("--peer", help="only this peer (repeatable)")] = None,
    here_only: Annotated[
        bool, typer.Option("--here-only", help="this site's exact count, without disclosure control")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """How many studies match, here and at every peer site asked (counts only, small cells suppressed)."""
    cohort = _cohort(filter_, min_priority, age, sex, min_findings, min_diameter)
    archive = open_archive(config, data_dir)
    if here_only:  # the operator's own index: the exact count, nothing leaves the site
        with archive.db.read() as session:
            members = matching_studies(session, cohort)
        archive.close()
        exact = {"studies": len(members), "patients": len({m.patient_pk for m in members})}
        _print_json({"definition": json.loads(cohort.canonical()), **exact})
        return
    rows = _run(archive, client.count_everywhere, cohort, user=CLI_USER, peers=peer)
    if as_json:
        _print_json({"sites": [r.as_json() for r in rows], "total": client.totals(rows)})
        return
    table = Table("site", "status", "studies", "patients", "note", title=cohort.canonical())
    for r in rows:
        shown = (str(r.studies), str(r.patients)) if r.status == "answered" else (f"<{r.threshold}", "")
        if r.status not in ("answered", "suppressed"):
            shown = ("", "")
        table.add_row(r.name, r.status, *shown, r.reason[:80])
    total = client.totals(rows)
    table.add_row("total", "", str(total["studies"]), str(total["patients"]), "")
    Console().print(table)


# ------------------------------------------------------------------------------------ requests sent
@request_app.command("send")
def request_send(
    peer: Annotated[str, typer.Argument(help="the holding site (a federation peer)")],
    project: Annotated[str, typer.Option(help="our research project the data is for")],
    purpose: Annotated[
        str, typer.Option(help="what the data is for (the holding site's admin reads it)")
    ] = "",
    filter_: FilterOpt = [],  # noqa: B006
    min_priority: PriorityOpt = "",
    age: AgeOpt = "",
    sex: SexOpt = "",
    min_findings: FindingsOpt = None,
    min_diameter: DiameterOpt = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Ask a holding site for a cohort, for one of our projects (its key must be shared out of band)."""
    cohort = _cohort(filter_, min_priority, age, sex, min_findings, min_diameter)
    archive = open_archive(config, data_dir)
    result = _run(archive, requesting.send, peer, project, cohort, purpose=purpose, user=CLI_USER)
    _print_json(result)
    if result["status"] == "unsent":
        console.print(f"[yellow]not sent yet[/yellow]: {result['last_error']} (retry: request status)")


@request_app.command("status")
def request_status(request_uid: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Ask the holding site how the request stands (and send it, if it never arrived)."""
    _print_json(_run(open_archive(config, data_dir), requesting.refresh, request_uid))


@request_app.command("list")
def request_list(
    project: Annotated[str | None, typer.Option(help="only this project's")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    archive = open_archive(config, data_dir)
    table = Table(Column("request", no_wrap=True), "peer", "project", "status", "delivery", "updated")
    with archive.db.read() as session:
        for r in requesting.list_requests(session, project):
            table.add_row(
                r.request_uid, r.peer, r.project, r.status, r.delivery.get("state", ""), str(r.updated_at)
            )
    archive.close()
    Console().print(table)


# ------------------------------------------------------------------------------------ requests received
@incoming_app.command("list")
def incoming_list(
    status: Annotated[str | None, typer.Option(help="pending, approved or rejected")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    archive = open_archive(config, data_dir)
    table = Table(Column("request", no_wrap=True), "site", "project", "status", "definition", "purpose")
    with archive.db.read() as session:
        for r in permits.list_requests(session, status):
            table.add_row(
                r.request_uid, r.site_id, r.project, r.status, json.dumps(r.definition), r.purpose[:60]
            )
    archive.close()
    Console().print(table)


@incoming_app.command("show")
def incoming_show(request_uid: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    archive = open_archive(config, data_dir)
    with archive.db.read() as session:
        try:
            data = permits.info(session, permits.get_request(session, request_uid))
        except ArchiveError as exc:
            fail(exc)
    archive.close()
    _print_json(data)


@incoming_app.command("approve")
def incoming_approve(
    request_uid: str,
    deliver_to: Annotated[str, typer.Option(help="sharing peer: the requesting project's STOW root")] = "",
    project: Annotated[
        str, typer.Option(help="local project holding the same key (default: same name)")
    ] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Approve: the matching studies are shared de-identified with the project's key (the workers deliver)."""
    archive = open_archive(config, data_dir)
    result = _run(
        archive, permits.approve, request_uid, deliver_to=deliver_to, project=project, user=CLI_USER
    )
    _print_json(result)


@incoming_app.command("reject")
def incoming_reject(
    request_uid: str,
    reason: Annotated[str, typer.Option(help="told to the requester (no patient detail)")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    _print_json(
        _run(open_archive(config, data_dir), permits.reject, request_uid, reason=reason, user=CLI_USER)
    )
