"""Fixtures for the DICOMweb tests: the app on a real port (uvicorn in a thread, 127.0.0.1:<free port>)
over an archive in a temporary folder, seeded through the ingest path.

Test data (nothing downloaded): synthetic CT studies with synthetic PHI (imaging.synthetic), pydicom's
bundled test files (one per transfer syntax, tests/archive_fixtures.TRANSFER_SYNTAX_FILES, plus the
2-frame RLE SC_rgb_rle_2frame.dcm), and multi-frame objects built here from synthetic pixels.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import RLELossless, generate_uid

from dicomweb.app import create_app
from imaging.archive import Archive
from imaging.config import load_settings
from imaging.index.schema import ApiToken
from imaging.research.projects import create_project
from imaging.synthetic import SyntheticPatient, SyntheticStudy, ct_series, ct_slice, synthetic_patient
from tests.archive_fixtures import TRANSFER_SYNTAX_FILES, free_port, testdata_file


class Server:
    """uvicorn serving `create_app(archive)` in a background thread."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.port = free_port()
        self.app = create_app(archive)
        # As `imaging serve` runs it: forwarded headers are imaging.web's to believe (trusted_proxies).
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
            proxy_headers=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = f"{self.url}/dicomweb"

    def flush_audit(self) -> None:
        """Write the audit records the app has queued (imaging.audit.writer) to the index now."""
        assert self.app.state.audit.flush()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.app.state.audit.close()


def add_token(archive: Archive, role: str, project: str = "", **fields: Any) -> str:
    token = secrets.token_urlsafe(24)
    with archive.db.write() as s:
        s.add(
            ApiToken(
                token_hash=hashlib.sha256(token.encode()).hexdigest(), role=role, project=project, **fields
            )
        )
    return token


def encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def multiframe(frames: int = 3, rows: int = 32, compress: str | None = None) -> Dataset:
    """A synthetic multi-frame CT object (frame k has pixel values 100*k + noise)."""
    study = SyntheticStudy(patient=SyntheticPatient("MULTI^FRAME", "MF0001"), AccessionNumber="MF1")
    pixels = np.stack(
        [
            np.full((rows, rows), 100 * (k + 1), np.uint16) + np.arange(rows, dtype=np.uint16)
            for k in range(frames)
        ]
    )
    ds = ct_slice(study, generate_uid(), 1, 0, rows=rows, columns=rows, pixels=pixels[0])
    ds.NumberOfFrames = frames
    ds.PixelData = pixels.tobytes()
    if compress is not None:
        ds.compress(compress)
    return ds


@dataclass
class Seeded:
    archive: Archive
    server: Server
    tokens: dict[str, str]
    studies: dict[str, str] = field(default_factory=dict)  # name -> StudyInstanceUID
    series: dict[str, str] = field(default_factory=dict)
    instances: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # name -> (study, series, sop)
    raw: dict[str, bytes] = field(default_factory=dict)  # name -> bytes as ingested

    def client(self, token: str | None = "admin", **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[token]}"} if token else {}
        headers.update(kw.pop("headers", {}))
        return httpx.Client(base_url=self.server.root, headers=headers, timeout=60, **kw)

    def dicomweb_client(self, token: str = "admin", root: str | None = None) -> Any:
        from dicomweb_client.api import DICOMwebClient

        return DICOMwebClient(
            url=root or self.server.root, headers={"Authorization": f"Bearer {self.tokens[token]}"}
        )


def _ingest(seeded: Seeded, name: str, data: bytes, partition: str = "clinical") -> None:
    result = seeded.archive.ingestor.ingest(data, partition=partition, source="test")
    seeded.instances[name] = (result.study_instance_uid, result.series_instance_uid, result.sop_instance_uid)
    seeded.raw[name] = data


def seed(seeded: Seeded) -> None:
    # Study "ct": two CT series (10 + 4 slices, 64x64), patient SYNTH0001.
    ct = SyntheticStudy(
        patient=synthetic_patient(1),
        StudyDate="20240315",
        StudyTime="101500",
        AccessionNumber="ACC-CT-1",
        StudyDescription="CT CHEST WITH CONTRAST",
    )
    seeded.studies["ct"] = ct.StudyInstanceUID
    for number, count in ((1, 10), (2, 4)):
        series_uid = generate_uid()
        seeded.series[f"ct{number}"] = series_uid
        for i, ds in enumerate(
            ct_series(ct, count, series_number=number, series_uid=series_uid, rows=64, columns=64)
        ):
            _ingest(seeded, f"ct{number}-{i}", encode(ds))
    # Study "mr": another patient, a name with SQL meta-characters and components, MR modality.
    mr = SyntheticStudy(
        patient=SyntheticPatient("O'Brien^Sean^Patrick", "PAT'; DROP TABLE study;--", "19751224", "M"),
        StudyDate="20230102",
        StudyTime="083000",
        AccessionNumber="ACC-MR-1",
        StudyDescription="MR BRAIN",
        ReferringPhysicianName="Yamada^Tarou=山田^太郎=やまだ^たろう",
    )
    seeded.studies["mr"] = mr.StudyInstanceUID
    for i, ds in enumerate(ct_series(mr, 3, series_number=1, rows=32, columns=32, modality="MR")):
        ds.SpecificCharacterSet = "ISO_IR 192"
        _ingest(seeded, f"mr-{i}", encode(ds))
    # Studies "old1".."old3": one slice each, dates across years (ranges and paging).
    for k, date in enumerate(("20190101", "20200601", "20211231"), start=1):
        st = SyntheticStudy(
            patient=synthetic_patient(10 + k),
            StudyDate=date,
            StudyTime=f"{k:02d}0000",
            AccessionNumber=f"ACC-OLD-{k}",
            StudyDescription=f"OLD {k}",
        )
        seeded.studies[f"old{k}"] = st.StudyInstanceUID
        _ingest(seeded, f"old{k}", encode(next(ct_series(st, 1, rows=16, columns=16))))
    # pydicom's bundled files, one per transfer syntax (the MR_small_* share a SOP Instance UID: vary it).
    for variant, (ts, name) in enumerate(TRANSFER_SYNTAX_FILES.items()):
        data = testdata_file(name).read_bytes()
        uid = str(dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID).encode()
        if name.startswith("MR_small") and variant:
            digit = str((int(uid[-1:]) + variant) % 10).encode()
            data = data.replace(uid, uid[:-1] + digit)
        _ingest(seeded, ts, data)
    _ingest(seeded, "rle2", testdata_file("SC_rgb_rle_2frame.dcm").read_bytes())
    _ingest(seeded, "multiframe", encode(multiframe(3)))
    _ingest(seeded, "multiframe-rle", encode(multiframe(4, compress=RLELossless)))
    # A research project's partition.
    proj = SyntheticStudy(
        patient=SyntheticPatient("PSEUDO^0001", "P0001"), AccessionNumber="", StudyDescription="PROJECT"
    )
    seeded.studies["project"] = proj.StudyInstanceUID
    _ingest(seeded, "project-0", encode(next(ct_series(proj, 1, rows=16, columns=16))), partition="lung")


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    data_dir = tmp_path_factory.mktemp("dicomweb") / "data"
    settings = load_settings(
        None,
        data_dir=data_dir,
        dev_mode=False,
        min_free_bytes=0,
        cors_origins=["http://viewer.example"],
        qido_max_results=20,
    )
    archive = Archive.open(settings)
    for project in ("lung", "other"):  # a researcher token opens only a project older than itself
        create_project(archive, project)
    tokens = {
        "admin": add_token(archive, "admin"),
        "clinician": add_token(archive, "clinician"),
        "ingest": add_token(archive, "ingest"),
        "researcher": add_token(archive, "researcher", "lung"),
        "other-researcher": add_token(archive, "researcher", "other"),
    }
    server = Server(archive)
    s = Seeded(archive, server, tokens)
    seed(s)
    try:
        yield s
    finally:
        server.stop()
        archive.close()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Callable[..., Seeded]]:
    """Factory: an empty archive + server with the given settings (admin token only)."""
    made: list[Seeded] = []

    def factory(**overrides: Any) -> Seeded:
        overrides.setdefault("dev_mode", False)
        overrides.setdefault("min_free_bytes", 0)
        settings = load_settings(None, data_dir=tmp_path / f"data{len(made)}", **overrides)
        archive = Archive.open(settings)
        s = Seeded(archive, Server(archive), {"admin": add_token(archive, "admin")})
        made.append(s)
        return s

    yield factory
    for s in made:
        s.server.stop()
        s.archive.close()
