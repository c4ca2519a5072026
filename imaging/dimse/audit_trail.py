"""The gateway's audit trail (issue 12): every DIMSE access to identified data, named by the calling AE and, over
DICOM TLS, its certificate subject (`access.Peer.user`), as PS3.15 A.5 events.

* C-STORE: DICOM Instances Transferred (action C), one record per association and study with the counts of
  instances stored, re-sent and overwritten, written when the association ends (a long association also
  every `TALLY_SECONDS`); instances refused, whose study is not known, in one record per association with a
  minor-failure outcome.
* C-FIND: Query, one record per request: information model, level, the names (never the values) of the
  matching keys, the number of matches.
* C-MOVE / C-GET: Begin Transferring per request and study when the sub-operations start, DICOM Instances
  Transferred (action R) per study when they end, with completed and failed counts.
* Refused connections, associations and services: Security Alert, at most one per host and reason a minute
  (naming the first AE title), with how many more were refused since (a flood must not flood the index).

Records go to the index from one writer thread, in batches, so that no protocol thread waits for the index's
write lock: auditing costs a C-STORE a dictionary update.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from imaging import audit
from imaging.audit import AuditEvent, Outcome
from imaging.index.db import Database

log = logging.getLogger(__name__)

TALLY_SECONDS = 300.0
ALERT_WINDOW = 60.0


class AuditWriter:
    """Writes the gateway's audit records from one thread, many per transaction."""

    def __init__(self, db: Database, *, batch: int = 500) -> None:
        self.db = db
        self.batch = batch
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._alerts: dict[tuple[str, str], list[Any]] = {}  # (host, reason) -> [window start, held, user]
        self._alerts_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="dimse-audit", daemon=True)
        self._thread.start()

    def record(self, event: AuditEvent, **fields: Any) -> None:
        self._queue.put({"event": event, **fields})

    def alert(self, *, user: str, source: str, reason: str, partition: str = "") -> None:
        """A Security Alert, throttled per (host, reason): `reason` is one of a few fixed texts."""
        key = (source, reason)
        now = time.monotonic()
        with self._alerts_lock:
            window = self._alerts.get(key)
            if window is not None and now - window[0] < ALERT_WINDOW:
                window[1] += 1
                return
            suppressed = int(window[1]) if window is not None else 0
            self._alerts[key] = [now, 0, user]
            if len(self._alerts) > 10_000:  # forget old windows (many hosts)
                for old in [k for k, w in self._alerts.items() if now - w[0] >= ALERT_WINDOW]:
                    del self._alerts[old]
        detail = reason + (f" ({suppressed} more refused in the previous minute)" if suppressed else "")
        self.record(
            AuditEvent.SECURITY_ALERT,
            user=user,
            source=source,
            partition=partition,
            outcome=Outcome.MINOR_FAILURE,
            detail=detail,
        )

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every record given so far is in the index (tests, shutdown)."""
        done = threading.Event()
        self._queue.put({"flush": done})
        done.wait(timeout)

    def close(self) -> None:
        self._flush_alerts()
        self._queue.put(None)
        self._thread.join(10.0)

    def _flush_alerts(self) -> None:
        with self._alerts_lock:
            pending = [(k, int(w[1]), str(w[2])) for k, w in self._alerts.items() if w[1]]
            self._alerts.clear()
        for (source, reason), count, user in pending:
            self.record(
                AuditEvent.SECURITY_ALERT,
                user=user,
                source=source,
                outcome=Outcome.MINOR_FAILURE,
                detail=f"{reason} ({count} more refused)",
            )

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            items = [item]
            while len(items) < self.batch:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [i for i in items if i is not None and "flush" not in i]
            if records:
                self._write(records)
            for i in items:
                if i is None:
                    stop = True
                elif "flush" in i:
                    i["flush"].set()

    def _write(self, records: list[dict[str, Any]]) -> None:
        for attempt in range(3):
            try:
                with self.db.write() as session:
                    for fields in records:
                        fields = dict(fields)
                        audit.record(session, fields.pop("event"), **fields)
                return
            except Exception as exc:  # the index is briefly unavailable: try again, then say what was lost
                if attempt == 2:
                    log.error("%d DIMSE audit records not written: %s", len(records), type(exc).__name__)
                time.sleep(0.5 * (attempt + 1))


@dataclass
class StoreTally:
    """One association's C-STOREs, per (partition, study): written as one record each."""

    user: str
    source: str
    started: float = field(default_factory=time.monotonic)
    studies: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)

    def stored(self, partition: str, study_uid: str, disposition: str) -> None:
        self.studies.setdefault((partition, study_uid), Counter())[disposition] += 1

    def refuse(self, status: int) -> None:
        self.refused[f"0x{status:04X}"] += 1

    def due(self) -> bool:
        return time.monotonic() - self.started > TALLY_SECONDS

    def write(self, writer: AuditWriter) -> None:
        for (partition, study_uid), counts in self.studies.items():
            text = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
            writer.record(
                AuditEvent.INSTANCES_TRANSFERRED,
                user=self.user,
                action="U" if counts.get("overwritten") else "C",
                source=self.source,
                partition=partition,
                study_uid=study_uid,
                detail=f"C-STORE received: {text}",
            )
        if self.refused:
            text = ", ".join(f"{n} with {status}" for status, n in sorted(self.refused.items()))
            writer.record(
                AuditEvent.INSTANCES_TRANSFERRED,
                user=self.user,
                action="C",
                outcome=Outcome.MINOR_FAILURE,
                source=self.source,
                detail=f"C-STORE refused: {text}",
            )
        self.studies = {}
        self.refused = Counter()
        self.started = time.monotonic()


@dataclass
class RetrieveTally:
    """One C-MOVE or C-GET: Begin Transferring per study when its sub-operations start, Instances
    Transferred per study when they end, with how many went, failed, or were never sent."""

    writer: AuditWriter
    user: str
    operation: str  # "C-MOVE" / "C-GET"
    destination: str  # the AE and address the instances go to
    partition: str = ""
    planned: Counter[str] = field(default_factory=Counter)  # study -> sub-operations
    sent: dict[str, Counter[str]] = field(default_factory=dict)  # study -> outcome -> count

    def begin(self, partition: str, studies: list[str]) -> None:
        self.partition = partition
        self.planned.update(studies)
        for study_uid, count in self.planned.items():
            self.writer.record(
                AuditEvent.BEGIN_TRANSFERRING,
                user=self.user,
                action="R",
                source=self.destination,
                partition=partition,
                study_uid=study_uid,
                detail=f"{self.operation}: {count} instances to {self.destination}",
            )

    def done(self, study_uid: str, status: int | None) -> None:
        outcome = "sent" if status is not None and (status == 0 or 0xB000 <= status <= 0xBFFF) else "failed"
        self.sent.setdefault(study_uid, Counter())[outcome] += 1

    def end(self) -> None:
        for study_uid, count in self.planned.items():
            counts = self.sent.get(study_uid, Counter())
            missing = count - counts["sent"] - counts["failed"]
            text = f"{counts['sent']} sent, {counts['failed']} failed" + (
                f", {missing} not sent" if missing else ""
            )
            self.writer.record(
                AuditEvent.INSTANCES_TRANSFERRED,
                user=self.user,
                action="R",
                outcome=Outcome.SUCCESS if counts["sent"] == count else Outcome.MINOR_FAILURE,
                source=self.destination,
                partition=self.partition,
                study_uid=study_uid,
                detail=f"{self.operation} to {self.destination}: {text}",
            )
        self.planned = Counter()
