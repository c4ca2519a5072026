"""Object storage for DICOM instances: one Protocol (`base.InstanceStore`), several backends, one error
contract. Nothing outside this package knows where or how an object is kept: callers go by key.

* `base`       — the InstanceStore Protocol, StoredObject / StagedObject.
* `filesystem` — `<data_dir>/objects/<partition>/<sha[:2]>/<sha256>`, temp file + fsync + rename + dir fsync.
"""

from imaging.config import Settings
from imaging.storage.base import InstanceStore, StagedObject, StoredObject
from imaging.storage.filesystem import FilesystemStore

__all__ = ["FilesystemStore", "InstanceStore", "StagedObject", "StoredObject", "open_store"]


def open_store(settings: Settings) -> InstanceStore:
    """The configured backend."""
    return FilesystemStore(settings.objects_dir, min_free_bytes=settings.min_free_bytes)
