"""Filesystem store, laid out as `<root>/<partition>/<sha[:2]>/<sha256>`: temp file in the target directory,
fsync, rename, fsync the directory.

One level of 256 fan-out directories (not two): a second level means a new directory, and its extra fsyncs,
for most of the first 65536 objects of a partition; 256 directories are created once and ext4's hashed
directories hold millions of entries each without slowing down.

A crash at any point leaves either no file or the complete file under its final name; temp files
(`.tmp-*`) are invisible to readers and swept on start. Bytes are written beside their final name; a file
object (an upload of any size) is copied in bounded chunks into `<partition>/.tmp-*` while it is hashed,
and renamed into its fan-out directory once the hash names it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from imaging.errors import NotFound, OutOfResources
from imaging.partition import PARTITION_PATTERN, is_partition_name
from imaging.storage.base import COPY_CHUNK, STREAM_CHUNK, Source, StagedObject, StoredObject

_KEY = re.compile(PARTITION_PATTERN[:-1] + r"/([0-9a-f]{64})$")
SYNC_THREADS = 16  # concurrent fsyncs of a published group (one journal commit for all)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemStore:
    backend = "filesystem"

    def __init__(self, root: Path, *, min_free_bytes: int = 0) -> None:
        self.root = root
        self.min_free_bytes = min_free_bytes
        root.mkdir(parents=True, exist_ok=True)
        self._known_dirs: set[Path] = set()
        self._syncer = ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="fsync")

    def path_for(self, key: str) -> Path:
        """Where this backend keeps `key` (for this backend and its tests only: callers go by key)."""
        match = _KEY.match(key)
        if not match:
            raise NotFound("invalid object key")
        partition, digest = key.split("/", 1)
        return self.root / partition / digest[:2] / digest

    def _ensure_dir(self, d: Path) -> None:
        if d in self._known_dirs:
            return
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            # Make the new directory entries themselves durable (fan-out dir in partition, partition in root).
            for parent in (d.parent, d.parent.parent):
                _fsync_dir(parent)
        self._known_dirs.add(d)

    def put(self, data: Source, partition: str) -> StoredObject:
        return self.publish(self.stage(data, partition))

    def stage(self, data: Source, partition: str, *, sync: bool = True) -> StagedObject:
        if not is_partition_name(partition):
            raise ValueError("invalid partition name")
        if not isinstance(data, bytes):
            return self._stage_file(data, partition, sync)
        key = f"{partition}/{hashlib.sha256(data).hexdigest()}"
        final = self.path_for(key)
        if final.exists() and final.stat().st_size == len(data):
            return StagedObject(key, len(data), None)
        self._check_space(len(data))
        self._ensure_dir(final.parent)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=final.parent)
        with _removed_on_error(tmp):
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        return StagedObject(key, len(data), tmp)

    def _stage_file(self, source: BinaryIO, partition: str, sync: bool) -> StagedObject:
        """Copy into `<partition>/.tmp-*` while hashing (one pass, bounded memory); the hash names it."""
        folder = self.root / partition
        self._ensure_dir(folder)
        self._check_space(0)
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
        with _removed_on_error(tmp):
            try:
                while chunk := source.read(COPY_CHUNK):
                    digest.update(chunk)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    size += len(chunk)
                    if size % (256 * COPY_CHUNK) < COPY_CHUNK:  # every 256 MiB: still room?
                        self._check_space(0)
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
        key = f"{partition}/{digest.hexdigest()}"
        final = self.path_for(key)
        if final.exists() and final.stat().st_size == size:
            Path(tmp).unlink(missing_ok=True)
            return StagedObject(key, size, None)
        self._ensure_dir(final.parent)
        return StagedObject(key, size, tmp)

    def _check_space(self, size: int) -> None:
        if self.free_bytes() - size < self.min_free_bytes:
            raise OutOfResources("storage is full")

    def publish(self, staged: StagedObject) -> StoredObject:
        if staged.temp is None:
            return StoredObject(staged.key, staged.size, created=False)
        final = self.path_for(staged.key)
        try:
            os.replace(staged.temp, final)
        except OSError:
            Path(staged.temp).unlink(missing_ok=True)
            raise
        _fsync_dir(final.parent)
        return StoredObject(staged.key, staged.size, created=True)

    def publish_all(self, staged: Sequence[StagedObject]) -> list[StoredObject]:
        pending = [s for s in staged if s.temp is not None]
        if pending:
            self._sync([Path(s.temp) for s in pending if s.temp])  # the bytes, before any name points at them
        published = []
        for s in staged:
            if s.temp is None:
                published.append(StoredObject(s.key, s.size, created=False))
                continue
            try:
                os.replace(s.temp, self.path_for(s.key))
            except OSError:
                Path(s.temp).unlink(missing_ok=True)
                raise
            published.append(StoredObject(s.key, s.size, created=True))
        if pending:
            self._sync(sorted({self.path_for(s.key).parent for s in pending}))  # the names
        return published

    def _sync(self, paths: list[Path]) -> None:
        """Make `paths` (files or directories) durable together: their fsyncs issued at once, which the
        file system's journal commits as one (ext4's jbd2, XFS's log), instead of one commit after another.
        (Not syncfs(2): it would also wait for every other writer's dirty data on the file system.)"""
        if len(paths) == 1:
            _fsync_path(paths[0])
            return
        list(self._syncer.map(_fsync_path, paths))

    def discard(self, staged: StagedObject) -> None:
        if staged.temp is not None:
            Path(staged.temp).unlink(missing_ok=True)

    def open(self, key: str) -> BinaryIO:
        try:
            return self.path_for(key).open("rb")
        except FileNotFoundError:
            raise NotFound("object not in storage") from None

    def read(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        with self.open(key) as f:
            f.seek(offset)
            return f.read(length)

    def stream(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        f = self.open(key)  # NotFound now, not at the first next()
        return _chunks(f, offset, length)

    def size(self, key: str) -> int:
        try:
            return self.path_for(key).stat().st_size
        except FileNotFoundError:
            raise NotFound("object not in storage") from None

    def exists(self, key: str) -> bool:
        return self.path_for(key).is_file()

    def quarantine(self, key: str) -> None:
        """Into `<root>/../quarantine/`, beside the object folder (same file system: a rename)."""
        target = self.root.parent / "quarantine"
        target.mkdir(exist_ok=True)
        self.path_for(key).rename(target / key.replace("/", "_"))
        _fsync_dir(target)

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)

    def keys(self) -> Iterator[str]:
        for path in self.root.glob("*/??/*"):
            key = f"{path.parent.parent.name}/{path.name}"
            if _KEY.match(key):
                yield key

    def sweep_temporary(self) -> int:
        """Remove temp files left by a crash mid-write (never acknowledged, so nothing is lost)."""
        count = 0
        for pattern in ("*/??/.tmp-*", "*/.tmp-*"):
            for path in self.root.glob(pattern):
                path.unlink(missing_ok=True)
                count += 1
        return count

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.root).free

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def check_writable(self) -> None:
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=self.root)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(probe).unlink(missing_ok=True)


@contextlib.contextmanager
def _removed_on_error(tmp: str) -> Iterator[None]:
    """A failed write leaves nothing behind; a full disk (ENOSPC, EDQUOT) is OutOfResources."""
    try:
        yield
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OutOfResources("storage is full") from None
        raise


def _chunks(f: BinaryIO, offset: int, length: int | None) -> Iterator[bytes]:
    with f:
        f.seek(offset)
        left = length
        while left is None or left > 0:
            chunk = f.read(STREAM_CHUNK if left is None else min(STREAM_CHUNK, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk
