"""Fixtures for the web interface's tests: a whole archive on loopback — HTTP (uvicorn in a thread, as in
tests/dicomweb), optionally the DICOM gateway and the job runner (stability, triage, sharing) — with a token
per role and a research project, `lung`, holding studies published through the real publication path.

Test data: synthetic CT studies with synthetic PHI (imaging.synthetic); for triage, the chest phantom
with planted nodules of tests/triage/conftest.py. Nothing is downloaded. The federation pages' tests use
tests/federation's `make_site` (several archives with site ids and keys, on loopback).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from imaging.access.tokens import verify
from imaging.app import build_runner
from imaging.archive import Archive
from imaging.config import load_settings
from imaging.dimse.server import Gateway
from imaging.jobs.runner import JobRunner
from imaging.research.projects import create_project
from imaging.research.publication import publish_study
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.archive_fixtures import make_archive  # noqa: F401  (used by make_site)
from tests.dicomweb.conftest import Server, add_token, encode
from tests.federation.conftest import make_site  # noqa: F401  (sites federated on loopback)

ROLES = ("admin", "clinician", "researcher", "ingest")
PROJECT = "lung"
PROJECT_OPTIONS = ("Retain Longitudinal Temporal Information Full Dates", "Clean Descriptors")


@dataclass
class Site:
    archive: Archive
    server: Server
    tokens: dict[str, str]
    gateway: Gateway | None = None
    dicom_port: int = 0
    runner: JobRunner | None = None
    published: list[str] = field(default_factory=list)  # de-identified study UIDs in the project

    @property
    def url(self) -> str:
        return self.server.url

    def client(self, role: str | None = "admin", **kw: Any) -> httpx.Client:
        """A client of the whole server (pages and API) with a role's bearer token."""
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        headers.update(kw.pop("headers", {}))
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, follow_redirects=False, **kw)

    def browser_client(self, role: str) -> httpx.Client:
        """A client signed in like a browser: the login form's session cookie, this server's Origin."""
        client = httpx.Client(
            base_url=self.url, timeout=60, follow_redirects=False, headers={"Origin": self.url}
        )
        answer = client.post("/login", data={"token": self.tokens[role], "next": "/ui"})
        assert answer.status_code == 303, answer.text
        return client

    def user(self, role: str) -> str:
        """How the audit trail names a role's token (`token:<id>:<role>`)."""
        return verify(self.archive.db, self.tokens[role]).user

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        if self.gateway is not None:
            self.gateway.stop()
        self.server.stop()
        self.archive.close()


def ingest_study(
    archive: Archive, number: int, *, count: int = 3, description: str = "CT CHEST", **study: Any
) -> str:
    st = SyntheticStudy(patient=synthetic_patient(number), StudyDescription=description, **study)
    for ds in ct_series(st, count, rows=32, columns=32):
        archive.ingestor.ingest(encode(ds), source="test")
    return st.StudyInstanceUID


def start_site(
    data_dir: Path, *, gateway: bool = False, jobs: bool = False, studies: int = 3, **overrides: Any
) -> Site:
    overrides.setdefault("dev_mode", False)
    overrides.setdefault("min_free_bytes", 0)
    overrides.setdefault(
        "calling_aes",
        [{"ae_title": "STORESCU", "hosts": ["127.0.0.1"], "permissions": ["store", "find", "get", "move"]}],
    )
    archive = Archive.open(load_settings(None, data_dir=data_dir, **overrides))
    # Full dates and cleaned descriptions kept: the cohort builder has dates and descriptions to filter on.
    create_project(archive, PROJECT, options=list(PROJECT_OPTIONS))
    tokens = {role: add_token(archive, role, PROJECT if role == "researcher" else "") for role in ROLES}
    site = Site(archive, Server(archive), tokens)
    # Clinical studies, each published into the project (de-identified through the ingest path).
    for k in range(studies):
        source = ingest_study(archive, 100 + k, StudyDate=f"2024010{k + 1}", description=f"CT CHEST {k}")
        site.published.append(publish_study(archive, PROJECT, source, user="test").study_uid)
    if gateway:
        site.gateway = Gateway(archive)
        site.dicom_port = site.gateway.start(host="127.0.0.1", port=0)
    if jobs:
        site.runner = build_runner(archive)
        site.runner.start()
    return site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Callable[..., Site]]:
    """Factory: a site over a fresh data folder (stopped after the test)."""
    made: list[Site] = []

    def factory(**kw: Any) -> Site:
        s = start_site(tmp_path / f"data{len(made)}", **kw)
        made.append(s)
        return s

    yield factory
    for s in made:
        s.stop()
