"""The consent registry's page: look a patient up, record or revoke an opt-out, withdraw consent with
erasure, import opt-outs from CSV, and follow the erasure requests — the domain functions of
`/api/consent` and `imaging consent ...`, so each change is audited alike. Patient identifiers travel in
form bodies only, and no answer repeats them."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from dicomweb.ui.render import page_or_fragment
from imaging import consent
from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.errors import InvalidRequest

router = APIRouter(prefix="/ui/consent", include_in_schema=False)
Admin = Annotated[Caller, Depends(Require(Permission.CONSENT))]
PatientID = Annotated[str, Form(min_length=1, max_length=64)]
Issuer = Annotated[str, Form(max_length=64)]
MAX_CSV = 16 * 1024 * 1024


def _answer(request: Request, caller: Caller, text: str, kind: str = "ok") -> Response:
    with caller.archive.db.read() as session:
        opt_outs = consent.opt_out_count(session)
        erasures = consent.recent_erasures(session)
    return page_or_fragment(
        request,
        caller,
        "consent.html",
        "_consent_result.html",
        result={"text": text, "kind": kind} if text else None,
        opt_outs=opt_outs,
        erasures=erasures,
    )


@router.get("", summary="The consent registry (page)")
def consent_page(request: Request, caller: Admin) -> Response:
    return _answer(request, caller, "")


@router.post("/lookup", summary="Whether a patient opted out")
def lookup(request: Request, caller: Admin, PatientID: PatientID, IssuerOfPatientID: Issuer = "") -> Response:
    with caller.archive.db.read() as session:
        opted_out = consent.is_opted_out(session, PatientID.strip(), IssuerOfPatientID.strip())
    text = "This patient has opted out." if opted_out else "This patient has not opted out."
    return _answer(request, caller, text, "warn" if opted_out else "ok")


@router.post("/opt-out", summary="Record an opt-out")
def opt_out(
    request: Request, caller: Admin, PatientID: PatientID, IssuerOfPatientID: Issuer = ""
) -> Response:
    with caller.archive.db.write() as session:
        new = consent.opt_out(
            session, PatientID.strip(), IssuerOfPatientID.strip(), source="ui", user=caller.user
        )
    text = (
        "Opt-out recorded; queued deliveries of this patient are cancelled." if new else "Already opted out."
    )
    return _answer(request, caller, text)


@router.post("/opt-in", summary="Revoke an opt-out")
def opt_in(request: Request, caller: Admin, PatientID: PatientID, IssuerOfPatientID: Issuer = "") -> Response:
    with caller.archive.db.write() as session:
        revoked = consent.revoke_opt_out(
            session, PatientID.strip(), IssuerOfPatientID.strip(), user=caller.user
        )
    return _answer(request, caller, "Opt-out revoked." if revoked else "This patient had not opted out.")


@router.post("/erasure", summary="Withdraw consent with erasure")
def erasure(
    request: Request, caller: Admin, PatientID: PatientID, IssuerOfPatientID: Issuer = ""
) -> Response:
    with caller.archive.db.write() as session:
        row = consent.withdraw_consent(
            session, PatientID.strip(), IssuerOfPatientID.strip(), source="ui", user=caller.user
        )
        number = row.request_pk
    return _answer(
        request, caller, f"Erasure request {number} recorded; its steps are listed below as they run."
    )


@router.post("/import", summary="Import opt-outs from a CSV file")
async def import_csv(
    request: Request, caller: Admin, csv_file: Annotated[UploadFile, Form(alias="csv")]
) -> Response:
    data = await csv_file.read(MAX_CSV + 1)
    if len(data) > MAX_CSV:
        raise InvalidRequest("the CSV file is larger than 16 MB")
    try:
        text = data.decode("utf-8-sig")
        list(csv.reader(io.StringIO(text)))  # refuse what is not CSV before writing anything
    except (UnicodeDecodeError, csv.Error):
        raise InvalidRequest("the file is not a UTF-8 CSV file") from None
    added = await run_in_threadpool(_import, caller, text)
    return await run_in_threadpool(_answer, request, caller, f"{added} new opt-outs imported.")


def _import(caller: Caller, text: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ui-upload.csv"
        path.write_text(text, encoding="utf-8")
        with caller.archive.db.write() as session:
            return consent.import_csv(session, path, user=caller.user)
