"""`imaging consent ...`: the opt-out registry (an opt-out also cancels queued deliveries) and withdrawals
of consent with erasure (`erase`). `withdraw` is the former name of `opt-in` (it never erased anything)
and remains, hidden, for scripts that use it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from imaging.consent import erasure_status, import_csv, opt_out, revoke_opt_out, withdraw_consent
from imaging.console import CLI_USER, ConfigOpt, DataDirOpt, console, fail, open_archive
from imaging.errors import ArchiveError

app = typer.Typer(no_args_is_help=True)


@app.command("opt-out")
def consent_opt_out(
    patient_id: Annotated[str, typer.Argument(help="PatientID (clinical)")],
    issuer: Annotated[str, typer.Option(help="IssuerOfPatientID")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Record an opt-out; queued deliveries of the patient are cancelled at once."""
    archive = open_archive(config, data_dir)
    with archive.db.write() as session:
        new = opt_out(session, patient_id, issuer, source="cli", user=CLI_USER)
    archive.close()
    console.print("opt-out recorded" if new else "opt-out was already recorded")


@app.command("opt-in")
def consent_opt_in(
    patient_id: str,
    issuer: Annotated[str, typer.Option(help="IssuerOfPatientID")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke an opt-out: the patient consents to secondary use again."""
    archive = open_archive(config, data_dir)
    with archive.db.write() as session:
        done = revoke_opt_out(session, patient_id, issuer, user=CLI_USER)
    archive.close()
    console.print("opt-out revoked" if done else "no opt-out was recorded")


@app.command("withdraw", hidden=True, deprecated=True)
def consent_withdraw(
    patient_id: str,
    issuer: Annotated[str, typer.Option(help="IssuerOfPatientID")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Former name of `opt-in` (revokes an opt-out; erases nothing: see `erase`)."""
    console.print(
        "note: `consent withdraw` is now `consent opt-in`; a withdrawal with erasure is `consent erase`"
    )
    consent_opt_in(patient_id, issuer, config, data_dir)


@app.command("erase")
def consent_erase(
    patient_id: Annotated[str, typer.Argument(help="PatientID (clinical)")],
    issuer: Annotated[str, typer.Option(help="IssuerOfPatientID")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Withdraw consent with erasure (GDPR Art. 17): opt out, erase the de-identified copies in every
    project and cohort, and ask every peer that received them to delete them. The background workers of
    `imaging serve` carry it out; `imaging consent status ID` shows the outcome."""
    archive = open_archive(config, data_dir)
    with archive.db.write() as session:
        request = withdraw_consent(session, patient_id, issuer, source="cli", user=CLI_USER)
    archive.close()
    console.print(f"erasure request {request.request_pk} recorded")
    print(request.request_pk)


@app.command("status")
def consent_status(
    request_id: Annotated[int, typer.Argument(help="erasure request number")],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """The steps of an erasure request and what each peer confirmed."""
    archive = open_archive(config, data_dir)
    try:
        with archive.db.read() as session:
            status = erasure_status(session, request_id)
    except ArchiveError as exc:
        fail(exc)
    finally:
        archive.close()
    print(json.dumps(status, indent=1))


@app.command("import")
def consent_import(
    csv_file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="PatientID[,IssuerOfPatientID]")
    ],
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Import opt-outs from a CSV file."""
    archive = open_archive(config, data_dir)
    with archive.db.write() as session:
        added = import_csv(session, csv_file, user=CLI_USER)
    archive.close()
    console.print(f"{added} new opt-outs")
