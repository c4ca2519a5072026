"""Fixtures for tests/storage (see tests/archive_fixtures.py), and the backends every storage test runs on:

* `store`: a fresh InstanceStore of each backend, the filesystem in a temp dir and S3 on a new bucket of the
  session's radosgw (tests/infra/s3_server.py: Ceph's RADOS Gateway on a one-node cluster on loopback);
* `backend_settings`: the Settings overrides that put an archive on the same backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from imaging.storage import FilesystemStore, InstanceStore, S3Store
from tests.archive_fixtures import *  # noqa: F403
from tests.infra.s3_server import CephS3Server, s3_server

__all__ = ["s3_server"]

BACKENDS = ["filesystem", pytest.param("s3", marks=pytest.mark.s3)]
SMALL_PART = 5 * 1024 * 1024


def s3_settings(server: CephS3Server, bucket: str) -> dict[str, Any]:
    return {
        "storage_backend": "s3",
        "s3_bucket": bucket,
        "s3_endpoint_url": server.endpoint_url,
        "s3_region": "us-east-1",
        "s3_access_key_id": server.access_key,
        "s3_secret_access_key": server.secret_key,
        "s3_addressing_style": "path",
        "s3_part_size": SMALL_PART,
    }


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "filesystem":
        return {}
    server: CephS3Server = request.getfixturevalue("s3_server")
    return s3_settings(server, server.create_bucket())


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> InstanceStore:
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "objects")
    server: CephS3Server = request.getfixturevalue("s3_server")
    settings = s3_settings(server, server.create_bucket())
    return S3Store.connect(
        settings["s3_bucket"],
        endpoint_url=server.endpoint_url,
        region="us-east-1",
        access_key_id=server.access_key,
        secret_access_key=server.secret_key,
        addressing_style="path",
        part_size=SMALL_PART,
    )
