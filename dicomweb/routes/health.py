"""`GET /health`: liveness and index reachability, without a token."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse
from sqlalchemy import text

from imaging.access.http import PUBLIC
from imaging.web import ArchiveDep

log = logging.getLogger(__name__)
router = APIRouter(tags=["Health"])


@router.get("/health", summary="Liveness and index reachability (no token)")
def health(archive: ArchiveDep, _: Annotated[None, Depends(PUBLIC)]) -> JSONResponse:
    try:
        with archive.db.read() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        log.exception("health check: index unreachable")
        return JSONResponse({"status": "error", "index": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok"})
