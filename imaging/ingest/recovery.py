"""Crash recovery at start-up: what an ingest interrupted between publishing its object and committing its
index row left behind (SIGKILL, power loss), settled without an operator.

The ingest path stages the bytes (temporary file, fsync), publishes them under their key (rename), then
commits the index transaction, and only then answers Success. A crash after the rename and before the
commit leaves a complete, durable object that nothing indexes and whose sender never got Success. Each such
object goes through the single ingest path again (`Ingestor.ingest`): adopted when the archive would have
accepted it (it is then indexed exactly as if the commit had happened), removed when it would have been
refused by policy (a conflict under the overwrite policy, a rejected instance); quarantined (kept for
inspection, never served) when it does not even parse, which no ingest of this version publishes. Every
decision is logged by object key only (a hash: no PHI).

Scanning every key is the price of a crash, not of every start: each process that opens the archive leaves
a run marker (`<data_dir>/run/<host>-<pid>`) and removes it when it closes. A marker whose process is gone
means that process died without closing, and only then does start-up (`Archive.open(maintenance=True)`)
compare storage with the index. Keys awaiting deletion (imaging.index.removal) are not orphans.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from imaging.errors import ArchiveError, CannotUnderstand, DataSetMismatch, DuplicateConflict
from imaging.index.db import Database
from imaging.index.removal import pending_keys
from imaging.index.schema import Instance
from imaging.ingest.ingestor import Ingestor
from imaging.storage.base import InstanceStore

log = logging.getLogger(__name__)


@dataclass
class RecoveryReport:
    adopted: list[str] = field(default_factory=list)  # object keys indexed now
    removed: list[str] = field(default_factory=list)  # object keys the ingest path refused, deleted
    quarantined: list[str] = field(default_factory=list)  # object keys that do not parse


class RunMarkers:
    """`<data_dir>/run/<host>-<pid>`: one per process that has the archive open."""

    def __init__(self, data_dir: Path) -> None:
        self.folder = data_dir / "run"
        self.host = socket.gethostname().replace("/", "_")
        self.mine = self.folder / f"{self.host}-{os.getpid()}"

    def create(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.mine.touch()

    def remove(self) -> None:
        self.mine.unlink(missing_ok=True)

    def stale(self) -> list[Path]:
        """Markers of processes on this host that ended without closing the archive."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.glob(f"{self.host}-*"):
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and path != self.mine and not _alive(int(pid)):
                found.append(path)
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def orphans(db: Database, store: InstanceStore) -> list[str]:
    """Object keys in storage that no instance indexes and no deletion awaits."""
    with db.read() as session:
        known = set(session.scalars(select(Instance.object_key)))
        known |= pending_keys(session)
    return sorted(key for key in store.keys() if key not in known)


def recover(db: Database, store: InstanceStore, ingestor: Ingestor) -> RecoveryReport:
    """Adopt or remove every orphan object (see the module docstring)."""
    report = RecoveryReport()
    for key in orphans(db, store):
        partition = key.split("/", 1)[0]
        try:
            data = store.read(key)
        except ArchiveError:
            continue  # gone meanwhile (removed by a running process's own failed ingest)
        try:
            ingestor.ingest(data, partition=partition, source="recovery")
        except ArchiveError as exc:
            with db.read() as session:
                if session.scalar(select(Instance.instance_pk).where(Instance.object_key == key).limit(1)):
                    continue  # indexed meanwhile by a running process
            if isinstance(exc, CannotUnderstand | DataSetMismatch) and not isinstance(exc, DuplicateConflict):
                store.quarantine(key)
                report.quarantined.append(key)
                log.warning(
                    "recovery: quarantined object %s, unindexed and unparsable (%s)", key, type(exc).__name__
                )
                continue
            store.delete(key)
            report.removed.append(key)
            log.warning(
                "recovery: removed object %s, written but never acknowledged and refused by ingest now (%s)",
                key,
                type(exc).__name__,
            )
            continue
        report.adopted.append(key)
        log.warning("recovery: adopted object %s, written but never acknowledged: indexed now", key)
    if report.adopted or report.removed or report.quarantined:
        log.warning(
            "recovery after an unclean stop: %d objects adopted, %d removed, %d quarantined",
            len(report.adopted),
            len(report.removed),
            len(report.quarantined),
        )
    return report
