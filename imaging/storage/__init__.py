"""Object storage for DICOM instances: one protocol, several backends."""

from imaging.storage.base import InstanceStore, StoredObject
from imaging.storage.filesystem import FilesystemStore

__all__ = ["FilesystemStore", "InstanceStore", "StoredObject"]
