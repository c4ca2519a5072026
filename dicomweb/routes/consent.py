"""`/api/consent`: the opt-out registry (admin). Patient identifiers travel in bodies, never in URLs."""

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


@router.post("/withdrawals", summary="Withdraw an opt-out")
def post_withdrawal(body: PatientIn, caller: Admin) -> dict[str, Any]:
    with caller.archive.db.write() as session:
        withdrawn = consent.withdraw_opt_out(
            session, body.PatientID, body.IssuerOfPatientID, user=caller.user
        )
    return {"withdrawn": withdrawn}


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
