"""Fixtures shared by the archive-core tests (tests/dimse, tests/index, tests/storage, tests/cli).

Import them into a folder's conftest.py with `from tests.archive_fixtures import *`.

* `db_url` is parametrised over ["sqlite", "postgres"]: the same test runs on the embedded SQLite index and
  on PostgreSQL (127.0.0.1:5432, trust auth, user postgres). One fresh database `imaging_test_<random>` is
  created per test session and dropped at the end; each test starts from empty tables.
* `make_archive(**settings)` opens an archive in a temporary data dir (SQLite unless `db_url` says otherwise).
* `start_gateway(archive)` starts the DIMSE gateway in process on 127.0.0.1, port 0.
* Test data: `synthetic_study_files()` writes a generated multi-series CT study (imaging.synthetic, synthetic
  PHI); `TRANSFER_SYNTAX_FILES` names one pydicom bundled test file per transfer syntax.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from imaging.archive import Archive
from imaging.config import load_settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_program(path: str) -> str:
    """`path` if executable; skip locally, fail in CI (same contract as tests/conftest.py, importable
    from test modules in sub-folders, where `conftest` names the folder's own conftest)."""
    import shutil

    found = shutil.which(path)
    if found is None:
        if IN_CI:
            pytest.fail(f"required program {path} is not installed")
        pytest.skip(f"required program {path} is not installed")
    return found


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PG_ADMIN_URL = os.environ.get("IMAGING_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
DB_BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
ARCHIVE_AE = "IMAGING"
CLIENT_AE = "TESTSCU"

# One pydicom bundled test file per transfer syntax (pydicom.data, shipped in the wheel; never downloaded).
TRANSFER_SYNTAX_FILES: dict[str, str] = {
    "1.2.840.10008.1.2": "MR_small_implicit.dcm",  # Implicit VR Little Endian (MR)
    "1.2.840.10008.1.2.1": "CT_small.dcm",  # Explicit VR Little Endian (CT)
    "1.2.840.10008.1.2.2": "MR_small_bigendian.dcm",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.1.99": "image_dfl.dcm",  # Deflated Explicit VR Little Endian (SC)
    "1.2.840.10008.1.2.5": "MR_small_RLE.dcm",  # RLE Lossless
    "1.2.840.10008.1.2.4.50": "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51": "JPEG-lossy.dcm",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.80": "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.91": "693_J2KI.dcm",  # JPEG 2000 (has retired group length elements)
}
# Non-image storage class, implicit VR: RT Plan.
EXTRA_FILES = ["rtplan.dcm", "JPEG2000.dcm"]


# --------------------------------------------------------------------------------------- databases
def _pg_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, migrated to the newest schema."""
    try:
        admin = _pg_connect(PG_ADMIN_URL)
    except Exception as exc:  # server not running
        if IN_CI:
            pytest.fail(f"PostgreSQL not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    name = f"imaging_test_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        from imaging.index.db import Database

        db = Database(url)
        db.migrate()
        db.dispose()
        yield url
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _empty_postgres(url: str) -> None:
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    try:
        tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
        if tables:
            with engine.begin() as conn:
                conn.execute(
                    text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
                )
    finally:
        engine.dispose()


@pytest.fixture(params=DB_BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """'' (SQLite in the data dir) or the session's PostgreSQL database, emptied."""
    if request.param == "sqlite":
        return ""
    url: str = request.getfixturevalue("pg_database")
    _empty_postgres(url)
    return url


# --------------------------------------------------------------------------------------- archives
@pytest.fixture
def make_archive(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Archive]]:
    """Factory: an archive on a temp data dir; uses `db_url` when the test asked for it."""
    opened: list[Archive] = []
    url = request.getfixturevalue("db_url") if "db_url" in request.fixturenames else ""

    def factory(data_dir: Path | None = None, **overrides: Any) -> Archive:
        d = data_dir or tmp_path / f"data{len(opened)}"
        overrides.setdefault("dev_mode", True)
        overrides.setdefault("min_free_bytes", 0)
        overrides.setdefault("network_timeout", 20.0)
        settings = load_settings(None, data_dir=d, database_url=url or None, **overrides)
        archive = Archive.open(settings)
        opened.append(archive)
        return archive

    yield factory
    for archive in opened:
        archive.close()


@pytest.fixture
def start_gateway() -> Iterator[Callable[[Archive], int]]:
    """Factory: start the DIMSE gateway of `archive` on 127.0.0.1:<free port>; returns the port."""
    from imaging.dimse.server import Gateway

    gateways: list[Gateway] = []

    def factory(archive: Archive) -> int:
        gateway = Gateway(archive)
        gateways.append(gateway)
        return gateway.start(host="127.0.0.1", port=0)

    yield factory
    for gateway in gateways:
        gateway.stop()


# --------------------------------------------------------------------------------------- data
def write_synthetic_study(
    folder: Path, *, series: int = 3, per_series: int = 4, patient: int = 1, rows: int = 64, **study: Any
) -> list[Path]:
    """A generated CT study (synthetic PHI from imaging.synthetic) as Part 10 files in `folder`."""
    from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient

    folder.mkdir(parents=True, exist_ok=True)
    st = SyntheticStudy(patient=synthetic_patient(patient), **study)
    paths = []
    for number in range(1, series + 1):
        for ds in ct_series(
            st,
            per_series,
            series_number=number,
            rows=rows,
            columns=rows,
            series_description=f"SERIES {number}",
        ):
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
    return paths


@contextmanager
def quiet() -> Iterator[None]:
    """No warnings and no log output: pydicom complains about its own odd test files on every read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.CRITICAL)
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def bundled_testdata_files() -> list[Path]:
    """The test files pydicom ships (its `get_testdata_files` would also try to download more: no downloads
    at test time)."""
    import pydicom.data

    root = Path(pydicom.data.__file__).parent / "test_files"
    return sorted(path for path in root.glob("*") if path.is_file())


def testdata_file(name: str) -> Path:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.fail(f"pydicom test file {name} not bundled")
    return Path(str(path))


def unique_copy(name: str, dest: Path, variant: int) -> Path:
    """Copy of a pydicom test file whose SOP Instance UID's last two digits become `variant`+10 (same length,
    so the bytes stay valid): the MR_small_* files share one SOP Instance UID across transfer syntaxes."""
    from pydicom import dcmread

    src = testdata_file(name)
    data = src.read_bytes()
    uid = str(dcmread(src, stop_before_pixels=True).SOPInstanceUID).encode()
    if data.count(uid) >= 2 and variant:
        new = uid[:-2] + b"%02d" % (10 + variant % 80)
        assert new != uid
        data = data.replace(uid, new)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def dataset_bytes(data: bytes) -> bytes:
    """The data set of a Part 10 stream, after the file meta (inflated when deflated)."""
    import zlib

    offset = 132 if data[128:132] == b"DICM" else 0
    # (0002,0000) group length gives the meta's end.
    assert data[offset : offset + 4] == b"\x02\x00\x00\x00", "file meta must start with group length"
    meta_len = int.from_bytes(data[offset + 8 : offset + 12], "little")
    body_start = offset + 12 + meta_len
    if b"1.2.840.10008.1.2.1.99" in data[offset:body_start]:
        return zlib.decompress(data[body_start:], -15)
    return data[body_start:]


@contextmanager
def storescp(
    out_dir: Path, *, ae_title: str = "DEST", port: int | None = None, accept_all: bool = True
) -> Iterator[int]:
    """dcmtk storescp on 127.0.0.1: accepts every syntax (or, `accept_all=False`, its default: the
    uncompressed ones only), writes exactly the bytes received (+B)."""
    import time

    program = require_program("/usr/bin/storescp")
    out_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen(
        [
            program,
            "-v",
            "-aet",
            ae_title,
            *(["+xa"] if accept_all else []),
            "+B",
            "-dhl",
            "-od",
            str(out_dir),
            str(port),
        ],
        stdout=(out_dir.parent / f"{out_dir.name}.storescp.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(100):  # wait until it listens
            import socket

            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def send_raw(port: int, files: list[Path], *, aet: str = CLIENT_AE, called: str = ARCHIVE_AE) -> list[int]:
    """C-STORE each file's data set bytes as they are in the file (pynetdicom chunked send: no decoding,
    no re-encoding), over one association; the request's SOP Class/Instance UIDs come from the file meta.
    Returns the status of each (-1 where no response came)."""
    from pydicom import dcmread
    from pynetdicom import AE, _config, build_context

    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        ae = AE(ae_title=aet)
        pairs = []
        for f in files:
            meta = dcmread(f, stop_before_pixels=True, specific_tags=[]).file_meta
            pairs.append((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
        ae.requested_contexts = [build_context(c, [t]) for c, t in sorted(set(pairs))][:128]
        assoc = ae.associate("127.0.0.1", port, ae_title=called)
        assert assoc.is_established, "association refused"
        statuses = []
        try:
            for f in files:
                rsp = assoc.send_c_store(f)
                statuses.append(int(rsp.Status) if "Status" in rsp else -1)
        finally:
            if assoc.is_established:
                assoc.release()
        return statuses
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


def part10(ds: Any, path: Path, *, sop_class: str | None = None, sop_instance: str | None = None) -> Path:
    """Write `ds` (with file_meta) as Part 10 without any validation (for broken test data)."""
    from pydicom.filewriter import dcmwrite

    meta = ds.file_meta
    if sop_class:
        meta.MediaStorageSOPClassUID = sop_class
    if sop_instance:
        meta.MediaStorageSOPInstanceUID = sop_instance
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.preamble = b"\0" * 128
    dcmwrite(path, ds, enforce_file_format=False)
    return path


def echo(port: int, aet: str = CLIENT_AE) -> bool:
    """C-ECHO with pynetdicom: True when the gateway answers Success."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=aet)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)
    if not assoc.is_established:
        return False
    try:
        rsp = assoc.send_c_echo()
        return "Status" in rsp and rsp.Status == 0
    finally:
        assoc.release()


def run(args: list[str], timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)


__all__ = [
    "ARCHIVE_AE",
    "CLIENT_AE",
    "DB_BACKENDS",
    "EXTRA_FILES",
    "IN_CI",
    "TRANSFER_SYNTAX_FILES",
    "dataset_bytes",
    "db_url",
    "echo",
    "free_port",
    "make_archive",
    "part10",
    "pg_database",
    "require_program",
    "run",
    "send_raw",
    "start_gateway",
    "storescp",
    "testdata_file",
    "unique_copy",
    "write_synthetic_study",
]


# --------------------------------------------------------------------------------- subprocess server
def serve_subprocess(
    data_dir: Path, port: int, log: Path, *, timeout: float = 60.0, **settings: str
) -> subprocess.Popen[bytes]:
    """`imaging serve --no-http --dev` in a child process (workers off); `settings` become IMAGING_* env
    variables. Returns once the gateway says it listens."""
    import sys
    import time

    env = {**os.environ, "IMAGING_WORKERS": "false", "IMAGING_MIN_FREE_BYTES": "0"}
    env.update({f"IMAGING_{k.upper()}": v for k, v in settings.items()})
    command = [sys.executable, "-m", "imaging.cli", "serve", "--no-http", "--dev"]
    command += ["--data-dir", str(data_dir), "--dicom-port", str(port)]
    proc = subprocess.Popen(command, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "DICOM gateway" in log.read_text(errors="replace"):
            return proc
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start: " + log.read_text())
