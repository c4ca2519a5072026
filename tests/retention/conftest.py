"""Fixtures for the retention tests: an archive with its DIMSE gateway and its HTTP API on real loopback
ports (uvicorn in a thread), admin and clinician tokens, a job runner with the retention and sharing job
kinds, and synthetic CT studies (imaging.synthetic: generated pixels, synthetic PHI)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import func, select

from imaging.archive import Archive
from imaging.index.rejection import Reference, RejectionTitle, make_rejection_note
from imaging.index.schema import Instance, Series, Study
from imaging.jobs.runner import JobRunner
from imaging.retention import jobs as retention_jobs
from imaging.sharing.delivery import register as register_sharing
from tests.archive_fixtures import *  # noqa: F403  (make_archive, start_gateway, db_url)
from tests.archive_fixtures import write_synthetic_study
from tests.dicomweb.conftest import Server, add_token
from tests.sharing.conftest import orthanc  # noqa: F401  (the Orthanc peer fixture)


@dataclass
class Site:
    archive: Archive
    port: int  # DIMSE
    server: Server  # HTTP
    tokens: dict[str, str]
    runner: JobRunner

    def http(self, role: str = "admin") -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {self.tokens[role]}"}, timeout=60
        )

    def drive(self, until: Callable[[], bool], timeout: float = 60.0) -> None:
        """Run job rounds until `until()` holds."""
        deadline = time.monotonic() + timeout
        while True:
            self.runner.tick()
            if until():
                return
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            time.sleep(0.05)


def runner_for(archive: Archive) -> JobRunner:
    """The job kinds of retention and sharing (not triage: no model to load here)."""
    runner = JobRunner(archive)
    retention_jobs.register(runner, archive)
    register_sharing(runner, archive)
    return runner


@pytest.fixture
def make_site(
    make_archive: Callable[..., Archive], start_gateway: Callable[[Archive], int]
) -> Iterator[Callable[..., Site]]:
    servers: list[Server] = []

    def factory(name: str = "site", **settings: Any) -> Site:
        settings.setdefault("dev_mode", False)
        settings.setdefault("stability_seconds", 0)
        settings.setdefault("share_retry_base_seconds", 0.05)
        archive = make_archive(**settings)
        server = Server(archive)
        servers.append(server)
        tokens = {role: add_token(archive, role) for role in ("admin", "clinician", "ingest")}
        return Site(archive, start_gateway(archive), server, tokens, runner_for(archive))

    yield factory
    for server in servers:
        server.stop()


@pytest.fixture
def site(make_site: Callable[..., Site]) -> Site:
    return make_site()


def study_files(folder: Path, patient: int = 1, series: int = 2, per_series: int = 3) -> list[Path]:
    return write_synthetic_study(folder, series=series, per_series=per_series, patient=patient, rows=16)


def references(files: list[Path]) -> list[Reference]:
    out = []
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        out.append(
            Reference(
                str(ds.StudyInstanceUID),
                str(ds.SeriesInstanceUID),
                str(ds.SOPClassUID),
                str(ds.SOPInstanceUID),
            )
        )
    return out


def rejection_note(files: list[Path], title: RejectionTitle = RejectionTitle.QUALITY) -> Dataset:
    first = dcmread(files[0], stop_before_pixels=True)
    return make_rejection_note(
        title, references(files), patient_id=str(first.PatientID), patient_name=str(first.PatientName)
    )


def instance_count(archive: Archive, partition: str | None = None, study: str | None = None) -> int:
    with archive.db.read() as s:
        stmt = select(func.count()).select_from(Instance).join(Series).join(Study)
        if partition:
            stmt = stmt.where(Study.partition == partition)
        if study:
            stmt = stmt.where(Study.StudyInstanceUID == study)
        return int(s.scalar(stmt) or 0)
