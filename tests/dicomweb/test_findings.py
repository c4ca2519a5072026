"""Issue 12, the HTTP findings, each reproduced: unhandled 500s (share-link expiry, rendered viewports and
crops, a client leaving mid-STOW), STOW bodies without a read timeout, share links serialised on the index's
write lock, a world-readable index, dev mode exposed without a word, and HTTPS on the listener."""

from __future__ import annotations

import logging
import socket
import ssl
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from dicomweb.app import create_app
from imaging import audit
from imaging.archive import Archive
from imaging.cli import app as cli_app
from imaging.cli.server import uvicorn_options
from imaging.config import load_settings
from imaging.sharing.links import create_link
from tests.archive_fixtures import free_port
from tests.dicomweb.conftest import Seeded
from tests.dicomweb.test_research_api import _study
from tests.infra.certificates import TestCA

STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=b0undary'


class ErrorLog(logging.Handler):
    """Collects what the server logs at ERROR (an unhandled exception is logged so)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def server_errors():
    handler = ErrorLog()
    for name in ("uvicorn.error", "uvicorn", "dicomweb", "imaging"):
        logging.getLogger(name).addHandler(handler)
    yield handler.records
    for name in ("uvicorn.error", "uvicorn", "dicomweb", "imaging"):
        logging.getLogger(name).removeHandler(handler)


def test_index_and_its_folder_are_private(seeded: Seeded) -> None:
    data = seeded.archive.settings.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    files = [data / "index.sqlite", data / "index.sqlite-wal", data / "index.sqlite-shm"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_existing_world_readable_index_is_tightened(tmp_path: Path) -> None:

    data = tmp_path / "data"
    Archive.open(load_settings(data_dir=data)).close()
    data.chmod(0o755)
    (data / "index.sqlite").chmod(0o644)
    Archive.open(load_settings(data_dir=data)).close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "index.sqlite").stat().st_mode) == 0o600


@pytest.mark.parametrize("days", ["1e308", "NaN", "Infinity", "-1", "0", "36501"])
def test_share_link_expiry_out_of_range_is_400(seeded: Seeded, days: str) -> None:
    body = f'{{"study_uids": ["{seeded.studies["ct"]}"], "expires_in_days": {days}}}'
    headers = {"Authorization": f"Bearer {seeded.tokens['admin']}", "Content-Type": "application/json"}
    r = httpx.post(f"{seeded.server.url}/api/share-links", content=body, headers=headers)
    assert r.status_code == 400, r.text


@pytest.mark.parametrize(
    ("viewport", "status"),
    [
        ("10,10,0,0,0,0", 400),
        ("nan,10", 400),
        ("10,10,nan,0,5,5", 400),
        ("10,10,0,0,inf,5", 400),
        ("10,10,1e300,0,5,5", 400),
        ("10,10,5000,5000,10,10", 400),  # outside the image
        ("64,64,-100,-100,12000,12000", 200),  # clipped to the image
        ("64,64,32,32,-16,-16", 200),  # flipped
    ],
)
def test_rendered_viewport_values(seeded: Seeded, viewport: str, status: int, server_errors) -> None:
    study, series, sop = seeded.instances["ct1-0"]
    with seeded.client() as c:
        r = c.get(
            f"/studies/{study}/series/{series}/instances/{sop}/rendered",
            params={"viewport": viewport},
            headers={"Accept": "image/png"},
        )
    assert r.status_code == status, r.text
    assert server_errors == []


def test_rendered_study_output_is_bounded(seeded: Seeded) -> None:
    study = seeded.studies["ct"]
    with seeded.client() as c:
        # 14 images at 4096 x 4096 each: over the bound, refused before anything is rendered.
        big = c.get(f"/studies/{study}/rendered", params={"viewport": "4096,4096,0,0,64,64"})
        assert big.status_code == 400 and "pixels" in big.json()["detail"]
        small = c.get(f"/studies/{study}/rendered", params={"viewport": "64,64"})
        assert small.status_code == 200


def _raw_stow(port: int, declared: int, sent: bytes, token: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        (
            f"POST /dicomweb/studies HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {STOW_TYPE}\r\nContent-Length: {declared}\r\n\r\n"
        ).encode()
        + sent
    )
    return sock


def test_client_leaving_mid_stow_is_no_server_error(fresh, server_errors) -> None:
    s = fresh()
    sock = _raw_stow(
        s.server.port,
        100_000_000,
        b"--b0undary\r\nContent-Type: application/dicom\r\n\r\n" + b"x" * 5000,
        s.tokens["admin"],
    )
    time.sleep(0.3)
    sock.close()
    time.sleep(0.5)
    with s.client() as c:
        assert c.get("/studies").status_code == 200
    assert server_errors == []
    spool = s.archive.settings.data_dir / "tmp"
    assert not spool.exists() or list(spool.iterdir()) == []
    s.server.flush_audit()

    with s.archive.db.read() as session:
        (stow,) = audit.query(session, event=audit.AuditEvent.INSTANCES_TRANSFERRED)
    assert stow.action == "C" and stow.outcome != audit.Outcome.SUCCESS


def test_stalled_stow_body_times_out(fresh) -> None:
    s = fresh(http_body_timeout=1.0)
    sock = _raw_stow(s.server.port, 100_000_000, b"--b0undary\r\n", s.tokens["admin"])
    started = time.monotonic()
    answer = sock.recv(4096)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
    assert time.monotonic() - started < 5


def test_share_links_do_not_wait_for_the_write_lock(fresh) -> None:
    """Every /shares/{token} request took the index's write lock, even for an unknown token. Now reads
    answer while a long write holds it (the access is audited through the queue, written later)."""
    s = fresh()

    shared = _study(s.archive, 8)
    token, _ = create_link(s.archive, study_uids=[shared])
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with s.archive.db.write():
            holding.set()
            release.wait(20)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(5)
        with httpx.Client(base_url=s.server.url, timeout=5) as anonymous:
            started = time.monotonic()
            assert anonymous.get("/shares/shl_unknown/dicomweb/studies").status_code == 404
            assert anonymous.get("/shares/not-even-a-link/dicomweb/studies").status_code == 404
            assert anonymous.get(f"/shares/{token}/dicomweb/studies").status_code == 200
            assert time.monotonic() - started < 3
    finally:
        release.set()
        thread.join()
    s.server.flush_audit()


def test_dev_mode_binds_loopback_and_refuses_others(tmp_path: Path, caplog) -> None:
    assert load_settings(dev_mode=True).http_bind_host() == "127.0.0.1"
    assert load_settings(dev_mode=False).http_bind_host() == "0.0.0.0"
    with pytest.raises(ValueError, match="dev_mode"):
        load_settings(dev_mode=True, http_host="0.0.0.0").http_bind_host()
    assert load_settings(dev_mode=True, http_host="0.0.0.0", dev_mode_allow_remote=True).http_bind_host()
    refused = CliRunner().invoke(
        cli_app, ["serve", "--dev", "--http-host", "0.0.0.0", "--data-dir", str(tmp_path / "d")]
    )
    assert refused.exit_code == 1 and "refusing to bind 0.0.0.0" in refused.output

    archive = Archive.open(load_settings(data_dir=tmp_path / "d2", dev_mode=True))
    with caplog.at_level(logging.WARNING, logger="dicomweb.app"):
        app = create_app(archive)
    app.state.audit.close()
    archive.close()
    assert any("DEVELOPMENT MODE" in r.getMessage() for r in caplog.records)


def test_https_listener(tmp_path: Path) -> None:

    ca = TestCA(tmp_path / "pki")
    cert = ca.issue("archive", server=True)
    settings = load_settings(
        data_dir=tmp_path / "data",
        http_tls_certfile=cert.cert,
        http_tls_keyfile=cert.key,
        http_port=free_port(),
    )
    archive = Archive.open(settings)
    app = create_app(archive)
    options = uvicorn_options(settings, "127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.02)
        url = f"https://127.0.0.1:{settings.http_port}"
        response = httpx.get(f"{url}/health", verify=ca.client_context())
        assert response.status_code == 200 and response.json()["status"] == "ok"
        assert "server" not in response.headers
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", verify=ssl.create_default_context())  # an untrusted certificate
        old = ca.client_context()
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("ALL:@SECLEVEL=0")
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/health", verify=old)  # TLS 1.1 and older are refused
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{settings.http_port}/health")  # no plain HTTP on the port
    finally:
        server.should_exit = True
        thread.join(10)
        app.state.audit.close()
        archive.close()
