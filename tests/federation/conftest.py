"""Fixtures for the federation tests: archives on loopback, each with its HTTP API served by uvicorn in a
thread on a free port, a site id and an Ed25519 key of its own, admin and researcher tokens, and a job
runner with the sharing job kinds; `federate` registers every site at every other (site id, URL, public
key), as administrators do out of band.

Test data: generated studies (imaging.synthetic: synthetic patients, generated pixels), one per `Spec`,
each with the attributes a cohort definition looks at; `Spec.matches` says independently of the archive
which ones a definition should count. Triage outcomes are written the way the triage worker writes them
(imaging/triage worker `_record`): a row per series with its findings, and the study's priority.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from imaging import consent
from imaging.archive import Archive
from imaging.federation.criteria import CohortDefinition, matching_studies
from imaging.federation.keys import public_key_pem
from imaging.federation.peers import set_peer
from imaging.index.schema import Study
from imaging.ingest.partitions import project_exists
from imaging.jobs.runner import JobRunner
from imaging.research.projects import create_project
from imaging.sharing.delivery import register as register_sharing
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.archive_fixtures import *  # noqa: F403  (make_archive)
from tests.dicomweb.conftest import Server, add_token
from triage.records import TriageOutcome

PROJECT = "net"
PROJECT_KEY = bytes(range(100, 132))  # exchanged out of band between the sites of the project


@dataclass(frozen=True)
class Spec:
    """One generated study and what a cohort definition sees of it."""

    patient: int
    modality: str = "CT"
    body_part: str = "CHEST"
    study_date: str = "20240315"
    priority: str = ""
    diameters: tuple[float, ...] = ()
    opted_out: bool = False
    stable: bool = True

    @property
    def sex(self) -> str:
        return synthetic_patient(self.patient).PatientSex

    @property
    def age(self) -> int:
        born = dt.datetime.strptime(synthetic_patient(self.patient).PatientBirthDate, "%Y%m%d").date()
        seen = dt.datetime.strptime(self.study_date, "%Y%m%d").date()
        return seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))

    def matches(self, cohort: CohortDefinition) -> bool:
        """What the definition should select, written out without the archive's matching code (exact
        values only: the definitions of these tests use no wildcards or ranges except StudyDate)."""
        if self.opted_out or not self.stable:
            return False
        f = cohort.filters
        if f.get("Modality", self.modality) != self.modality:
            return False
        if f.get("BodyPartExamined", self.body_part) != self.body_part:
            return False
        if f.get("PatientSex", self.sex) != self.sex:
            return False
        if "StudyDate" in f:
            low, _, high = f["StudyDate"].partition("-")
            if not (low or "0") <= self.study_date <= (high or "99999999"):
                return False
        ranks = {"": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3}
        if ranks[self.priority] < ranks[cohort.min_priority]:
            return False
        if cohort.age_min is not None and self.age < cohort.age_min:
            return False
        if cohort.age_max is not None and self.age > cohort.age_max:
            return False
        if cohort.min_findings is not None and len(self.diameters) < cohort.min_findings:
            return False
        return cohort.min_diameter_mm is None or max(self.diameters, default=0) >= cohort.min_diameter_mm


@dataclass
class Site:
    name: str
    archive: Archive
    server: Server
    runner: JobRunner
    tokens: dict[str, str]
    specs: list[Spec] = field(default_factory=list)
    studies: dict[Spec, str] = field(default_factory=dict)  # spec -> clinical StudyInstanceUID

    @property
    def site_id(self) -> str:
        return self.archive.settings.federation_site_id

    def http(self, token: str = "admin") -> httpx.Client:
        if token not in self.tokens and token == "researcher":
            # Minted at first use: a researcher token opens only a project older than itself. A test that
            # needs its own key for the project creates it first.
            with self.archive.db.read() as session:
                exists = project_exists(session, PROJECT)
            if not exists:
                create_project(self.archive, PROJECT, key=PROJECT_KEY)
            self.tokens["researcher"] = add_token(self.archive, "researcher", PROJECT)
        return httpx.Client(
            base_url=self.server.url, headers={"Authorization": f"Bearer {self.tokens[token]}"}, timeout=60
        )

    def expected(self, cohort: CohortDefinition) -> tuple[int, int]:
        """(studies, patients) the definition should count here."""
        chosen = [s for s in self.specs if s.matches(cohort)]
        return len(chosen), len({s.patient for s in chosen})

    def local_count(self, cohort: CohortDefinition) -> tuple[int, int]:
        """What this site's own matching function counts (no disclosure control)."""
        with self.archive.db.read() as session:
            members = matching_studies(session, cohort)
        return len(members), len({m.patient_pk for m in members})

    def drive(self, until: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.runner.tick()
            if until():
                return
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            time.sleep(0.05)


def ingest(site: Site, spec: Spec) -> str:
    """Store the study of `spec` (one series of two 16x16 images) through the ingest path."""
    study = SyntheticStudy(
        patient=synthetic_patient(spec.patient),
        StudyDate=spec.study_date,
        AccessionNumber=f"{site.name}-{len(site.specs)}",
    )
    for ds in ct_series(study, 2, rows=16, columns=16, modality=spec.modality, body_part=spec.body_part):
        site.archive.ingestor.ingest_dataset(ds)
    site.specs.append(spec)
    site.studies[spec] = study.StudyInstanceUID
    return study.StudyInstanceUID


def record_triage(site: Site, study_uid: str, priority: str, diameters: tuple[float, ...]) -> None:
    """What the triage worker records for a series it ran on: findings with diameters, the priority."""

    def work(session: Any) -> None:
        study = session.scalar(
            select(Study).where(Study.partition == "clinical", Study.StudyInstanceUID == study_uid)
        )
        series = study.series[0]
        session.add(
            TriageOutcome(
                partition="clinical",
                StudyInstanceUID=study_uid,
                SeriesInstanceUID=series.SeriesInstanceUID,
                bundle_version="test-bundle 1",
                priority=priority,
                findings=[
                    {"position_lps": [0.0, 0.0, -10.0 * i], "diameter_mm": d, "score": 0.9}
                    for i, d in enumerate(diameters)
                ],
            )
        )
        study.priority = priority

    site.archive.db.transaction(work)


def load(site: Site, specs: list[Spec]) -> None:
    """Ingest every spec, make the stable ones stable, record triage and opt-outs."""
    for spec in specs:
        if spec.stable:
            ingest(site, spec)
    site.runner.tick()
    site.runner.tick()
    for spec in specs:
        if not spec.stable:
            ingest(site, spec)  # arrives after the stability pass: still receiving
    for spec, uid in site.studies.items():
        if spec.priority:
            record_triage(site, uid, spec.priority, spec.diameters)
        if spec.opted_out:
            with site.archive.db.write() as session:
                consent.opt_out(session, synthetic_patient(spec.patient).PatientID, user="test")


@pytest.fixture
def make_site(make_archive: Callable[..., Archive], tmp_path: Path) -> Iterator[Callable[..., Site]]:
    servers: list[Server] = []

    def factory(name: str, **settings: Any) -> Site:
        settings.setdefault("dev_mode", False)
        settings.setdefault("stability_seconds", 0)
        settings.setdefault("share_retry_base_seconds", 0.05)
        settings.setdefault("federation_site_id", f"site-{name}")
        archive = make_archive(tmp_path / f"site-{name}", ae_title=f"SITE{name.upper()}", **settings)
        server = Server(archive)
        servers.append(server)
        runner = JobRunner(archive)
        register_sharing(runner, archive)
        tokens = {"admin": add_token(archive, "admin")}
        tokens["clinician"] = add_token(archive, "clinician")
        return Site(name, archive, server, runner, tokens)

    yield factory
    for server in servers:
        server.stop()


def federate(*sites: Site) -> None:
    """Register every site at every other under its name: site id, URL and public key."""
    for here in sites:
        for there in sites:
            if there is not here:
                set_peer(
                    here.archive,
                    there.name,
                    site_id=there.site_id,
                    url=there.server.url,
                    public_key=public_key_pem(there.archive.settings),
                    user="test",
                )
