"""`imaging consent ...`: the opt-out registry (an opt-out also cancels queued deliveries)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from imaging.consent import import_csv, opt_out, withdraw_opt_out
from imaging.console import CLI_USER, ConfigOpt, DataDirOpt, console, open_archive

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


@app.command("withdraw")
def consent_withdraw(
    patient_id: str,
    issuer: Annotated[str, typer.Option(help="IssuerOfPatientID")] = "",
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Withdraw an opt-out."""
    archive = open_archive(config, data_dir)
    with archive.db.write() as session:
        done = withdraw_opt_out(session, patient_id, issuer, user=CLI_USER)
    archive.close()
    console.print("opt-out withdrawn" if done else "no opt-out was recorded")


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
