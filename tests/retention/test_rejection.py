"""IOCM rejection notes: a Key Object Selection titled (113001, DCM, "Rejected for Quality Reasons") etc.,
received by C-STORE (dcmtk's storescu) or STOW-RS, hides the instances it lists from QIDO, WADO and C-FIND
at once, refuses later copies (0xA771), and leaves their objects until the title's delay has passed, when
the purge job deletes them. Notes that reference nothing stored, another class, or instances another note
rejected are refused; the same note again changes nothing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as StudyFind
from sqlalchemy import select

from imaging import audit
from imaging.index.rejection import (
    AlreadyRejected,
    ClassInstanceConflict,
    NoSuchInstance,
    Reference,
    RejectedInstance,
    RejectionTitle,
    SubsequentOccurrence,
    make_rejection_note,
)
from imaging.index.removal import PendingDeletion
from imaging.index.writer import Disposition
from imaging.maintenance import fsck, reindex
from imaging.retention.schedule import schedule_purge
from tests.archive_fixtures import ARCHIVE_AE, CLIENT_AE, DB_BACKENDS, require_program, run
from tests.retention.conftest import Site, instance_count, references, rejection_note, study_files


def _find_images(port: int, study: str) -> set[str]:
    ae = AE(ae_title=CLIENT_AE)
    ae.add_requested_context(StudyFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = study
    query.SOPInstanceUID = ""
    try:
        return {
            str(ds.SOPInstanceUID) for status, ds in assoc.send_c_find(query, StudyFind) if ds is not None
        }
    finally:
        assoc.release()


def encode_multipart(parts: list[bytes]) -> tuple[bytes, str]:
    boundary = "lifecycle-test-boundary"
    body = b"".join(
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n" for p in parts
    )
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def _write(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.dcmtk
def test_rejection_by_storescu_hides_at_once_refuses_copies_deletes_on_the_rule(
    site: Site, tmp_path: Path
) -> None:
    storescu = require_program("/usr/bin/storescu")
    files = study_files(tmp_path / "study")
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    sent = run(
        [storescu, "-aet", "MODALITY", "-aec", ARCHIVE_AE, "127.0.0.1", str(site.port), *map(str, files)]
    )
    assert sent.returncode == 0, sent.stderr
    rejected, kept = files[:2], files[2:]
    note = _write(rejection_note(rejected), tmp_path / "note.dcm")

    result = run(
        [storescu, "-v", "-aet", "MODALITY", "-aec", ARCHIVE_AE, "127.0.0.1", str(site.port), str(note)]
    )
    assert result.returncode == 0 and "Received Store Response (Success)" in result.stdout + result.stderr

    # hidden at once: QIDO, WADO, metadata, C-FIND
    with site.http() as http:
        listed = http.get(f"/dicomweb/studies/{study}/instances").json()
        assert {i["00080018"]["Value"][0] for i in listed} == {r.SOPInstanceUID for r in references(kept)}
        one = references(rejected)[0]
        wado = http.get(
            f"/dicomweb/studies/{study}/series/{one.SeriesInstanceUID}/instances/{one.SOPInstanceUID}"
        )
        assert wado.status_code == 404
        study_row = http.get("/dicomweb/studies", params={"StudyInstanceUID": study}).json()[0]
        assert study_row["00201208"]["Value"] == [len(kept)]  # NumberOfStudyRelatedInstances
    assert _find_images(site.port, study) == {r.SOPInstanceUID for r in references(kept)}

    # a later copy is refused with dcm4chee's "subsequent occurrence of a rejected object"
    again = run(
        [
            storescu,
            "-d",
            "-aet",
            "MODALITY",
            "-aec",
            ARCHIVE_AE,
            "127.0.0.1",
            str(site.port),
            str(rejected[0]),
        ]
    )
    assert "0xa771" in (again.stdout + again.stderr).lower(), again.stdout + again.stderr
    assert instance_count(site.archive, study=study) == len(kept)

    # audited; the objects wait for the title's delay (30 days by default), fsck knows them
    with site.archive.db.read() as s:
        records = audit.query(s, event=audit.AuditEvent.STUDY_DELETED, study_uid=study)
        waiting = list(s.scalars(select(PendingDeletion)))
    assert records and records[0].source == "rejected:113001" and records[0].user == "MODALITY"
    assert len(waiting) == len(rejected) + 1  # the instances and the note itself
    site.runner.tick()
    report = fsck(site.archive)
    assert report.clean and report.pending == len(rejected) + 1
    keys = set(site.archive.store.keys())
    assert {row.object_key for row in waiting} <= keys

    # the delay passes: the purge job deletes them
    site.archive.settings.rejection_delete_after_days["113001"] = 0
    site.archive.db.transaction(schedule_purge)
    site.drive(lambda: not set(site.archive.store.keys()) & {row.object_key for row in waiting})
    after = fsck(site.archive)
    assert after.clean and after.pending == 0 and after.checked == len(kept)
    # still refused after the deletion
    again = run(
        [
            storescu,
            "-d",
            "-aet",
            "MODALITY",
            "-aec",
            ARCHIVE_AE,
            "127.0.0.1",
            str(site.port),
            str(rejected[1]),
        ]
    )
    assert "0xa771" in (again.stdout + again.stderr).lower()


def test_rejection_by_stow_of_a_whole_study_removes_the_study(site: Site, tmp_path: Path) -> None:
    files = study_files(tmp_path / "study", series=1, per_series=3)
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    for f in files:
        site.archive.ingestor.ingest(f.read_bytes(), source="test")
    buffer = io.BytesIO()
    rejection_note(files, RejectionTitle.PATIENT_SAFETY).save_as(buffer, enforce_file_format=True)
    body, content_type = encode_multipart([buffer.getvalue()])
    with site.http() as http:
        stored = http.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
        assert stored.status_code == 200, stored.text
        assert http.get("/dicomweb/studies", params={"StudyInstanceUID": study}).json() == []
        assert http.get(f"/dicomweb/studies/{study}/metadata").status_code == 404
        # an administrator deletes the rejected study at once instead of waiting 30 days
        assert http.delete(f"/dicomweb/studies/{study}").status_code == 204
    assert list(site.archive.store.keys()) == []
    assert fsck(site.archive).clean


@pytest.mark.parametrize("db_url", DB_BACKENDS, indirect=True)
def test_refusals_and_a_note_sent_twice(db_url: str, site: Site, tmp_path: Path) -> None:
    archive = site.archive
    files = study_files(tmp_path / "study", series=1, per_series=3)
    for f in files:
        archive.ingestor.ingest(f.read_bytes(), source="test")
    refs = references(files)
    unknown = Reference(refs[0].StudyInstanceUID, refs[0].SeriesInstanceUID, refs[0].SOPClassUID, "1.2.3.4.5")
    with pytest.raises(NoSuchInstance) as info:
        archive.ingestor.ingest_dataset(make_rejection_note(RejectionTitle.QUALITY, [refs[0], unknown]))
    assert info.value.dimse_status == 0xA772 and instance_count(archive) == 3  # all or nothing
    wrong = Reference(
        refs[0].StudyInstanceUID,
        refs[0].SeriesInstanceUID,
        "1.2.840.10008.5.1.4.1.1.4",
        refs[0].SOPInstanceUID,
    )
    with pytest.raises(ClassInstanceConflict) as conflict:
        archive.ingestor.ingest_dataset(make_rejection_note(RejectionTitle.QUALITY, [wrong]))
    assert conflict.value.dimse_status == 0xA773

    note = make_rejection_note(RejectionTitle.WORKLIST, refs[:1])
    assert archive.ingestor.ingest_dataset(note).disposition == Disposition.REJECTION_NOTE
    assert archive.ingestor.ingest_dataset(note).disposition == Disposition.REJECTION_NOTE  # lost answer
    with pytest.raises(AlreadyRejected) as already:
        archive.ingestor.ingest_dataset(make_rejection_note(RejectionTitle.QUALITY, refs[:2]))
    assert already.value.dimse_status == 0xA774
    with pytest.raises(SubsequentOccurrence):
        archive.ingestor.ingest(files[0].read_bytes(), source="test")
    assert instance_count(archive) == 2
    with archive.db.read() as s:
        rows = s.scalars(select(RejectedInstance)).all()
    assert [(r.SOPInstanceUID, r.title, r.note_uid) for r in rows] == [
        (refs[0].SOPInstanceUID, "113038", str(note.SOPInstanceUID))
    ]

    # storage is the truth, and rejections survive a rebuild of the index from it
    report = reindex(archive)
    assert report.indexed == 2 and report.pending == 2 and not report.unreadable
    assert instance_count(archive) == 2 and fsck(archive).clean
