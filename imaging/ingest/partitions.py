"""Research-project partitions as the ingest path needs them: which projects exist, their de-identification
profile and their secret key. Receiving into a project (a project-bound AE title or STOW root), publishing to
it and delivering with its key all build the project's Deidentifier here, once.

The key (hex, 0600) lives in `Settings.keys_path`, apart from the data (GDPR Art. 4(5)); the tables live in
the index. Creating and listing projects is the research feature's job (imaging.research)."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
from pathlib import Path

from sqlalchemy import JSON, Boolean, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from imaging.deid import Deidentifier, DeidOption, DeidProfile
from imaging.errors import NotFound
from imaging.index.db import Database
from imaging.orm import Base, utcnow


class Project(Base):
    __tablename__ = "project"
    project_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    options: Mapped[list[str]] = mapped_column(JSON, default=list)  # DeidOption values
    keep_reidentification: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Quarantine(Base):
    """Instances that could not be shown clean (e.g. burned-in text): never published, reported."""

    __tablename__ = "deid_quarantine"
    quarantine_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    object_key: Mapped[str] = mapped_column(String(160))  # the clinical object (or received bytes), by key
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


def parse_option(text: str) -> DeidOption:
    """A DeidOption from its standard name ("Clean Descriptors"), enum name (CLEAN_DESCRIPTORS) or value."""
    key = text.strip().upper().replace(" ", "_").replace("-", "_")
    if key in DeidOption.__members__:
        return DeidOption[key]
    return DeidOption(text)


def get_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise NotFound("no such project")
    return project


def project_exists(session: Session, name: str) -> bool:
    return session.scalar(select(Project.project_pk).where(Project.name == name)) is not None


def key_path(keys_dir: Path, name: str) -> Path:
    return keys_dir / f"{name}.key"


def write_key(keys_dir: Path, name: str, key: bytes | None = None) -> None:
    """Write the project's key (given, to share pseudonyms with other sites, else random) unless one exists;
    0600 in a 0700 folder."""
    keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = key_path(keys_dir, name)
    if path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write((key or secrets.token_bytes(32)).hex())


def read_key(keys_dir: Path, name: str) -> bytes:
    return bytes.fromhex(key_path(keys_dir, name).read_text().strip())


_deidentifiers: dict[tuple[str, str, bytes, tuple[str, ...]], Deidentifier] = {}
_lock = threading.Lock()


def deidentifier_for(db: Database, keys_dir: Path, name: str) -> Deidentifier:
    """The project's Deidentifier (profile options + key), built once while both are unchanged. Its output
    is a function of the key and the input alone, which makes publication and retried deliveries idempotent."""
    with db.read() as session:
        options = tuple(sorted(get_project(session, name).options))
    key = read_key(keys_dir, name)
    cache_key = (str(keys_dir), name, key, options)
    with _lock:
        deid = _deidentifiers.get(cache_key)
        if deid is None:
            profile = DeidProfile(options=frozenset(DeidOption(o) for o in options))
            deid = _deidentifiers[cache_key] = Deidentifier(key=key, profile=profile)
        return deid
