"""Object storage for DICOM instances: one Protocol (`base.InstanceStore`), several backends, one error
contract. Nothing outside this package knows where or how an object is kept: callers go by key.

* `base`       — the InstanceStore Protocol, StoredObject / StagedObject.
* `filesystem` — `<data_dir>/objects/<partition>/<sha[:2]>/<sha256>`, temp file + fsync + rename + dir fsync.
* `s3`         — an S3-compatible bucket (boto3): conditional PUT, multipart uploads, ranged reads.
"""

from imaging.config import Settings, StorageBackend
from imaging.storage.base import InstanceStore, StagedObject, StoredObject
from imaging.storage.filesystem import FilesystemStore
from imaging.storage.s3 import S3Store

__all__ = ["FilesystemStore", "InstanceStore", "S3Store", "StagedObject", "StoredObject", "open_store"]


def open_store(settings: Settings) -> InstanceStore:
    """The configured backend."""
    if settings.storage_backend is StorageBackend.S3:
        return S3Store.connect(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            addressing_style=settings.s3_addressing_style,
            prefix=settings.s3_prefix,
            part_size=settings.s3_part_size,
        )
    return FilesystemStore(settings.objects_dir, min_free_bytes=settings.min_free_bytes)
