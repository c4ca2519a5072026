"""Large objects through C-STORE (dcmtk's storescu) and STOW-RS on every storage backend: a multi-frame
object over the spool thresholds (lowered here, so the test stays small) is received into a spool file,
parsed and stored from it (the ingest path gets a file, not bytes), comes back byte for byte, its frames
are served by range, and no spool file stays behind. Memory growth with a 2 GiB object is measured by
tests/benchmarks/scale/large_objects.py."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from dicomweb.routes import stow
from imaging.archive import Archive
from imaging.config import load_settings
from imaging.dimse import provider
from imaging.index.schema import Instance
from imaging.ingest import ingestor
from tests.archive_fixtures import ARCHIVE_AE, CLIENT_AE, dataset_bytes, require_program, run
from tests.dicomweb.conftest import Server, add_token
from tests.large_object import FRAME_BYTES, write_multiframe

SIZE = 12 * 1024 * 1024


@pytest.fixture
def parsed_sources(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kind of source ("bytes" or "file") the ingest path parsed, in order."""
    kinds: list[str] = []
    real = ingestor.parse

    def spy(data: Any) -> Any:
        kinds.append("bytes" if isinstance(data, bytes) else "file")
        return real(data)

    monkeypatch.setattr(ingestor, "parse", spy)
    return kinds


def _check_stored(archive: Any, sop_uid: str, original: Path) -> None:
    with archive.db.read() as session:
        key, offset, length = session.execute(
            select(Instance.object_key, Instance.pixel_offset, Instance.pixel_length).where(
                Instance.SOPInstanceUID == sop_uid
            )
        ).one()
    stored = b"".join(archive.store.stream(key))
    assert hashlib.sha256(stored).hexdigest() == key.split("/")[1]
    # The data set exactly as sent (C-STORE: behind the File Meta Information the gateway writes).
    assert dataset_bytes(stored) == dataset_bytes(original.read_bytes())
    assert length == (SIZE // FRAME_BYTES) * FRAME_BYTES
    third = archive.store.read_range(key, offset + 2 * FRAME_BYTES, FRAME_BYTES)  # frame 3 by range
    assert third == stored[offset + 2 * FRAME_BYTES : offset + 3 * FRAME_BYTES]
    assert third == dataset_bytes(original.read_bytes())[-(length - 2 * FRAME_BYTES) :][:FRAME_BYTES]


@pytest.mark.dcmtk
def test_c_store_of_a_large_object_is_spooled(
    make_archive: Any,
    start_gateway: Any,
    backend_settings: dict[str, Any],
    parsed_sources: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(provider, "SPOOL_THRESHOLD", 1024 * 1024)
    archive = make_archive(**backend_settings)
    port = start_gateway(archive)
    path = tmp_path / "large.dcm"
    sop_uid, _ = write_multiframe(path, SIZE)
    small = tmp_path / "small.dcm"
    write_multiframe(small, FRAME_BYTES, patient=901)  # one frame: under the threshold, in memory
    storescu = require_program("/usr/bin/storescu")
    done = run(
        [storescu, "-aet", CLIENT_AE, "-aec", ARCHIVE_AE, "127.0.0.1", str(port), str(path), str(small)]
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert parsed_sources == ["file", "bytes"]
    _check_stored(archive, sop_uid, path)
    assert not list((archive.settings.data_dir / "tmp").glob(".spool-*"))


def test_stow_of_a_large_object_is_stored_from_the_spool(
    backend_settings: dict[str, Any],
    parsed_sources: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stow, "LARGE_PART", 1024 * 1024)
    archive = Archive.open(
        load_settings(None, data_dir=tmp_path / "data", min_free_bytes=0, **backend_settings)
    )
    server = Server(archive)
    try:
        token = add_token(archive, "admin")
        path = tmp_path / "large.dcm"
        sop_uid, _ = write_multiframe(path, SIZE)
        data = path.read_bytes()
        body = (
            b"--b\r\nContent-Type: application/dicom\r\n\r\n"
            + data[132:]  # without its preamble, as dicomweb-client sends: stored with one
            + b"\r\n--b--\r\n"
        )
        response = httpx.post(
            f"{server.root}/studies",
            content=body,
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
            },
            timeout=120,
        )
        assert response.status_code == 200, response.text
        assert parsed_sources == ["file"]
        _check_stored(archive, sop_uid, path)
    finally:
        server.stop()
        archive.close()
