"""The health of each component, as the operator's page shows it: the index answers, storage has room,
durable jobs are not overdue (per kind, with the failed ones), the sharing outbox has no failed delivery,
the audit trail reaches its syslog collector. Each is `ok`, `warn` (working, but something needs a look:
failed jobs, failed deliveries) or `down`.

Each check runs on its own and a check that raises is reported down with the exception's class only
(never its message: no PHI, no credentials from a URL). This reads the same durable state the workers
write, so it tells the truth about jobs run by other processes too.

Beside it, `readiness`: the components as `/health` reports them (imaging.observability.health: index,
storage, the DICOM listener, live workers, the triage model on its device as the workers report it, the
broker), each `ok` or `down` with its details.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text

from dicomweb.ui.render import size
from imaging.archive import Archive
from imaging.audit.records import AuditCursor, AuditRecord
from imaging.index.schema import Job, utcnow
from imaging.observability.health import Readiness
from imaging.sharing.models import OutboxRow, OutboxStatus

OVERDUE = dt.timedelta(minutes=5)  # a due job not taken for this long means no worker is taking its kind


@dataclass(frozen=True)
class Component:
    name: str
    state: str  # ok | warn (works, but something needs a look) | down
    detail: str


def _index(archive: Archive) -> Component:
    started = time.monotonic()
    with archive.db.read() as session:
        session.execute(text("SELECT 1"))
    return Component("index", "ok", f"answers in {1000 * (time.monotonic() - started):.0f} ms")


def _storage(archive: Archive) -> Component:
    free, floor = archive.store.free_bytes(), archive.settings.min_free_bytes
    if free is None:  # an object store that does not say (S3)
        return Component("storage", "ok", "free space not reported by the object store")
    if free < floor:
        return Component("storage", "down", f"{size(free)} free, below min_free_bytes ({size(floor)})")
    return Component("storage", "ok", f"{size(free)} free")


def _jobs(archive: Archive) -> list[Component]:
    now = utcnow()
    with archive.db.read() as session:
        counts: dict[str, dict[str, int]] = {}
        for kind, status, count in session.execute(
            select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status)
        ):
            counts.setdefault(kind, {})[status] = int(count)
        overdue = dict(
            session.execute(
                select(Job.kind, func.count())
                .where(Job.status.in_(("pending", "queued")), Job.next_attempt_at < now - OVERDUE)
                .group_by(Job.kind)
            ).all()
        )
    found = []
    for kind in sorted(counts):
        c = counts[kind]
        parts = [f"{c.get(s, 0)} {s}" for s in ("pending", "running", "failed", "done") if c.get(s)]
        late = int(overdue.get(kind, 0))
        if late:
            parts.insert(0, f"{late} overdue by more than {OVERDUE.seconds // 60} min")
        state = "down" if late else "warn" if c.get("failed") else "ok"
        found.append(Component(f"jobs: {kind}", state, ", ".join(parts) or "idle"))
    return found or [Component("jobs", "ok", "no job yet")]


def _outbox(archive: Archive) -> Component:
    with archive.db.read() as session:
        counts = dict(
            session.execute(select(OutboxRow.status, func.count()).group_by(OutboxRow.status)).all()
        )
    failed = int(counts.get(OutboxStatus.FAILED.value, 0))
    pending = int(counts.get(OutboxStatus.PENDING.value, 0))
    return Component(
        "sharing outbox", "warn" if failed else "ok", f"{failed} failed, {pending} pending deliveries"
    )


def _audit_export(archive: Archive) -> Component | None:
    destination = archive.settings.audit_syslog_url
    if not destination:
        return None
    with archive.db.read() as session:
        newest = session.scalar(select(func.max(AuditRecord.audit_pk))) or 0
        cursor = session.get(AuditCursor, destination)
        behind = newest - (cursor.audit_pk if cursor is not None else 0)
    return Component(
        "audit export (syslog)", "ok" if behind < 1000 else "warn", f"{behind} records not yet sent"
    )


def components(archive: Archive) -> list[Component]:
    checks: list[tuple[str, Callable[[Archive], Component | list[Component] | None]]] = [
        ("index", _index),
        ("storage", _storage),
        ("jobs", _jobs),
        ("sharing outbox", _outbox),
        ("audit export (syslog)", _audit_export),
    ]
    found: list[Component] = []
    for name, check in checks:
        try:
            result = check(archive)
        except Exception as exc:
            found.append(Component(name, "down", f"check failed: {type(exc).__name__}"))
            continue
        if isinstance(result, list):
            found += result
        elif result is not None:
            found.append(result)
    return found


def _detail(key: str, value: Any) -> str:
    """One readiness detail for people: sizes in bytes, lists joined, a worker's own report inline."""
    if key == "free_bytes" and isinstance(value, int):
        return f"{size(value)} free"
    if key == "workers" and isinstance(value, list):
        return "; ".join(
            f"{w.get('worker', '?')}: " + ", ".join(_detail(k, v) for k, v in w.items() if k != "worker")
            for w in value
            if isinstance(w, dict)
        )
    if isinstance(value, bool):
        return key if value else f"not {key}"
    if isinstance(value, list | tuple):
        return f"{key}: {', '.join(map(str, value)) or 'none'}"
    if key == "reason":
        return str(value)
    return f"{key} {value}"


def readiness(check: Readiness | None) -> tuple[bool, list[Component]]:
    """What `/health` says now (None: this application has no readiness checks), component by component."""
    if check is None:
        return False, [Component("readiness", "down", "no readiness checks configured")]
    ready, found = check.check()
    return ready, [
        Component(
            name,
            "ok" if state.get("ready") else "down",
            ", ".join(_detail(k, v) for k, v in state.items() if k != "ready") or "ready",
        )
        for name, state in found.items()
    ]
