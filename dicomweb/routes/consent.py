"""`/api/consent`: the opt-out registry and withdrawals with erasure (admin). Patient identifiers travel in
bodies, never in URLs.

`POST /api/consent/withdrawals` is the former name of `/opt-ins` (it revokes an opt-out and erases nothing);
it stays for existing clients. A withdrawal of consent with erasure is `POST /api/consent/erasures`."""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from imaging import consent
from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.errors import InvalidRequest

router = APIRouter(prefix="/api/consent", tags=["Consent"])
Admin = Annotated[Caller, Depends(Require(Permission.CONSENT))]


class PatientIn(BaseModel):
    PatientID: str = Field(min_length=1, max_length=64)
    IssuerOfPatientID: str = Field(default="", max_length=64)


@router.post("/opt-outs", status_code=201, summary="Record an opt-out (cancels queued deliveries)")
def post_opt_out(body: PatientIn, caller: Admin) -> dict[str, Any]:
    with caller.archive.db.write() as session:
        new = consent.opt_out(session, body.PatientID, body.IssuerOfPatientID, source="api", user=caller.user)
    return {"recorded": new}


@router.post("/opt-ins", summary="Revoke an opt-out (the patient consents again)")
def post_opt_in(body: PatientIn, caller: Admin) -> dict[str, Any]:
    with caller.archive.db.write() as session:
        revoked = consent.revoke_opt_out(session, body.PatientID, body.IssuerOfPatientID, user=caller.user)
    return {"revoked": revoked}


@router.post("/withdrawals", summary="Former name of /opt-ins: revokes an opt-out", deprecated=True)
def post_withdrawal(body: PatientIn, caller: Admin) -> dict[str, Any]:
    with caller.archive.db.write() as session:
        withdrawn = consent.revoke_opt_out(session, body.PatientID, body.IssuerOfPatientID, user=caller.user)
    return {"withdrawn": withdrawn}


@router.post(
    "/erasures",
    status_code=202,
    summary="Withdraw consent with erasure (GDPR Art. 17): opt out, erase project copies, ask peers to delete",
)
def post_erasure(body: PatientIn, caller: Admin) -> dict[str, Any]:
    with caller.archive.db.write() as session:
        request = consent.withdraw_consent(
            session, body.PatientID, body.IssuerOfPatientID, source="api", user=caller.user
        )
        return {"id": request.request_pk, "status": "pending"}


@router.get("/erasures/{request_id}", summary="An erasure request's steps and what each peer confirmed")
def get_erasure(request_id: int, caller: Admin) -> dict[str, Any]:
    with caller.archive.db.read() as session:
        return consent.erasure_status(session, request_id)


@router.post("/lookup", summary="Whether a patient opted out (identifiers in the body, not the URL)")
def post_lookup(body: PatientIn, caller: Admin) -> dict[str, Any]:
    with caller.archive.db.read() as session:
        return {"opted_out": consent.is_opted_out(session, body.PatientID, body.IssuerOfPatientID)}


@router.post("/import", summary="Import opt-outs from CSV (PatientID[,IssuerOfPatientID])")
async def post_import(request: Request, caller: Admin) -> dict[str, int]:
    try:
        text = (await request.body()).decode("utf-8")
        list(csv.reader(io.StringIO(text)))  # refuse what is not CSV before writing anything
    except (UnicodeDecodeError, csv.Error):
        raise InvalidRequest("the body is not a UTF-8 CSV file") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "api-upload.csv"
        path.write_text(text, encoding="utf-8")
        with caller.archive.db.write() as session:
            return {"added": consent.import_csv(session, path, user=caller.user)}
