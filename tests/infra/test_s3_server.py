"""Self-test of the radosgw S3 fixture with boto3: put, ranged get, multipart upload, list, delete, and
request signatures checked against the user's keys."""

from __future__ import annotations

import hashlib
import os

import botocore.exceptions
import pytest

from tests.infra.s3_server import CephS3Server, s3_server

pytestmark = pytest.mark.s3

__all__ = ["s3_server"]  # the fixture, imported for the tests below

PART_SIZE = 5 * 1024 * 1024  # S3's smallest part but the last


def test_put_ranged_get_list_delete(s3_server: CephS3Server) -> None:
    client = s3_server.client()
    bucket = s3_server.create_bucket()
    body = os.urandom(100_000)
    put = client.put_object(
        Bucket=bucket, Key="study/1.2.3/instance.dcm", Body=body, ContentType="application/dicom"
    )
    assert put["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    whole = client.get_object(Bucket=bucket, Key="study/1.2.3/instance.dcm")
    assert whole["Body"].read() == body and whole["ContentType"] == "application/dicom"
    ranged = client.get_object(Bucket=bucket, Key="study/1.2.3/instance.dcm", Range="bytes=128-131")
    assert ranged["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert ranged["ContentRange"] == f"bytes 128-131/{len(body)}"
    assert ranged["Body"].read() == body[128:132]
    client.put_object(Bucket=bucket, Key="study/1.2.4/instance.dcm", Body=b"second")
    listed = client.list_objects_v2(Bucket=bucket, Prefix="study/", Delimiter="/")
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["study/1.2.3/", "study/1.2.4/"]
    client.delete_object(Bucket=bucket, Key="study/1.2.3/instance.dcm")
    with pytest.raises(client.exceptions.NoSuchKey):
        client.get_object(Bucket=bucket, Key="study/1.2.3/instance.dcm")
    assert [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]] == [
        "study/1.2.4/instance.dcm"
    ]


def test_multipart_upload(s3_server: CephS3Server) -> None:
    client = s3_server.client()
    bucket = s3_server.create_bucket()
    parts_data = [os.urandom(PART_SIZE), os.urandom(PART_SIZE), os.urandom(1000)]
    upload = client.create_multipart_upload(Bucket=bucket, Key="archive.tar")
    parts = []
    for number, data in enumerate(parts_data, start=1):
        done = client.upload_part(
            Bucket=bucket, Key="archive.tar", UploadId=upload["UploadId"], PartNumber=number, Body=data
        )
        parts.append({"PartNumber": number, "ETag": done["ETag"]})
    listed = client.list_multipart_uploads(Bucket=bucket)
    assert [u["UploadId"] for u in listed["Uploads"]] == [upload["UploadId"]]
    complete = client.complete_multipart_upload(
        Bucket=bucket, Key="archive.tar", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    assert complete["Key"] == "archive.tar"
    joined = b"".join(parts_data)
    head = client.head_object(Bucket=bucket, Key="archive.tar")
    # A multipart ETag is the MD5 of the parts' MD5s, then "-" and the part count.
    digests = b"".join(hashlib.md5(d).digest() for d in parts_data)
    assert head["ETag"].strip('"') == f"{hashlib.md5(digests).hexdigest()}-3"
    assert head["ContentLength"] == len(joined)
    tail = client.get_object(
        Bucket=bucket, Key="archive.tar", Range=f"bytes={PART_SIZE - 10}-{PART_SIZE + 9}"
    )
    assert tail["Body"].read() == joined[PART_SIZE - 10 : PART_SIZE + 10]
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)


def test_aborted_multipart_upload_leaves_nothing(s3_server: CephS3Server) -> None:
    client = s3_server.client()
    bucket = s3_server.create_bucket()
    upload = client.create_multipart_upload(Bucket=bucket, Key="partial")
    client.upload_part(
        Bucket=bucket, Key="partial", UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 100
    )
    client.abort_multipart_upload(Bucket=bucket, Key="partial", UploadId=upload["UploadId"])
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)
    assert "Uploads" not in client.list_multipart_uploads(Bucket=bucket)


def test_requests_are_authenticated(s3_server: CephS3Server) -> None:
    bucket = s3_server.create_bucket()
    forged = s3_server.client(secret_key="not-the-secret")
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        forged.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert "Contents" not in s3_server.client().list_objects_v2(Bucket=bucket)
