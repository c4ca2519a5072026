"""Bad input over C-STORE gets the precise status, nothing half-written stays, the gateway keeps serving:
malformed and truncated data sets, missing or mismatched UIDs, unsupported SOP classes, a full disk.
Also: no PHI value ever reaches the log. Clients: pynetdicom (raw bytes, so broken data reaches the wire)."""

from __future__ import annotations

import logging
import subprocess
import uuid
from pathlib import Path
from types import SimpleNamespace

from pydicom import dcmread
from pydicom.uid import MRImageStorage, generate_uid
from pynetdicom import AE
from sqlalchemy import func, select

from imaging.dimse.store_scp import handle_store
from imaging.index.schema import Instance
from imaging.maintenance import fsck
from imaging.synthetic import SyntheticStudy, ct_slice, synthetic_patient
from tests.archive_fixtures import (
    ARCHIVE_AE,
    CLIENT_AE,
    dataset_bytes,
    echo,
    part10,
    send_raw,
    write_synthetic_study,
)

CANNOT_UNDERSTAND = range(0xC000, 0xD000)


def _count(archive) -> int:
    with archive.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Instance)) or 0)


def _slice(rows: int = 64, **attrs: object):
    ds = ct_slice(SyntheticStudy(patient=synthetic_patient(7)), generate_uid(), 1, 0, rows=rows, columns=rows)
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def test_bad_data_sets_get_precise_statuses_and_server_keeps_serving(make_archive, start_gateway, tmp_path):
    archive = make_archive()
    port = start_gateway(archive)
    good = write_synthetic_study(tmp_path / "good", series=1, per_series=2)
    assert send_raw(port, good) == [0, 0]

    # Garbage after a valid file meta.
    garbage_ds = _slice()
    garbage = part10(garbage_ds, tmp_path / "garbage.dcm")
    raw = garbage.read_bytes()
    meta_end = 132 + 12 + int.from_bytes(raw[140:144], "little")
    garbage.write_bytes(raw[:meta_end] + b"\x08\x00\x16\x00UI\xff\x7f" + b"\xa5" * 300)
    # Cut in the middle of Pixel Data.
    truncated = part10(_slice(), tmp_path / "truncated.dcm")
    truncated.write_bytes(truncated.read_bytes()[:-3000])
    # No SOP Instance UID in the data set (the request carries one from the file meta).
    no_uid_ds = _slice()
    uid = no_uid_ds.SOPInstanceUID
    del no_uid_ds.SOPInstanceUID
    no_uid = part10(no_uid_ds, tmp_path / "no_uid.dcm", sop_instance=uid)
    # Data set says MR, request says CT.
    mismatch = part10(
        _slice(SOPClassUID=MRImageStorage), tmp_path / "mismatch.dcm", sop_class="1.2.840.10008.5.1.4.1.1.2"
    )
    # A date the index cannot hold: stored as received, not indexed -> warning 0xB000 (coercion).
    coerced = part10(_slice(StudyDate="2024-03-15"), tmp_path / "coerced.dcm")

    statuses = send_raw(port, [garbage, truncated, no_uid, mismatch, coerced])
    assert statuses[0] in CANNOT_UNDERSTAND
    assert statuses[1] in CANNOT_UNDERSTAND
    assert statuses[2] == 0xA900
    assert statuses[3] == 0xA900
    assert statuses[4] == 0xB000

    assert echo(port)  # still serving
    assert _count(archive) == 3  # the two good ones and the coerced one, nothing else
    for f in good:
        with archive.db.read() as s:
            row = s.scalars(
                select(Instance).where(Instance.SOPInstanceUID == dcmread(f).SOPInstanceUID)
            ).one()
        assert dataset_bytes(archive.store.read(row.object_key)) == dataset_bytes(f.read_bytes())
    report = fsck(archive)
    assert report.clean, report
    assert not list(archive.store.root.rglob(".tmp-*"))


def test_unsupported_sop_class(make_archive, start_gateway):
    archive = make_archive()
    port = start_gateway(archive)
    # At association: a class the gateway does not support is not accepted.
    ae = AE(ae_title=CLIENT_AE)
    ae.add_requested_context("1.2.826.0.1.3680043.9.9999.1")  # private, not configured
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)
    assert assoc.is_established
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    assoc.release()
    assert "1.2.826.0.1.3680043.9.9999.1" not in accepted
    # In the handler: a non-storage class in a C-STORE request -> 0x0122.
    event = SimpleNamespace(
        request=SimpleNamespace(AffectedSOPClassUID="1.2.840.10008.5.1.4.1.2.2.1"),
        assoc=SimpleNamespace(requestor=SimpleNamespace(ae_title=CLIENT_AE)),
    )
    assert handle_store(event, archive) == 0x0122  # type: ignore[arg-type]


def _tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        ).returncode
        == 0
    )


def test_full_disk_answers_out_of_resources(make_archive, start_gateway, tmp_path):
    """A tmpfs of 8 MiB fills up (512x512 CT, ~0.5 MB each): 0xA700, no partial object, data intact.
    Without permission to mount, a min_free_bytes above the free space stands in for a full disk."""
    mount = tmp_path / "small"
    mounted = _tmpfs(mount, "8m")
    try:
        archive = (
            make_archive(mount / "data", min_free_bytes=0)
            if mounted
            else make_archive(min_free_bytes=1 << 62)
        )
        port = start_gateway(archive)
        files = write_synthetic_study(tmp_path / "big", series=1, per_series=20, rows=512)
        statuses = send_raw(port, files)
        print("tmpfs" if mounted else "min_free_bytes", [hex(x) for x in statuses])
        assert 0xA700 in statuses, statuses
        assert set(statuses) <= {0, 0xA700}, statuses
        ok = [f for f, st in zip(files, statuses, strict=True) if st == 0]
        if mounted:
            assert ok, "some instances fit before the disk was full"
        assert echo(port)
        assert _count(archive) == len(ok)
        for f in ok:
            with archive.db.read() as s:
                row = s.scalars(
                    select(Instance).where(Instance.SOPInstanceUID == dcmread(f).SOPInstanceUID)
                ).one()
            assert dataset_bytes(archive.store.read(row.object_key)) == dataset_bytes(f.read_bytes())
        assert not list(archive.store.root.rglob(".tmp-*"))
        assert fsck(archive).clean
        archive.close()
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def test_no_phi_in_logs(make_archive, start_gateway, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    archive = make_archive()
    port = start_gateway(archive)
    name, pid = f"PHITEST{uuid.uuid4().hex[:6].upper()}^SECRET", f"PID{uuid.uuid4().hex[:8]}"
    ds = _slice(PatientName=name, PatientID=pid)
    good = part10(ds, tmp_path / "phi.dcm")
    broken = part10(_slice(PatientName=name, PatientID=pid), tmp_path / "broken.dcm")
    broken.write_bytes(broken.read_bytes()[:-100])
    duplicate = part10(
        _slice(
            PatientName=name,
            PatientID=pid,
            SOPInstanceUID=ds.SOPInstanceUID,
            SeriesInstanceUID=ds.SeriesInstanceUID,
            StudyInstanceUID=ds.StudyInstanceUID,
        ),
        tmp_path / "conflict.dcm",
        sop_instance=ds.SOPInstanceUID,
    )
    assert send_raw(port, [good, broken, duplicate])[0] == 0

    from pydicom.dataset import Dataset
    from pynetdicom.sop_class import (
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
    )

    ae = AE(ae_title=CLIENT_AE)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientName = name
    query.PatientID = pid
    query.StudyInstanceUID = ""
    answers = [i for st, i in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind) if i]
    bad = Dataset()
    bad.QueryRetrieveLevel = "STUDY"
    bad.PatientID = pid
    bad.StudyDate = "notadate-x"
    list(assoc.send_c_find(bad, StudyRootQueryRetrieveInformationModelFind))
    move = Dataset()
    move.QueryRetrieveLevel = "STUDY"
    move.PatientID = pid
    move.StudyInstanceUID = ds.StudyInstanceUID
    list(assoc.send_c_move(move, "NOWHERE", StudyRootQueryRetrieveInformationModelMove))
    assoc.release()
    assert answers and str(answers[0].PatientName) == name

    text = caplog.text
    assert text  # the gateway did log something about the failures
    for secret in (name, name.split("^")[0], pid):
        assert secret not in text
