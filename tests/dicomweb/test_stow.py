"""STOW-RS: dicomweb-client and raw HTTP; response semantics; bad input leaves nothing half-stored."""

from __future__ import annotations

import tracemalloc
from io import BytesIO

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from dicomweb.multipart import MultipartParser
from imaging.index.schema import Instance
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.dicomweb.conftest import Seeded, encode
from tests.dicomweb.multipart_util import split


def study(n: int = 3, patient: int = 70, rows: int = 16, **kw) -> list[Dataset]:
    st = SyntheticStudy(patient=synthetic_patient(patient), **kw)
    return list(ct_series(st, n, rows=rows, columns=rows))


def body(parts: list[bytes], boundary: str = "b0undary") -> bytes:
    out = b""
    for p in parts:
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def count(seeded: Seeded) -> int:
    with seeded.archive.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Instance)) or 0)


def test_store_with_dicomweb_client_then_retrieve_byte_identical(fresh) -> None:
    s = fresh()
    datasets = study(3)
    result = s.dicomweb_client().store_instances(datasets)
    assert len(result.ReferencedSOPSequence) == 3
    assert "FailedSOPSequence" not in result
    item = result.ReferencedSOPSequence[0]
    assert item.RetrieveURL.endswith(f"/instances/{item.ReferencedSOPInstanceUID}")
    assert result.RetrieveURL.endswith(f"/studies/{datasets[0].StudyInstanceUID}")
    # What dicomweb-client sent (pydicom.dcmwrite) comes back byte-identical with transfer-syntax=*.
    for ds in datasets:
        sent = BytesIO()
        import pydicom

        pydicom.dcmwrite(sent, ds)
        with s.client() as c:
            r = c.get(
                f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}",
                headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            )
        # dcmwrite leaves out the preamble; the archive stores the Part 10 file format (preamble + DICM).
        assert split(r)[0][1] == b"\x00" * 128 + b"DICM" + sent.getvalue()


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"; boundary="b0undary"',
        "multipart/related; type=application/dicom; boundary=b0undary",
        "Multipart/Related; boundary=b0undary; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1",
    ],
)
def test_quoted_and_unquoted_parameters(fresh, content_type: str) -> None:
    s = fresh()
    with s.client() as c:
        r = c.post(
            "/studies", content=body([encode(d) for d in study(2)]), headers={"Content-Type": content_type}
        )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom+json"
    assert count(s) == 2


def test_chunked_body_and_large_upload_streams(fresh) -> None:
    s = fresh()
    datasets = study(40, rows=128)  # ~1.3 MB
    payload = body([encode(d) for d in datasets])

    def chunks():
        for i in range(0, len(payload), 7000):
            yield payload[i : i + 7000]

    with s.client() as c:
        r = c.post(
            "/studies",
            content=chunks(),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'},
        )
    assert r.status_code == 200
    assert count(s) == 40


def test_parser_memory_does_not_grow_with_upload_size(tmp_path) -> None:
    part = b"\x01" * (1024 * 1024)
    boundary = "xyz"
    tracemalloc.start()
    try:
        parser = MultipartParser(boundary, spool_dir=str(tmp_path))
        for _ in range(64):  # 64 MiB through the parser, 64 KiB at a time
            parser.feed(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            for i in range(0, len(part), 65536):
                parser.feed(part[i : i + 65536])
            parser.feed(b"\r\n")
        parser.feed(f"--{boundary}--\r\n".encode())
        parts = parser.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(parts) == 64 and all(p.size == len(part) for p in parts)
    assert parts[5].read() == part
    assert peak < 4 * 1024 * 1024  # payloads beyond the first MiB are on disk
    parser.close()


def test_study_scoped_store_mismatch_and_partial_success(fresh) -> None:
    s = fresh()
    mine, other = study(2, patient=71), study(1, patient=72)
    target = mine[0].StudyInstanceUID
    ct = 'multipart/related; type="application/dicom"; boundary=b0undary'
    with s.client() as c:
        r = c.post(
            f"/studies/{target}",
            content=body([encode(mine[0]), encode(other[0])]),
            headers={"Content-Type": ct},
        )
        assert r.status_code == 202
        result = Dataset.from_json(r.json())
        assert [i.ReferencedSOPInstanceUID for i in result.ReferencedSOPSequence] == [mine[0].SOPInstanceUID]
        (failed,) = result.FailedSOPSequence
        assert failed.ReferencedSOPInstanceUID == other[0].SOPInstanceUID and failed.FailureReason == 0xA900
        r = c.post(f"/studies/{target}", content=body([encode(other[0])]), headers={"Content-Type": ct})
        assert r.status_code == 409
        assert Dataset.from_json(r.json()).FailedSOPSequence[0].FailureReason == 0xA900
        # Garbage and a conflicting object under a stored SOP Instance UID.
        clash = mine[0].copy()
        clash.PatientName = "CHANGED^NAME"
        r = c.post(
            "/studies",
            content=body([b"not dicom at all", encode(clash), encode(mine[1])]),
            headers={"Content-Type": ct},
        )
        assert r.status_code == 202
        result = Dataset.from_json(r.json())
        assert sorted(f.FailureReason for f in result.FailedSOPSequence) == [0xA900, 0xC000]
        assert len(result.ReferencedSOPSequence) == 1
    assert count(s) == 2


def test_warning_reason_for_coerced_instances(fresh) -> None:
    s = fresh()
    (ds,) = study(1, patient=73)
    ds.StudyDate = "2024-03-15"  # not a DA value: stored, but not indexed
    with s.client() as c:
        r = c.post(
            "/studies",
            content=body([encode(ds)]),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'},
        )
    assert r.status_code == 202
    assert Dataset.from_json(r.json()).ReferencedSOPSequence[0].WarningReason == 0xB006


@pytest.mark.parametrize(
    ("content_type", "payload", "status"),
    [
        ("multipart/related; type=application/dicom", None, 400),  # missing boundary
        ("multipart/related; boundary=b0undary", None, 400),  # missing type
        ("application/json", None, 415),
        ('multipart/related; type="application/dicom+xml"; boundary=b0undary', None, 415),
        ("text/plain", None, 415),
        ('multipart/related; type="application/dicom"; boundary=b0undary', "truncated", 400),
        ('multipart/related; type="application/dicom"; boundary=b0undary', "no-parts", 400),
        ('multipart/related; type="application/dicom"; boundary=b0undary', "wrong-boundary", 400),
        ('multipart/related; type="application/dicom"; boundary=b0undary', "bad-headers", 400),
    ],
)
def test_bad_requests_store_nothing(fresh, content_type: str, payload: str | None, status: int) -> None:
    s = fresh()
    good = body([encode(d) for d in study(2, patient=74)])
    data = {
        None: good,
        "truncated": good[: len(good) // 2],
        "no-parts": b"--b0undary--\r\n",
        "wrong-boundary": good.replace(b"b0undary", b"other"),
        "bad-headers": b"--b0undary\r\nthis is not a header\r\n\r\nxx\r\n--b0undary--\r\n",
    }[payload]
    with s.client() as c:
        r = c.post("/studies", content=data, headers={"Content-Type": content_type})
        assert r.status_code == status, r.text
        assert r.json()["detail"]
        assert c.get("/studies").status_code == 200
    assert count(s) == 0
    assert [p for p in s.archive.settings.objects_dir.rglob("*") if p.is_file()] == []


def test_oversized_bodies_are_413(fresh) -> None:
    s = fresh(max_upload_bytes=200_000)
    big = body([encode(d) for d in study(12, patient=75, rows=128)])
    assert len(big) > 200_000
    ct = 'multipart/related; type="application/dicom"; boundary=b0undary'
    with s.client() as c:
        r = c.post("/studies", content=big, headers={"Content-Type": ct})
        assert r.status_code == 413
        r = c.post(
            "/studies",
            content=iter([big[i : i + 50_000] for i in range(0, len(big), 50_000)]),
            headers={"Content-Type": ct},
        )  # chunked: no Content-Length
        assert r.status_code == 413
        assert c.get("/studies").status_code == 200
    assert count(s) == 0


def test_single_part_application_dicom(fresh) -> None:
    s = fresh()
    (ds,) = study(1, patient=76)
    with s.client() as c:
        r = c.post("/studies", content=encode(ds), headers={"Content-Type": "application/dicom"})
    assert r.status_code == 200 and count(s) == 1


def test_research_project_stow(seeded: Seeded) -> None:
    """A project's STOW root de-identifies on receive: only the de-identified copy is stored."""
    from imaging.ingest.partitions import Project
    from imaging.research.projects import create_project

    with seeded.archive.db.read() as session:
        exists = session.query(Project).filter_by(name="lung").count()
    if not exists:
        create_project(seeded.archive, "lung", key=bytes(32))
    (ds,) = study(1, patient=77)
    root = f"{seeded.server.url}/projects/lung/dicomweb"
    ct = 'multipart/related; type="application/dicom"; boundary=b0undary'
    r = httpx.post(
        f"{root}/studies",
        content=body([encode(ds)]),
        headers={"Content-Type": ct, "Authorization": f"Bearer {seeded.tokens['ingest']}"},
    )
    assert r.status_code == 200
    item = r.json()["00081199"]["Value"][0]
    assert "/projects/lung/dicomweb/studies/" in item["00081190"]["Value"][0]
    stored_uid = item["00081155"]["Value"][0]
    assert stored_uid.startswith("2.25.") and stored_uid != ds.SOPInstanceUID
    with seeded.archive.db.read() as session:
        for key in session.scalars(select(Instance.object_key).where(Instance.SOPInstanceUID == stored_uid)):
            assert ds.PatientID.encode() not in seeded.archive.store.read(key)
    r = httpx.post(
        f"{root}/studies",
        content=body([encode(ds)]),
        headers={"Content-Type": ct, "Authorization": f"Bearer {seeded.tokens['researcher']}"},
    )
    assert r.status_code == 403
    dcmread  # noqa: B018
    generate_uid  # noqa: B018
