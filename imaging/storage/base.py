"""The storage protocol. Objects are content-addressed: the key is "<partition>/<SHA-256 of the bytes>", so
`reindex` can rebuild everything from storage alone, a location is never built from a (possibly hostile) UID,
an identical re-send is free, and a checksum comes for free.

Everything outside `imaging.storage` reads and writes by key through this protocol (byte ranges, streams),
never by path: a backend (filesystem, S3) is a drop-in replacement. Every backend raises the same errors:
NotFound for a missing key, OutOfResources when full.

What is written comes as `bytes` (most instances: ~0.5 MB, the fast path) or as a readable, seekable binary
file positioned at the object's first byte and read to its end (a spooled upload of any size: the backend
copies it in bounded chunks, hashing as it goes, so memory does not grow with the object)."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

Source = bytes | BinaryIO
STREAM_CHUNK = 256 * 1024
COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredObject:
    key: str  # "<partition>/<hex SHA-256 of the content>"
    size: int
    created: bool  # False when identical content was already stored


@dataclass(frozen=True)
class StagedObject:
    """Bytes on stable storage under a name no reader sees, until published (or discarded)."""

    key: str
    size: int
    temp: str | None  # None when identical content is already stored: nothing to publish
    # Bytes a backend writes only when publishing (object storage: one conditional PUT is the whole write).
    payload: bytes | None = field(default=None, repr=False, compare=False)


class InstanceStore(Protocol):
    backend: str  # "filesystem", "s3": the label of its metrics

    def put(self, data: Source, partition: str) -> StoredObject:
        """Store durably; return only once the store confirmed the bytes are on stable storage."""
        ...

    def stage(self, data: Source, partition: str, *, sync: bool = True) -> StagedObject:
        """The first half of `put`: write the bytes where no reader sees them (or prepare to).
        `sync=False`: not yet durable; `publish_all` makes a group durable with one sync."""
        ...

    def publish(self, staged: StagedObject) -> StoredObject:
        """The second half of `put`: make a staged object visible under its key, durably."""
        ...

    def publish_all(self, staged: Sequence[StagedObject]) -> list[StoredObject]:
        """Publish a group staged with `sync=False`: one sync makes all their bytes durable, then each
        becomes visible under its key, and one more sync makes the names durable."""
        ...

    def discard(self, staged: StagedObject) -> None: ...

    def open(self, key: str) -> BinaryIO:
        """A seekable binary file object over the object (the caller closes it)."""
        ...

    def read(self, key: str) -> bytes: ...

    def read_range(self, key: str, offset: int, length: int) -> bytes: ...

    def stream(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The object's bytes [offset, offset + length) in chunks; NotFound is raised before the first chunk."""
        ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def quarantine(self, key: str) -> None:
        """Move a (corrupt) object out of the key space, kept for inspection but never served."""
        ...

    def keys(self) -> Iterator[str]: ...

    def sweep_temporary(self) -> int:
        """Remove what crashed writes left behind (never acknowledged); returns how many."""
        ...

    def prepare(self) -> None:
        """Create what the backend needs and may lack (the root folder, the bucket); at start-up."""
        ...

    def free_bytes(self) -> int | None:
        """Free space, or None where the backend has no limit it can tell (object storage)."""
        ...

    def check_writable(self) -> None:
        """Write and remove a probe outside the key space; raises if the store cannot take writes."""
        ...


def digest_file(f: BinaryIO) -> tuple[str, int]:
    """(hex SHA-256, size) of a file from its current position to its end, read in bounded chunks; the
    position is restored."""
    start = f.tell()
    digest = hashlib.sha256()
    size = 0
    while chunk := f.read(COPY_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    f.seek(start)
    return digest.hexdigest(), size


def file_slice(fd: int, offset: int, size: int, prefix: bytes = b"") -> BinaryIO:
    """A seekable file of its own over `prefix` then `size` bytes of the open file `fd` from `offset` on:
    an object spooled inside a larger file (a STOW-RS part, a C-STORE data set after its Part 10 header),
    read by position (pread: several slices of one file are read concurrently)."""
    return io.BufferedReader(_Slice(fd, offset, size, prefix), buffer_size=COPY_CHUNK)  # type: ignore[return-value]


class _Slice(io.RawIOBase):
    def __init__(self, fd: int, offset: int, size: int, prefix: bytes) -> None:
        self.fd = fd
        self.offset = offset
        self.prefix = prefix
        self.length = len(prefix) + size
        self.position = 0
        # No file name (pydicom reads `name`, and would reopen a deferred value by it): by key only.
        self.name = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.length - self.position)
        if want <= 0:
            return 0
        if self.position < len(self.prefix):
            data = self.prefix[self.position : self.position + want]
        else:
            data = os.pread(self.fd, want, self.offset + self.position - len(self.prefix))
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)
