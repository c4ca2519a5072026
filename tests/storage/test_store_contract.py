"""The InstanceStore contract, one suite run on every backend (the `store` fixture: filesystem and S3 on
Ceph's radosgw): content-addressed keys, staged writes invisible until published, identical content
stored once, ranged reads and streams, NotFound for what is missing, files of any size written in bounded
memory (multipart on S3), and an archive on the backend ingesting, reading and checking by key only."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from imaging.errors import NotFound
from imaging.maintenance import fsck, reindex
from imaging.storage import InstanceStore
from imaging.storage.base import digest_file
from tests.archive_fixtures import write_synthetic_study
from tests.storage.conftest import SMALL_PART


def test_put_is_content_addressed_and_reads_back(store: InstanceStore) -> None:
    data = os.urandom(70_000)
    obj = store.put(data, "clinical")
    assert obj.key == f"clinical/{hashlib.sha256(data).hexdigest()}"
    assert obj.created and obj.size == len(data)
    assert store.exists(obj.key) and store.size(obj.key) == len(data)
    assert store.read(obj.key) == data
    assert list(store.keys()) == [obj.key]


def test_identical_content_is_stored_once(store: InstanceStore) -> None:
    first = store.put(b"x" * 1000, "clinical")
    again = store.put(b"x" * 1000, "clinical")
    assert again.key == first.key and first.created and not again.created
    other = store.put(b"x" * 1000, "project-a")  # same bytes in another partition: its own object
    assert other.key.startswith("project-a/") and other.created
    assert sorted(store.keys()) == sorted([first.key, other.key])


def test_ranges_and_streams(store: InstanceStore) -> None:
    data = os.urandom(600_000)
    key = store.put(data, "clinical").key
    assert store.read_range(key, 1000, 64) == data[1000:1064]
    assert store.read_range(key, len(data) - 10, 100) == data[-10:]  # clipped at the end
    assert store.read_range(key, len(data) + 5, 10) == b""
    assert b"".join(store.stream(key)) == data
    assert b"".join(store.stream(key, 300_000)) == data[300_000:]
    assert b"".join(store.stream(key, 12345, 300_001)) == data[12345 : 12345 + 300_001]
    with store.open(key) as f:
        f.seek(500_000)
        assert f.read(10) == data[500_000:500_010]
        f.seek(-4, io.SEEK_END)
        assert f.read() == data[-4:]
        f.seek(0)
        assert f.read() == data


def test_missing_keys_are_not_found(store: InstanceStore) -> None:
    missing = "clinical/" + "0" * 64
    assert not store.exists(missing)
    for call in (
        lambda: store.read(missing),
        lambda: store.read_range(missing, 0, 10),
        lambda: store.size(missing),
        lambda: store.open(missing),
        lambda: store.stream(missing),  # before the first chunk
    ):
        with pytest.raises(NotFound):
            call()


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "clinical/../../x", "clinical/" + "g" * 64, "Clinical/" + "0" * 64, ""]
)
def test_hostile_keys_refused(store: InstanceStore, key: str) -> None:
    with pytest.raises(NotFound):
        store.read(key)


def test_hostile_partition_refused(store: InstanceStore) -> None:
    with pytest.raises(ValueError):
        store.put(b"x", "../up")
    with pytest.raises(ValueError):
        store.put(io.BytesIO(b"x"), ".quarantine")


def test_staged_bytes_are_invisible_until_published(store: InstanceStore) -> None:
    staged = store.stage(b"y" * 300, "clinical")
    assert not store.exists(staged.key) and list(store.keys()) == []
    obj = store.publish(staged)
    assert obj.created and store.read(obj.key) == b"y" * 300
    again = store.stage(b"y" * 300, "clinical")
    assert not store.publish(again).created


def test_discarded_stage_leaves_nothing(store: InstanceStore) -> None:
    for source in (b"z" * 300, io.BytesIO(os.urandom(SMALL_PART + 100))):
        staged = store.stage(source, "clinical")
        store.discard(staged)
        assert not store.exists(staged.key)
    assert list(store.keys()) == []
    assert store.sweep_temporary() == 0


def test_large_file_is_written_in_parts_and_read_by_range(store: InstanceStore, tmp_path: Path) -> None:
    """A file source of 2.3 parts: hashed, written in bounded chunks (multipart on S3), whole once
    published; ranges across part boundaries read back exactly."""
    path = tmp_path / "big.bin"
    with path.open("wb") as f:
        for _ in range(23):
            f.write(os.urandom(SMALL_PART // 10))
    expected, size = digest_file(path.open("rb"))
    with path.open("rb") as f:
        staged = store.stage(f, "clinical")
        assert staged.key == f"clinical/{expected}" and staged.size == size
        assert not store.exists(staged.key)
        obj = store.publish(staged)
    assert obj.created and store.size(obj.key) == size
    whole = path.read_bytes()
    across = SMALL_PART - 7
    assert store.read_range(obj.key, across, 20) == whole[across : across + 20]
    assert (
        b"".join(store.stream(obj.key, 2 * SMALL_PART - 3, 9))
        == whole[2 * SMALL_PART - 3 : 2 * SMALL_PART + 6]
    )
    digest = hashlib.sha256()
    for chunk in store.stream(obj.key):
        digest.update(chunk)
    assert digest.hexdigest() == expected
    with path.open("rb") as f:  # the same content again: nothing written
        assert not store.put(f, "clinical").created


def test_delete_and_quarantine(store: InstanceStore) -> None:
    gone = store.put(b"gone", "clinical").key
    bad = store.put(b"corrupt", "clinical").key
    store.delete(gone)
    assert not store.exists(gone)
    store.quarantine(bad)
    assert not store.exists(bad) and list(store.keys()) == []  # out of the key space
    with pytest.raises(NotFound):
        store.read(bad)


def test_writable_probe_leaves_nothing(store: InstanceStore) -> None:
    store.check_writable()
    assert list(store.keys()) == []


def test_archive_on_the_backend(make_archive: Any, backend_settings: dict[str, Any], tmp_path: Path) -> None:
    """Ingest, read back by key, fsck (checksums through the Protocol) and reindex from storage alone."""
    archive = make_archive(**backend_settings)
    files = write_synthetic_study(tmp_path / "study", series=1, per_series=3)
    results = [archive.ingestor.ingest(f.read_bytes(), source="test") for f in files]
    assert {r.object_key for r in results} == set(archive.store.keys())
    assert archive.store.read(results[0].object_key) == files[0].read_bytes()
    report = fsck(archive)
    assert report.clean and report.checked == 3
    assert reindex(archive).indexed == 3
    assert fsck(archive).clean


def test_pydicom_reads_an_object_opened_by_key(store: InstanceStore, tmp_path: Path) -> None:
    """What triage, publication and fsck do: dcmread on `open(key)`, no file name behind it."""
    path = write_synthetic_study(tmp_path / "study", series=1, per_series=1)[0]
    key = store.put(path.read_bytes(), "clinical").key
    with store.open(key) as f:
        ds = dcmread(f)
    original = dcmread(path)
    assert ds.PatientName == original.PatientName
    assert (ds.pixel_array == original.pixel_array).all()
