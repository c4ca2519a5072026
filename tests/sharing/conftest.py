"""Fixtures for the sharing tests: two archives (site A sends, site B receives over DIMSE), an Orthanc peer
started from /usr/sbin/Orthanc on free loopback ports with temporary storage, and synthetic CT studies
(imaging.synthetic: generated pixels, synthetic PHI)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from imaging.archive import Archive
from imaging.events import ChangeKind
from imaging.index.schema import ChangeLog, Instance, Series, Study
from imaging.jobs.runner import JobRunner
from imaging.sharing.delivery import register
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.archive_fixtures import *  # noqa: F403  (make_archive, start_gateway fixtures)
from tests.archive_fixtures import free_port, require_program

PROJECT_KEY = bytes(range(32))  # the research project's key, shared by every site of the project
ORTHANC_USER, ORTHANC_PASSWORD = "share", "s3cret-share"


@pytest.fixture
def site_a(make_archive: Callable[..., Archive], tmp_path: Path) -> Archive:
    return make_archive(
        tmp_path / "site-a",
        ae_title="SITEA",
        stability_seconds=0,
        share_retry_base_seconds=0.05,
        share_max_attempts=50,
        share_concurrency=3,
        network_timeout=5.0,
    )


@pytest.fixture
def site_b(make_archive: Callable[..., Archive], tmp_path: Path) -> Archive:
    return make_archive(tmp_path / "site-b", ae_title="SITEB", stability_seconds=0)


@pytest.fixture
def runner_a(site_a: Archive) -> JobRunner:
    runner = JobRunner(site_a)
    register(runner, site_a)
    return runner


def ingest_study(
    archive: Archive, patient: int = 1, *, series: int = 2, count: int = 3, **study: Any
) -> SyntheticStudy:
    st = SyntheticStudy(patient=synthetic_patient(patient), **study)
    for number in range(1, series + 1):
        for ds in ct_series(st, count, series_number=number, rows=32, columns=32):
            archive.ingestor.ingest_dataset(ds)
    return st


def flag(archive: Archive, study_uid: str, priority: str = "HIGH") -> None:
    """What triage does when it finds something: raise the priority and emit StudyPriority."""

    def work(session: Any) -> None:
        study = session.scalar(
            select(Study).where(Study.StudyInstanceUID == study_uid, Study.partition == "clinical")
        )
        study.priority = priority
        session.add(
            ChangeLog(
                kind=ChangeKind.STUDY_PRIORITY,
                partition="clinical",
                StudyInstanceUID=study_uid,
                detail=priority,
            )
        )

    archive.db.transaction(work)


def drive(runner: JobRunner, until: Callable[[], bool], timeout: float = 60.0) -> None:
    """Run job rounds until `until()` holds."""
    deadline = time.monotonic() + timeout
    while True:
        runner.tick()
        if until():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def count_instances(archive: Archive, partition: str | None = None, study_uid: str | None = None) -> int:
    with archive.db.read() as s:
        stmt = select(func.count()).select_from(Instance).join(Series).join(Study)
        if partition:
            stmt = stmt.where(Study.partition == partition)
        if study_uid:
            stmt = stmt.where(Study.StudyInstanceUID == study_uid)
        return int(s.scalar(stmt) or 0)


# --------------------------------------------------------------------------------------- Orthanc
class OrthancServer:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.process: subprocess.Popen[bytes] | None = None

    def config(self) -> dict[str, Any]:
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        return {
            "Name": "sharing-test-peer",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC",
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowEcho": True,
            "RemoteAccessAllowed": True,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {ORTHANC_USER: ORTHANC_PASSWORD},
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True},
            "SaveJobs": False,
            "StableAge": 1,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
        }

    def start(self) -> None:
        config = {k: v for k, v in self.config().items() if v is not None}
        path = self.workdir / "orthanc.json"
        path.write_text(json.dumps(config))
        log = (self.workdir / "orthanc.log").open("ab")
        self.process = subprocess.Popen(
            [require_program("/usr/sbin/Orthanc"), str(path)], stdout=log, stderr=log
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.workdir / 'orthanc.log').read_text()[-2000:]}")
            try:
                r = httpx.get(f"{self.url}/system", auth=(ORTHANC_USER, ORTHANC_PASSWORD), timeout=1)
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("Orthanc did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def get(self, path: str, **kw: Any) -> Any:
        r = httpx.get(f"{self.url}{path}", auth=(ORTHANC_USER, ORTHANC_PASSWORD), timeout=10, **kw)
        r.raise_for_status()
        return r.json()

    def instances_of(self, study_uid: str) -> list[dict[str, Any]]:
        r = httpx.post(
            f"{self.url}/tools/find",
            auth=(ORTHANC_USER, ORTHANC_PASSWORD),
            json={"Level": "Instance", "Query": {"StudyInstanceUID": study_uid}, "Expand": True},
            timeout=10,
        )
        r.raise_for_status()
        return list(r.json())


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    require_program("/usr/sbin/Orthanc")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"))
    server.start()
    yield server
    server.stop()
