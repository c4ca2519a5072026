"""S3-compatible object storage (AWS S3, Ceph radosgw, MinIO...) behind the InstanceStore protocol, with
boto3. The key "<partition>/<sha256>" is the object's name in the bucket (under an optional prefix), so
several archive processes and workers share one store with no shared file system.

Writes, and what a crash leaves:
* bytes (most instances, ~0.5 MB): `stage` only hashes; `publish` is one conditional PUT
  (`If-None-Match: *`, with Content-MD5, which the server checks): visible all at once or not at all, and a
  412 says identical content is already there. Success only after the server's 200. On radosgw a
  multipart upload costs ~10× a PUT for an object this size, which is why small objects take no staging.
  A crash before the PUT leaves nothing; after it, an object the index may not point at yet, which
  `fsck` / `reindex` pick up, as with the filesystem backend.
* a file (a spooled upload of any size): hashed first (the key must name the content), then a multipart
  upload to the final key, each part with its Content-MD5, the parts uploaded in `stage`; `publish`
  completes the upload (the object appears at once, whole) and `discard` aborts it. An upload that a crash
  left incomplete is invisible to readers and costs storage only: `sweep_temporary` aborts those started
  more than `stale_after` seconds ago (not younger ones: another archive process may be writing them).

Reads: `read_range` and `stream(offset, length)` are ranged GETs; `open` gives a seekable file object that
reads by range on demand (pydicom reading a 2 GB object does not fetch it whole).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import io
import re
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from imaging.errors import NotFound, OutOfResources
from imaging.partition import PARTITION_PATTERN, is_partition_name
from imaging.storage.base import STREAM_CHUNK, Source, StagedObject, StoredObject, digest_file

_KEY = re.compile(PARTITION_PATTERN[:-1] + r"/([0-9a-f]{64})$")
QUARANTINE = ".quarantine/"  # never a partition name: outside the key space
PROBE = ".probe/"
MIN_PART_SIZE = 5 * 1024 * 1024
PUBLISH_CONCURRENCY = 8  # S3's smallest part but the last
MISSING = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
FULL = {"QuotaExceeded", "EntityTooLarge", "InsufficientCapacity"}


def _md5(data: bytes | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Store:
    backend = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        client: Any = None,
        prefix: str = "",
        part_size: int = 16 * 1024 * 1024,
        stale_after: float = 6 * 3600,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError("part_size below S3's minimum of 5 MiB")
        self.bucket = bucket
        self.prefix = prefix
        self.part_size = part_size
        self.stale_after = stale_after
        self.client = client if client is not None else boto3.client("s3")

    @classmethod
    def connect(
        cls,
        bucket: str,
        *,
        endpoint_url: str = "",
        region: str = "",
        access_key_id: str = "",
        secret_access_key: str = "",
        addressing_style: str = "auto",
        **options: Any,
    ) -> S3Store:
        """A store on a new boto3 client (empty credentials: boto3's own chain, e.g. an instance role)."""
        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            region_name=region or None,
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=secret_access_key or None,
            config=Config(
                s3={"addressing_style": addressing_style},
                # One connection per concurrent ingest (the stager's threads) and reader.
                max_pool_connections=64,
                retries={"max_attempts": 5, "mode": "standard"},
                # Integrity by Content-MD5, which every S3 implementation checks; the newer CRC trailers
                # are not understood by every server.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )
        return cls(bucket, client=client, **options)

    # -- names ----------------------------------------------------------------------------------------

    def _name(self, key: str) -> str:
        if not _KEY.match(key):
            raise NotFound("invalid object key")
        return self.prefix + key

    def _key_of(self, name: str) -> str | None:
        key = name[len(self.prefix) :] if name.startswith(self.prefix) else ""
        return key if _KEY.match(key) else None

    # -- writing --------------------------------------------------------------------------------------

    def put(self, data: Source, partition: str) -> StoredObject:
        return self.publish(self.stage(data, partition))

    def stage(self, data: Source, partition: str, *, sync: bool = True) -> StagedObject:
        """(`sync` means nothing here: the server's answer to each write is its durability.)"""
        if not is_partition_name(partition):
            raise ValueError("invalid partition name")
        if isinstance(data, bytes):
            return StagedObject(f"{partition}/{hashlib.sha256(data).hexdigest()}", len(data), "", data)
        digest, size = digest_file(data)
        key = f"{partition}/{digest}"
        if self.exists(key):
            return StagedObject(key, size, None)
        name = self._name(key)
        with _translated():
            upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=name)["UploadId"]
        try:
            number = 0
            while True:
                chunk = data.read(self.part_size)
                if not chunk and number:
                    break
                number += 1
                with _translated():
                    self.client.upload_part(
                        Bucket=self.bucket,
                        Key=name,
                        UploadId=upload,
                        PartNumber=number,
                        Body=chunk,
                        ContentMD5=_md5(chunk),
                    )
                if len(chunk) < self.part_size:
                    break
        except BaseException:
            self._abort(name, upload)
            raise
        return StagedObject(key, size, upload)

    def publish(self, staged: StagedObject) -> StoredObject:
        if staged.temp is None:
            return StoredObject(staged.key, staged.size, created=False)
        name = self._name(staged.key)
        if staged.payload is not None:
            try:
                with _translated():
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=name,
                        Body=staged.payload,
                        ContentMD5=_md5(staged.payload),
                        IfNoneMatch="*",
                    )
            except _PreconditionFailed:
                return StoredObject(staged.key, staged.size, created=False)
            return StoredObject(staged.key, staged.size, created=True)
        try:
            with _translated():
                parts = self._parts(name, staged.temp)
                self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=staged.temp, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            self._abort(name, staged.temp)
            raise
        return StoredObject(staged.key, staged.size, created=True)

    def publish_all(self, staged: Sequence[StagedObject]) -> list[StoredObject]:
        """Concurrent PUTs: each answered only once the server holds the object durably."""
        if len(staged) <= 1:
            return [self.publish(s) for s in staged]
        with ThreadPoolExecutor(min(len(staged), PUBLISH_CONCURRENCY), thread_name_prefix="s3-put") as pool:
            return list(pool.map(self.publish, staged))

    def _parts(self, name: str, upload: str) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        marker = 0
        while True:
            page = self.client.list_parts(
                Bucket=self.bucket, Key=name, UploadId=upload, PartNumberMarker=marker
            )
            parts += [{"PartNumber": p["PartNumber"], "ETag": p["ETag"]} for p in page.get("Parts", [])]
            if not page.get("IsTruncated"):
                return parts
            marker = page["NextPartNumberMarker"]

    def discard(self, staged: StagedObject) -> None:
        if staged.temp and staged.payload is None:
            self._abort(self._name(staged.key), staged.temp)

    def _abort(self, name: str, upload: str) -> None:
        with contextlib.suppress(ClientError, BotoCoreError):  # else swept later
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload)

    # -- reading --------------------------------------------------------------------------------------

    def _get(self, key: str, first: int | None = None, last: int | None = None) -> Any:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._name(key)}
        if first is not None:
            kwargs["Range"] = f"bytes={first}-{'' if last is None else last}"
        try:
            with _translated():
                return self.client.get_object(**kwargs)
        except _InvalidRange:
            return None

    def open(self, key: str) -> BinaryIO:
        size = self.size(key)
        return io.BufferedReader(_RangeReader(self, key, size), buffer_size=STREAM_CHUNK)  # type: ignore[return-value]

    def read(self, key: str) -> bytes:
        response = self._get(key)
        data: bytes = response["Body"].read()
        return data

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            self.size(key)  # NotFound all the same
            return b""
        response = self._get(key, offset, offset + length - 1)
        if response is None:  # the range starts past the end
            return b""
        data: bytes = response["Body"].read()
        return data

    def stream(self, key: str, offset: int = 0, length: int | None = None) -> Iterator[bytes]:
        if length is not None and length <= 0:
            self.size(key)
            return iter(())
        last = None if length is None else offset + length - 1
        response = self._get(key, offset if offset or last is not None else None, last)
        if response is None:
            return iter(())
        return _body_chunks(response["Body"])

    def size(self, key: str) -> int:
        with _translated():
            head = self.client.head_object(Bucket=self.bucket, Key=self._name(key))
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except NotFound:
            return False
        return True

    def keys(self) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for item in page.get("Contents", []):
                key = self._key_of(item["Key"])
                if key is not None:
                    yield key

    # -- maintenance ----------------------------------------------------------------------------------

    def delete(self, key: str) -> None:
        with _translated():
            self.client.delete_object(Bucket=self.bucket, Key=self._name(key))

    def quarantine(self, key: str) -> None:
        """Copied under `.quarantine/` (outside the key space), then removed from it."""
        name = self._name(key)
        target = f"{self.prefix}{QUARANTINE}{key.replace('/', '_')}"
        with _translated():
            self.client.copy(  # managed copy: multipart for objects over 5 GB
                {"Bucket": self.bucket, "Key": name}, self.bucket, target
            )
            self.client.delete_object(Bucket=self.bucket, Key=name)

    def sweep_temporary(self) -> int:
        """Abort multipart uploads under our prefix started more than `stale_after` seconds ago."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=self.stale_after)
        count = 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] <= cutoff:
                    self._abort(upload["Key"], upload["UploadId"])
                    count += 1
        return count

    def free_bytes(self) -> int | None:
        return None

    def prepare(self) -> None:
        """Create the bucket if it does not exist (a fresh deployment); where the credentials may not
        create buckets, an administrator makes it and this only checks it is there."""
        try:
            with _translated():
                self.client.head_bucket(Bucket=self.bucket)
        except NotFound:
            with contextlib.suppress(ClientError):  # created meanwhile by another process
                self.client.create_bucket(Bucket=self.bucket)

    def check_writable(self) -> None:
        name = f"{self.prefix}{PROBE}{threading.get_ident()}"
        with _translated():
            self.client.put_object(Bucket=self.bucket, Key=name, Body=b"probe", ContentMD5=_md5(b"probe"))
            self.client.delete_object(Bucket=self.bucket, Key=name)


class _PreconditionFailed(Exception):
    pass


class _InvalidRange(Exception):
    pass


class _translated:
    """Client errors as the protocol's: NotFound, OutOfResources; 412 and 416 for the callers here."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if not isinstance(exc, ClientError):
            return
        code = _code(exc)
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in MISSING or status == "404":
            raise NotFound("object not in storage") from None
        if code in FULL:
            raise OutOfResources("object storage refused the write: full") from None
        if code == "PreconditionFailed" or status == "412":
            raise _PreconditionFailed from None
        if code == "InvalidRange" or status == "416":
            raise _InvalidRange from None


def _body_chunks(body: Any) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(STREAM_CHUNK)
    finally:
        body.close()


class _RangeReader(io.RawIOBase):
    """A seekable raw file over an object: each read is a ranged GET (BufferedReader batches them)."""

    def __init__(self, store: S3Store, key: str, size: int) -> None:
        self.store = store
        self.key = key
        self.length = size
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
        data = self.store.read_range(self.key, self.position, want)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)
