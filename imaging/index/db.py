"""Engine and sessions. SQLite (WAL) is the embedded default; PostgreSQL for scale-out.

Writes and reads use separate engines on SQLite: writers take the lock up front (BEGIN IMMEDIATE, so two
writers never deadlock on a lock upgrade) while readers keep WAL's non-blocking snapshots.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x494D4147  # pg_advisory_lock key of schema migrations ("IMAG")
T = TypeVar("T")


def _sqlite_engine(url: str, *, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let us issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before we answer Success (durability of the index, not only the file).
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.execute("PRAGMA case_sensitive_like=ON")  # LIKE behaves as on PostgreSQL
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def secure_sqlite_files(database: Path) -> None:
    """The index holds names, IDs, birth dates and token hashes: its file (and the -wal/-shm files SQLite
    creates with the database file's mode) readable by the archive's user only, 0600 in a 0700 folder,
    like the objects and the keys. Created so before SQLite opens it; tightened if it already exists. (The
    folder is the data directory, which Archive.open keeps at 0700; a folder made here is made 0700.)"""
    database.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(database, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), Path(f"{database}-journal")):
        try:
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)
        except FileNotFoundError:
            pass


class WriterLock:
    """One SQLite writer at a time across processes, handed over as soon as it is free.

    SQLite's busy handler waits for a locked database by sleeping 1, 2, 5, 10... up to 100 ms between tries:
    with several gateway processes committing, those sleeps left the cores idle a fifth of the time. The
    archive's writers first take an flock on a file beside the database, and the kernel wakes the next
    waiter when it is released. Reentrant within a thread; anything else writing (a sqlite3 shell) still
    meets SQLite's own lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.RLock()
        self._depth = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)  # type: ignore[arg-type]  # blocks without the GIL
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            if self._fd is not None and self._depth == 0:
                os.close(self._fd)
                self._fd = None


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.writer_lock: WriterLock | None = None
        if self.is_sqlite:
            file = make_url(url).database
            if file and file != ":memory:" and not file.startswith("file:"):
                secure_sqlite_files(Path(file))
            self.write_engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
            database = self.write_engine.url.database
            if database and database != ":memory:":
                self.writer_lock = WriterLock(Path(f"{database}-writer.lock"))
        else:
            self.write_engine = create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)
            self.read_engine = self.write_engine
        self._writer = sessionmaker(self.write_engine, expire_on_commit=False)
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False)

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision, once: processes starting together (an archive
        and its workers on a fresh database) take turns under a database lock, and the later ones find
        nothing left to do. PostgreSQL: a session advisory lock; SQLite: the writer lock file."""
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["engine"] = self.write_engine
        if self.is_sqlite:
            with self._writer_turn():
                command.upgrade(cfg, "heads")  # feature branches of the schema may each add a head
            return
        with self.write_engine.connect() as lock:
            lock.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
            try:
                command.upgrade(cfg, "heads")
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
                lock.commit()

    def _writer_turn(self) -> AbstractContextManager[None]:
        return self.writer_lock.held() if self.writer_lock is not None else nullcontext()

    @contextmanager
    def write(self) -> Iterator[Session]:
        with self._writer_turn(), self._writer() as session, session.begin():
            yield session

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A write transaction on a bare Connection, for Core statements (the ingest path): no ORM session."""
        with self._writer_turn(), self.write_engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Session]:
        with self._reader() as session:
            yield session

    def transaction(self, work: Callable[[Session], T], attempts: int = 5) -> T:
        """Run `work` in a write transaction, retrying when a concurrent writer won a unique-key race."""
        return self._retrying(self.write, work, attempts)

    def core_transaction(self, work: Callable[[Connection], T], attempts: int = 5) -> T:
        """`transaction` on a bare Connection (Core statements only)."""
        return self._retrying(self.write_connection, work, attempts)

    @staticmethod
    def _retrying(
        begin: Callable[[], AbstractContextManager[Any]], work: Callable[[Any], T], attempts: int
    ) -> T:
        for attempt in range(attempts):
            try:
                with begin() as handle:
                    return work(handle)
            except (IntegrityError, OperationalError) as exc:
                if attempt == attempts - 1 or not _retryable(exc):
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        if self.writer_lock is not None:
            self.writer_lock.close()
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError):
        return True
    text = str(exc).lower()
    return "deadlock" in text or "could not serialize" in text or "database is locked" in text
