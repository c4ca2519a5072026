"""The audit trail of DICOMweb: every request to a service root that reaches identified (or project) data is
recorded with its authenticated user, client address, study and outcome (PS3.15 A.5.3):

* QIDO-RS searches → Query (110112), with the query as sent;
* WADO-RS metadata, rendered images, thumbnails → DICOM Instances Accessed (110103, Read);
* WADO-RS instances, frames, bulk data → DICOM Instances Transferred (110104, Read);
* STOW-RS → DICOM Instances Transferred (110104, Create), with how many instances were stored.

The route's dependency (dicomweb.deps) notes what is being accessed in the request's state; this middleware
submits the record to the application's AuditWriter when the response starts, with the outcome its status
says (2xx success, 4xx minor failure, 5xx serious failure). Submitting is a queue append: the hot paths pay no
index write. A viewer's hundreds of frame requests of one series in a quarter second become one record
with a count (imaging.audit.writer).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imaging.audit import AuditEvent, AuditWriter, Outcome

STATE_KEY = "audit"


def note(request: Request, *, user: str, partition: str, address: str) -> None:
    """Remember what this DICOMweb request accesses, for the middleware to record once it is answered."""
    if request.url.path.endswith("/capabilities"):
        return  # what the service supports: no patient data
    params = request.path_params
    study, series = str(params.get("study", "")), str(params.get("series", ""))
    path = request.url.path
    if request.method == "POST":
        event, action, detail = AuditEvent.INSTANCES_TRANSFERRED, "C", "STOW-RS"
    elif path.endswith(("/studies", "/series", "/instances")):
        event, action = AuditEvent.QUERY, "E"
        level = path.rsplit("/", 1)[-1]
        detail = f"QIDO-RS {level}" + (f" of series {series}" if series else "")
        if request.url.query:
            detail += f"?{request.url.query}"
    else:
        kind = _resource(path)
        event = AuditEvent.INSTANCES_ACCESSED if kind in _ACCESSED else AuditEvent.INSTANCES_TRANSFERRED
        action, detail = "R", f"WADO-RS {kind}" + (f" of series {series}" if series else "")
    request.state.audit = {
        "event": event,
        "user": user,
        "action": action,
        "partition": partition,
        "study_uid": study[:64],
        "detail": detail[:2000],
        "access_point": address,
    }


_ACCESSED = {"metadata", "rendered", "thumbnail"}


def _resource(path: str) -> str:
    """The WADO-RS resource a path names: metadata, rendered, thumbnail, frames, bulkdata, or instances."""
    parts = path.rstrip("/").split("/")
    for kind in ("metadata", "rendered", "thumbnail", "frames", "bulkdata"):
        if kind in parts[-3:]:
            return kind
    return "instances"


def add_detail(request: Request, text: str, *, study_uid: str = "") -> None:
    """Add to the noted record's detail (e.g. what STOW-RS stored), and name its study when now known."""
    noted: dict[str, Any] | None = getattr(request.state, STATE_KEY, None)
    if noted is not None:
        noted["detail"] = f"{noted['detail']}: {text}"[:2000]
        if study_uid and not noted["study_uid"]:
            noted["study_uid"] = study_uid[:64]


class AuditMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        submitted = False

        def submit(status: int) -> None:
            nonlocal submitted
            noted = scope.get("state", {}).get(STATE_KEY)
            if submitted or noted is None:
                return
            submitted = True
            outcome = Outcome.SUCCESS if status < 400 else Outcome.MINOR_FAILURE
            if status >= 500:
                outcome = Outcome.SERIOUS_FAILURE
            writer: AuditWriter = scope["app"].state.audit
            writer.submit(outcome=outcome, **noted)

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                submit(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        except BaseException:
            submit(500)  # the request failed before any answer (or the client left): still recorded
            raise
