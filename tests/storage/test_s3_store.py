"""What only the S3 backend has: multipart uploads a crash leaves behind (invisible, swept once stale),
conditional PUTs that never overwrite, refused credentials, and an object store that is full."""

from __future__ import annotations

import io
import os

import botocore.exceptions
import pytest

from imaging.errors import OutOfResources
from imaging.storage import S3Store
from tests.infra.s3_server import CephS3Server
from tests.storage.conftest import SMALL_PART

pytestmark = pytest.mark.s3


def _store(server: CephS3Server, bucket: str, **options: object) -> S3Store:
    return S3Store.connect(
        bucket,
        endpoint_url=server.endpoint_url,
        region="us-east-1",
        access_key_id=server.access_key,
        secret_access_key=str(options.pop("secret", server.secret_key)),
        addressing_style="path",
        part_size=SMALL_PART,
        **options,  # type: ignore[arg-type]
    )


def test_crashed_multipart_upload_is_invisible_and_swept_once_stale(s3_server: CephS3Server) -> None:
    bucket = s3_server.create_bucket()
    store = _store(s3_server, bucket)
    staged = store.stage(io.BytesIO(os.urandom(SMALL_PART + 10)), "clinical")  # then "the process dies"
    client = s3_server.client()
    assert [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [staged.key]
    assert list(store.keys()) == [] and not store.exists(staged.key)
    assert store.sweep_temporary() == 0  # young: another archive process may still be writing it
    assert _store(s3_server, bucket, stale_after=0).sweep_temporary() == 1
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)


def test_conditional_put_never_overwrites(s3_server: CephS3Server) -> None:
    bucket = s3_server.create_bucket()
    store = _store(s3_server, bucket, prefix="archive/")
    obj = store.put(b"first", "clinical")
    # Someone replaced the bytes under the key (corruption): a re-send does not hide it, fsck finds it.
    s3_server.client().put_object(Bucket=bucket, Key="archive/" + obj.key, Body=b"other")
    assert not store.put(b"first", "clinical").created
    assert store.read(obj.key) == b"other"
    names = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert names == ["archive/" + obj.key]  # under the prefix


def test_wrong_credentials_are_refused(s3_server: CephS3Server) -> None:
    bucket = s3_server.create_bucket()
    store = _store(s3_server, bucket, secret="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError):
        store.put(b"x", "clinical")
    with pytest.raises(botocore.exceptions.ClientError):
        store.check_writable()


def test_quota_exceeded_is_out_of_resources(s3_server: CephS3Server) -> None:
    """radosgw's user quota stands in for a full object store: the refusal is OutOfResources (C-STORE
    0xA700, STOW 507), not a generic failure."""
    import subprocess

    from tests.infra.s3_server import RADOSGW_ADMIN

    bucket = s3_server.create_bucket()
    store = _store(s3_server, bucket)
    assert s3_server.root is not None
    conf = str(s3_server.root / "ceph.conf")

    def admin(*args: str) -> None:
        subprocess.run(
            [RADOSGW_ADMIN, "-c", conf, "-n", "client.admin", *args], check=True, capture_output=True
        )

    admin("quota", "set", "--quota-scope=bucket", f"--bucket={bucket}", "--max-objects=1")
    admin("quota", "enable", "--quota-scope=bucket", f"--bucket={bucket}")
    try:
        store.put(b"one", "clinical")
        with pytest.raises(OutOfResources):
            store.put(b"two", "clinical")
    finally:
        admin("quota", "disable", "--quota-scope=bucket", f"--bucket={bucket}")
