"""`imaging delete ...` (a study, series or instance) and `imaging retention ...` (rules, their previews
and runs, the purge of objects whose deletion is due)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from imaging.console import CLI_USER, ConfigOpt, DataDirOpt, console, fail, open_archive
from imaging.errors import ArchiveError
from imaging.index.removal import PendingDeletion, purge
from imaging.partition import CLINICAL
from imaging.retention import deletion, rules
from imaging.retention.schedule import is_due

delete_app = typer.Typer(
    help="Delete a study, series or instance (audited; storage reclaimed).", no_args_is_help=True
)
retention_app = typer.Typer(help="Retention rules and pending deletions.", no_args_is_help=True)
rule_app = typer.Typer(help="Retention rules.", no_args_is_help=True)
retention_app.add_typer(rule_app, name="rule")

PartitionOpt = Annotated[str, typer.Option("--partition", help="clinical or a project name")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]


def _delete(
    study: str,
    series: str | None,
    sop: str | None,
    partition: str,
    yes: bool,
    config: ConfigOpt,
    data_dir: DataDirOpt,
) -> None:
    what = "instance" if sop else "series" if series else "study"
    if not yes:
        typer.confirm(f"Delete this {what} from partition {partition}? It cannot be undone", abort=True)
    archive = open_archive(config, data_dir)
    try:
        report = deletion.delete(archive, partition, study, series, sop, user=CLI_USER)
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()
    console.print(
        f"deleted {report.instances} instances of {len(report.studies)} studies; "
        f"{report.objects_deleted} objects, {report.bytes} bytes reclaimed"
    )


@delete_app.command("study")
def delete_study(
    study: str,
    partition: PartitionOpt = CLINICAL,
    yes: YesOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Delete a study (and what rejection notes hid of it)."""
    _delete(study, None, None, partition, yes, config, data_dir)


@delete_app.command("series")
def delete_series(
    study: str,
    series: str,
    partition: PartitionOpt = CLINICAL,
    yes: YesOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Delete a series."""
    _delete(study, series, None, partition, yes, config, data_dir)


@delete_app.command("instance")
def delete_instance(
    study: str,
    series: str,
    sop: str,
    partition: PartitionOpt = CLINICAL,
    yes: YesOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Delete an instance."""
    _delete(study, series, sop, partition, yes, config, data_dir)


@rule_app.command("set")
def rule_set(
    name: str,
    partition: PartitionOpt = CLINICAL,
    modality: Annotated[list[str], typer.Option(help="only studies with this modality (repeatable)")] = [],  # noqa: B006
    received_days: Annotated[float | None, typer.Option(help="received more than N days ago")] = None,
    accessed_days: Annotated[float | None, typer.Option(help="not read for N days")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="keep the rule but do not run it")] = False,
    description: str = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Add or replace a retention rule (applied daily; `preview` first)."""
    archive = open_archive(config, data_dir)
    try:
        rule = rules.set_rule(
            archive,
            name,
            partition=partition,
            modalities=modality,
            received_days=received_days,
            accessed_days=accessed_days,
            enabled=not disabled,
            description=description,
            user=CLI_USER,
        )
        print(json.dumps(rules.rule_info(rule)))
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()


@rule_app.command("list")
def rule_list(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    archive = open_archive(config, data_dir)
    table = Table("name", "partition", "modalities", "received days", "accessed days", "enabled", "last run")
    with archive.db.read() as session:
        for rule in rules.list_rules(session):
            info = rules.rule_info(rule)
            table.add_row(
                rule.name,
                rule.partition,
                ",".join(rule.modalities) or "any",
                "" if rule.received_days is None else f"{rule.received_days:g}",
                "" if rule.accessed_days is None else f"{rule.accessed_days:g}",
                "yes" if rule.enabled else "no",
                info["last_run_at"] or "",
            )
    archive.close()
    Console().print(table)


@rule_app.command("remove")
def rule_remove(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    archive = open_archive(config, data_dir)
    try:
        rules.remove_rule(archive, name)
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()


@retention_app.command("preview")
def preview(name: str, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """What the rule would delete now (JSON: totals and the studies)."""
    archive = open_archive(config, data_dir)
    try:
        print(json.dumps(rules.preview(archive, name).to_dict(), indent=1))
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()


@retention_app.command("run")
def run(name: str, yes: YesOpt = False, config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply a rule now (audited as Study Deleted); prints what it deleted."""
    archive = open_archive(config, data_dir)
    try:
        found = rules.preview(archive, name)
        if not yes and found.studies:
            typer.confirm(f"Delete {found.studies} studies ({found.bytes} bytes)?", abort=True)
        print(json.dumps(rules.apply(archive, name, user=CLI_USER).to_dict(), indent=1))
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()


@retention_app.command("purge")
def purge_now(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Delete now the objects whose deletion is due (what the background purge job does)."""
    archive = open_archive(config, data_dir)
    report = purge(archive.db, archive.store, is_due=is_due(archive.settings))
    archive.close()
    console.print(f"deleted {report.deleted} objects; {report.waiting} wait for their delay")


@retention_app.command("pending")
def pending(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Objects waiting for deletion, per reason (rejected:<title>, deleted, retention:<rule>, erased)."""
    archive = open_archive(config, data_dir)
    with archive.db.read() as session:
        rows = session.execute(
            select(PendingDeletion.reason, func.count()).group_by(PendingDeletion.reason)
        ).all()
    archive.close()
    print(json.dumps({reason: int(count) for reason, count in rows}))
