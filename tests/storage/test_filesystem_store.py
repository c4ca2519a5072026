"""Content-addressed durable store: paths from hashes, atomic writes, identical re-put is free, full disk."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest

from imaging.errors import NotFound, OutOfResources
from imaging.storage.filesystem import FilesystemStore


def test_put_paths_from_hash_and_read_back(tmp_path):
    store = FilesystemStore(tmp_path)
    data = b"DICM" * 1000
    obj = store.put(data, "clinical")
    digest = hashlib.sha256(data).hexdigest()
    assert obj.key == f"clinical/{digest}" and obj.created and obj.size == len(data)
    assert store.path_for(obj.key) == tmp_path / "clinical" / digest[:2] / digest
    assert store.read(obj.key) == data
    assert store.read_range(obj.key, 4, 8) == data[4:12]
    assert list(store.keys()) == [obj.key]


def test_identical_put_is_not_rewritten(tmp_path):
    store = FilesystemStore(tmp_path)
    first = store.put(b"x" * 100, "clinical")
    path = store.path_for(first.key)
    before = path.stat()
    again = store.put(b"x" * 100, "clinical")
    assert again.key == first.key and not again.created
    assert path.stat().st_mtime_ns == before.st_mtime_ns and path.stat().st_ino == before.st_ino
    # Same bytes in another partition: a separate object.
    assert store.put(b"x" * 100, "project-a").key.startswith("project-a/")


@pytest.mark.parametrize(
    "key", ["../etc/passwd", "clinical/../../x", "clinical/" + "g" * 64, "Clinical/" + "0" * 64]
)
def test_hostile_keys_refused(tmp_path, key):
    with pytest.raises(NotFound):
        FilesystemStore(tmp_path).path_for(key)


def test_hostile_partition_refused(tmp_path):
    with pytest.raises(ValueError):
        FilesystemStore(tmp_path).put(b"x", "../up")


def test_min_free_bytes_and_enospc_are_out_of_resources(tmp_path, monkeypatch):
    with pytest.raises(OutOfResources):
        FilesystemStore(tmp_path, min_free_bytes=1 << 62).put(b"x", "clinical")
    store = FilesystemStore(tmp_path)

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OutOfResources):
        store.put(b"y" * 10, "clinical")
    assert not list(tmp_path.rglob(".tmp-*"))  # nothing half-written stays behind
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_sweep_removes_temporary_files_only(tmp_path):
    store = FilesystemStore(tmp_path)
    obj = store.put(b"keep", "clinical")
    leftover = store.path_for(obj.key).parent / ".tmp-abc123"
    leftover.write_bytes(b"partial")
    assert store.sweep_temporary() == 1
    assert not leftover.exists() and store.exists(obj.key)
    assert list(store.keys()) == [obj.key]  # temp files are never listed as objects


def test_delete(tmp_path):
    store = FilesystemStore(tmp_path)
    obj = store.put(b"gone", "clinical")
    store.delete(obj.key)
    assert not store.exists(obj.key)
    with pytest.raises(NotFound):
        store.read(obj.key)


def test_staged_bytes_are_invisible_until_published(tmp_path):
    store = FilesystemStore(tmp_path)
    staged = store.stage(b"y" * 300, "clinical")
    assert staged.temp is not None and os.path.getsize(staged.temp) == 300
    assert not store.exists(staged.key) and list(store.keys()) == []
    obj = store.publish(staged)
    assert obj.created and store.read(obj.key) == b"y" * 300 and not os.path.exists(staged.temp)
    again = store.stage(b"y" * 300, "clinical")  # already stored: nothing written
    assert again.temp is None and not store.publish(again).created


def test_discarded_stage_leaves_nothing(tmp_path):
    store = FilesystemStore(tmp_path)
    staged = store.stage(b"z" * 300, "clinical")
    store.discard(staged)
    assert not store.exists(staged.key)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_unparsable_ingest_leaves_no_file(make_archive):
    from imaging.errors import CannotUnderstand

    archive = make_archive()
    with pytest.raises(CannotUnderstand):
        archive.ingestor.ingest(b"\x00" * 128 + b"DICM" + b"garbage" * 100)
    assert list(archive.store.keys()) == []
    assert [p for p in archive.store.root.rglob("*") if p.is_file()] == []
