"""The storage protocol. Objects are content-addressed: the key is the SHA-256 of the bytes, and carry their partition (so `reindex` can rebuild everything from storage alone); a path
is never built from a (possibly hostile) UID, an identical re-send is free, and a checksum comes for free."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol


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


class InstanceStore(Protocol):
    def put(self, data: bytes, partition: str) -> StoredObject:
        """Store durably; return only once the bytes are on stable storage."""
        ...

    def stage(self, data: bytes, partition: str) -> StagedObject:
        """The first half of `put`: write and sync the bytes where no reader sees them."""
        ...

    def publish(self, staged: StagedObject) -> StoredObject:
        """The second half of `put`: make a staged object visible under its key, durably."""
        ...

    def discard(self, staged: StagedObject) -> None: ...

    def open(self, key: str) -> BinaryIO: ...

    def read(self, key: str) -> bytes: ...

    def read_range(self, key: str, offset: int, length: int) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def keys(self) -> Iterator[str]: ...

    def free_bytes(self) -> int: ...
