"""Triage inside the archive, end to end on CPU: dcmtk storescu sends a synthetic chest CT with planted
nodules and one without; after stability the job runner triages each series, files SR and SEG into the
source study through the single ingest path, and sets the study priority; the worklist orders them."""

from __future__ import annotations

import math
import subprocess
import time
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import JPEGLSLossless
from sqlalchemy import select

from imaging.app import build_runner
from imaging.archive import Archive
from imaging.config import load_settings
from imaging.dimse.server import Gateway
from imaging.index.attributes import Level
from imaging.index.query import Query, find
from imaging.index.schema import Job, Study
from imaging.synthetic import SyntheticStudy, synthetic_patient
from tests.conftest import require_program
from tests.triage.chest_series import ChestSeries, without
from tests.triage.conftest import COUNT, PIXEL, ROWS, THICKNESS, planted_phantom
from triage.records import TriageOutcome
from triage.training.synthetic_series import phantom_series

pytestmark = [pytest.mark.dcmtk, pytest.mark.slow]


def _write(datasets: list[Any], folder: Path) -> list[str]:
    folder.mkdir(parents=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(str(path))
    return paths


def _series_modalities(archive: Archive, study_uid: str) -> dict[str, list[Any]]:
    with archive.db.read() as s:
        found: dict[str, list[Any]] = {}
        for m in find(s, Query(level=Level.IMAGE, keys={"StudyInstanceUID": study_uid})):
            found.setdefault(m.series.Modality, []).append(m.instance)
        return found


def test_storescu_to_flagged_study_with_sr_and_seg(tmp_path: Path) -> None:
    storescu = require_program("/usr/bin/storescu")
    dciodvfy = require_program("/usr/bin/dciodvfy")
    archive = Archive.open(load_settings(data_dir=tmp_path / "data", stability_seconds=0, dev_mode=True))
    gateway = Gateway(archive)
    port = gateway.start(host="127.0.0.1", port=0)
    sick = SyntheticStudy(patient=synthetic_patient(11), StudyDescription="CT CHEST")
    well = SyntheticStudy(patient=synthetic_patient(12), StudyDescription="CT CHEST")
    phantom = planted_phantom()
    geometry = {
        "rows": ROWS,
        "columns": ROWS,
        "count": COUNT,
        "pixel_spacing": PIXEL,
        "slice_thickness": THICKNESS,
    }
    sick_files = _write(phantom_series(phantom, study=sick, **geometry), tmp_path / "sick")
    well_files = _write(
        phantom_series(planted_phantom(nodules=False), study=well, seed=7, **geometry), tmp_path / "well"
    )
    try:
        for files in (sick_files, well_files):
            subprocess.run(
                [storescu, "-aec", "IMAGING", "127.0.0.1", str(port), *files], check=True, timeout=300
            )
        runner = build_runner(archive)
        assert "triage" in runner.kinds
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            runner.tick()
            with archive.db.read() as s:
                jobs = s.scalars(select(Job).where(Job.kind == "triage")).all()
            if len(jobs) == 2 and all(j.status == "done" for j in jobs):
                break
            time.sleep(0.2)
        assert [j.status for j in jobs] == ["done", "done"], [j.last_error for j in jobs]

        with archive.db.read() as s:
            priorities = {st.StudyInstanceUID: st.priority for st in s.scalars(select(Study))}
            outcomes = {o.StudyInstanceUID: o for o in s.scalars(select(TriageOutcome))}
        assert priorities[sick.StudyInstanceUID] == "HIGH"
        assert priorities[well.StudyInstanceUID] == "LOW"  # triaged, not flagged
        assert all(f["diameter_mm"] < 6 for f in outcomes[well.StudyInstanceUID].findings)

        # Findings match the planted nodules (≥ 6 mm) within tolerance.
        found = outcomes[sick.StudyInstanceUID].findings
        for nodule in phantom.nodules:  # 6.5, 9 and 12 mm
            best = min(math.dist(f["position_lps"], nodule.center_lps) for f in found)
            assert best < 6.0, (nodule, found)

        # SR and SEG were filed into the source study through the ingest path and are valid DICOM.
        sick_series = _series_modalities(archive, sick.StudyInstanceUID)
        assert set(sick_series) == {"CT", "SR", "SEG"}
        well_filed = set(_series_modalities(archive, well.StudyInstanceUID))
        assert well_filed == (
            {"CT", "SR", "SEG"} if outcomes[well.StudyInstanceUID].findings else {"CT", "SR"}
        )
        for modality in ("SR", "SEG"):
            (instance,) = sick_series[modality]
            path = archive.store.path_for(instance.object_key)
            assert dcmread(path).StudyInstanceUID == sick.StudyInstanceUID
            report = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=120)
            errors = [
                line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")
            ]
            assert errors == [], errors

        # The results are served like any other object: QIDO lists them, the worklist puts the study first.
        from fastapi.testclient import TestClient

        from dicomweb.app import create_app

        with TestClient(create_app(archive)) as http:
            series = http.get(f"/dicomweb/studies/{sick.StudyInstanceUID}/series").json()
            assert sorted(s["00080060"]["Value"][0] for s in series) == ["CT", "SEG", "SR"]
            flagged = http.get("/dicomweb/studies", params={"ScheduledProcedureStepPriority": "HIGH"}).json()
            assert [s["0020000D"]["Value"][0] for s in flagged] == [sick.StudyInstanceUID]
            worklist = http.get("/api/worklist").json()
            assert [w["0020000D"]["Value"][0] for w in worklist] == [
                sick.StudyInstanceUID,
                well.StudyInstanceUID,
            ]
            findings = http.get(f"/api/triage/studies/{sick.StudyInstanceUID}").json()
            assert findings["priority"] == "HIGH" and any(o["findings"] for o in findings["series"])

        # Idempotent per (series, bundle version): more rounds add nothing.
        for _ in range(3):
            runner.tick()
        assert len(_series_modalities(archive, sick.StudyInstanceUID)["SR"]) == 1
    finally:
        gateway.stop()
        archive.close()


def test_storescu_series_of_every_kind_are_triaged_or_refused_with_a_reason(tmp_path: Path) -> None:
    """Through the server: C-STORE (dcmtk), stability, the triage job. A JPEG-LS series without Type 2
    patient/study attributes and a feet-first prone Enhanced CT get SR and SEG in their studies; a series
    with missing slices gets a failed outcome with the reason, and its job is not retried."""
    storescu = require_program("/usr/bin/storescu")
    archive = Archive.open(load_settings(data_dir=tmp_path / "data", stability_seconds=0, dev_mode=True))
    gateway = Gateway(archive)
    port = gateway.start(host="127.0.0.1", port=0)
    bare_spec = ChestSeries(storage="signed")
    bare = []
    for ds in without(
        bare_spec.datasets(), "PatientBirthDate", "PatientSex", "StudyID", "ReferringPhysicianName"
    ):
        ds.compress(JPEGLSLossless)
        bare.append(ds)
    enhanced_spec = ChestSeries(position="FFP", origin_offset=(5.0, -12.0, 1300.0), seed=5)
    enhanced = enhanced_spec.enhanced()
    gap = ChestSeries(seed=6).datasets()
    del gap[60]
    try:
        # -xt: propose JPEG-LS lossless, so the files go as they are (the archive stores what it receives).
        for name, datasets, options in (
            ("bare", bare, ["-xt"]),
            ("enhanced", [enhanced], []),
            ("gap", gap, []),
        ):
            files = _write(datasets, tmp_path / name)
            command = [storescu, *options, "-aec", "IMAGING", "127.0.0.1", str(port), *files]
            subprocess.run(command, check=True, timeout=300)
        runner = build_runner(archive)
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            runner.tick()
            with archive.db.read() as s:
                jobs = s.scalars(select(Job).where(Job.kind == "triage")).all()
            if len(jobs) == 3 and all(j.status in ("done", "failed") for j in jobs):
                break
            time.sleep(0.2)
        assert sorted(j.status for j in jobs) == ["done"] * 3, [j.last_error for j in jobs]
        assert all(j.attempts == 1 for j in jobs)  # the refused series is not retried
        with archive.db.read() as s:
            outcomes = {o.SeriesInstanceUID: o for o in s.scalars(select(TriageOutcome))}
            priorities = {st.StudyInstanceUID: st.priority for st in s.scalars(select(Study))}
        refused = outcomes[gap[0].SeriesInstanceUID]
        assert refused.status == "failed" and refused.error.startswith("gap: 1 slice(s) missing")
        assert priorities[gap[0].StudyInstanceUID] == ""
        for spec, source in ((bare_spec, bare[0]), (enhanced_spec, enhanced)):
            outcome = outcomes[source.SeriesInstanceUID]
            assert outcome.status == "done" and outcome.error == ""
            truth = spec.target_lps()
            assert min(math.dist(f["position_lps"], truth) for f in outcome.findings) < 6.0, outcome.findings
            assert priorities[source.StudyInstanceUID] == "HIGH"
            filed = _series_modalities(archive, source.StudyInstanceUID)
            assert set(filed) == {"CT", "SR", "SEG"}
            sr = dcmread(BytesIO(archive.store.read(filed["SR"][0].object_key)))
            assert sr.StudyInstanceUID == source.StudyInstanceUID
        sr = dcmread(
            BytesIO(
                archive.store.read(_series_modalities(archive, bare[0].StudyInstanceUID)["SR"][0].object_key)
            )
        )
        assert sr.PatientBirthDate == "" and sr.StudyID == "" and sr.PatientID == "RI-0001"
    finally:
        gateway.stop()
        archive.close()
