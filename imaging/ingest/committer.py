"""Group commit of the index transactions of concurrent ingests (one fsync for many associations)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from sqlalchemy import Connection

from imaging.errors import ArchiveError
from imaging.index.db import Database

T = TypeVar("T")


class GroupCommitter:
    """Runs index transactions of concurrent ingests in one database transaction and one commit.

    Each ingest thread hands its work to a single committer thread and waits. While one commit is being
    made durable (an fsync), the work of the other associations queues up; the next batch takes it all, each
    item inside its own SAVEPOINT so that one refused item (a conflict) does not undo the others. Success
    still goes out only after the commit that holds the item is durable. With one association there is
    nothing to group and this costs a thread hand-off (tens of microseconds).
    """

    MAX_BATCH = 64

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: queue.SimpleQueue[tuple[Callable[[Connection], Any], Future[Any]]] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, work: Callable[[Connection], T]) -> T:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="index-commit", daemon=True)
                    self._thread.start()
        future: Future[T] = Future()
        self._queue.put((work, future))
        return future.result()

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.MAX_BATCH:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._commit(batch)

    def _commit(self, batch: list[tuple[Callable[[Connection], Any], Future[Any]]]) -> None:
        if len(batch) == 1:
            work, future = batch[0]
            try:
                future.set_result(self.db.core_transaction(work))
            except BaseException as exc:
                future.set_exception(exc)
            return
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            with self.db.write_connection() as conn:
                for work, future in batch:
                    try:
                        with conn.begin_nested():
                            outcomes.append((future, True, work(conn)))
                    except ArchiveError as exc:  # refused item: its savepoint is rolled back, the rest go on
                        outcomes.append((future, False, exc))
        except Exception:
            # The batch as a whole failed (a unique-key race with another process, a full disk...): run
            # each item on its own, with the usual retries, so each gets its own precise outcome.
            for work, future in batch:
                try:
                    future.set_result(self.db.core_transaction(work))
                except BaseException as exc:
                    future.set_exception(exc)
            return
        for future, ok, value in outcomes:
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
