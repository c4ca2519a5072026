"""Retrieve that never strands an object: dcmtk's getscu and movescu with their default proposals (uncompressed
syntaxes only) get every object of every transfer syntax the DIMSE tests use, transcoded where the stored
syntax was not accepted; Orthanc as a C-MOVE destination takes every object as stored; a pynetdicom SCU that
accepts only big endian, or only a lossless compressed syntax, gets those. The one object no installed decoder
reads is the only failure, counted as such (Warning, Failed SOP Instance UID List), and the others go on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRBigEndian, JPEG2000Lossless, RLELossless
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as StudyGet
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as StudyMove
from sqlalchemy import select

from imaging.archive import Archive
from imaging.config import RemoteAE
from imaging.index.schema import Instance
from tests.archive_fixtures import (
    ARCHIVE_AE,
    CLIENT_AE,
    dataset_bytes,
    free_port,
    quiet,
    require_program,
    run,
    send_raw,
    storescp,
)
from tests.dimse.retrieve_data import UNDECODABLE, pixels, retrieve_objects, segmentation_big_endian, uid_of
from tests.sharing.conftest import ORTHANC_PASSWORD, ORTHANC_USER, OrthancServer

pytestmark = pytest.mark.dcmtk


@pytest.fixture
def stored(make_archive: Callable[..., Archive], start_gateway: Callable[[Archive], int], tmp_path: Path):
    dest_port = free_port()
    orthanc = OrthancServer(tmp_path / "orthanc")
    archive = make_archive(
        remote_aes=[
            RemoteAE(ae_title="DEST", host="127.0.0.1", port=dest_port),
            RemoteAE(ae_title="ORTHANC", host="127.0.0.1", port=orthanc.dicom_port),
        ]
    )
    port = start_gateway(archive)
    files = retrieve_objects(tmp_path / "src")
    assert send_raw(port, files) == [0] * len(files)
    return archive, port, dest_port, orthanc, files


def _study_list(files: list[Path]) -> str:
    return "\\".join(sorted({str(dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}))


def _check_received(files: list[Path], folder: Path, *, expect_missing: set[str]) -> None:
    received = {uid_of(p): p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".log")}
    sent = {uid_of(f): f for f in files}
    assert set(received) == set(sent) - expect_missing
    for uid, path in received.items():
        with quiet():
            original, got = dcmread(sent[uid]), dcmread(path)
        assert got.SOPClassUID == original.SOPClassUID
        expected, actual = pixels(original), pixels(got)
        assert (expected is None) == (actual is None)
        if expected is not None:
            assert np.array_equal(actual, expected), path.name  # decoded, then re-encoded losslessly


def _undecodable(files: list[Path]) -> str:
    return next(uid_of(f) for f in files if f.name.endswith(UNDECODABLE))


def test_getscu_default_proposal_gets_every_object(stored, tmp_path: Path) -> None:
    _archive, port, _, _, files = stored
    getscu = require_program("/usr/bin/getscu")
    out = tmp_path / "got"
    out.mkdir()
    result = run(
        [
            getscu,
            "-v",
            "-S",
            "-aet",
            CLIENT_AE,
            "-aec",
            ARCHIVE_AE,
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={_study_list(files)}",
            "127.0.0.1",
            str(port),
        ]
    )
    log = result.stdout + result.stderr
    _check_received(files, out, expect_missing={_undecodable(files)})
    assert "Warning: SubOperationsCompleteOneOrMoreFailures" in log, log
    assert f"Number of Completed Suboperations : {len(files) - 1}" in log, log
    assert "Number of Failed Suboperations    : 1" in log, log

    # Without the undecodable object: Success, and a clean release.
    clean = [f for f in files if not f.name.endswith(UNDECODABLE)]
    out2 = tmp_path / "got2"
    out2.mkdir()
    result = run(
        [
            getscu,
            "-v",
            "-S",
            "-aet",
            CLIENT_AE,
            "-aec",
            ARCHIVE_AE,
            "-od",
            str(out2),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={_study_list(clean)}",
            "127.0.0.1",
            str(port),
        ]
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    _check_received(clean, out2, expect_missing=set())
    assert "Release Failed" not in log and "Aborting" not in log, log
    assert f"Number of Completed Suboperations : {len(clean)}" in log, log


def test_movescu_default_proposal_to_an_uncompressed_only_storescp(stored, tmp_path: Path) -> None:
    _archive, port, dest_port, _, files = stored
    out = tmp_path / "moved"
    with storescp(out, ae_title="DEST", port=dest_port, accept_all=False):
        result = run(
            [
                require_program("/usr/bin/movescu"),
                "-v",
                "-S",
                "-aet",
                CLIENT_AE,
                "-aec",
                ARCHIVE_AE,
                "-aem",
                "DEST",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                f"StudyInstanceUID={_study_list(files)}",
                "127.0.0.1",
                str(port),
            ]
        )
    log = result.stdout + result.stderr
    _check_received(files, out, expect_missing={_undecodable(files)})
    assert "Warning" in log and "Release Failed" not in log, log


def test_orthanc_as_move_destination_takes_every_object_as_stored(stored) -> None:
    _archive, port, _, orthanc, files = stored
    orthanc.start()
    try:
        ae = AE(ae_title=CLIENT_AE)
        ae.add_requested_context(StudyMove)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = _study_list(files).split("\\")
        assoc = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)
        try:
            final = [status for status, _ in assoc.send_c_move(query, "ORTHANC", StudyMove)][-1]
        finally:
            assoc.release()
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == len(files)
        auth = (ORTHANC_USER, ORTHANC_PASSWORD)
        syntaxes = {}
        for instance in httpx.get(f"{orthanc.url}/instances", auth=auth, params={"expand": 1}).json():
            uid = instance["MainDicomTags"]["SOPInstanceUID"]
            meta = httpx.get(f"{orthanc.url}/instances/{instance['ID']}/metadata/TransferSyntax", auth=auth)
            syntaxes[uid] = meta.text
        stored_syntax = {
            uid_of(f): str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID) for f in files
        }
        assert syntaxes == stored_syntax  # every object, each in its stored syntax (no transcoding needed)
    finally:
        orthanc.stop()


@pytest.mark.parametrize("only", [ExplicitVRBigEndian, JPEG2000Lossless, RLELossless])
def test_pynetdicom_get_with_a_single_accepted_syntax(stored, only: str) -> None:
    _archive, port, _, _, files = stored
    received: dict[str, Dataset] = {}

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    ae = AE(ae_title=CLIENT_AE)
    ae.add_requested_context(StudyGet)
    classes = sorted({str(dcmread(f, stop_before_pixels=True).SOPClassUID) for f in files})
    for sop_class in classes:
        ae.add_requested_context(sop_class, [only])
    roles = [build_role(sop_class, scp_role=True) for sop_class in classes]
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = _study_list(files).split("\\")
    assoc = ae.associate(
        "127.0.0.1", port, ae_title=ARCHIVE_AE, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    try:
        responses = list(assoc.send_c_get(query, StudyGet))
    finally:
        assoc.release()
    final, identifier = responses[-1]
    with quiet():
        originals = {uid_of(f): dcmread(f) for f in files}
    for uid, ds in received.items():
        assert ds.file_meta.TransferSyntaxUID == only
        expected = pixels(originals[uid])
        if expected is not None:
            assert np.array_equal(pixels(ds), expected)
    listed = identifier.FailedSOPInstanceUIDList if identifier is not None else []
    failed = {listed} if isinstance(listed, str) else set(listed)
    assert set(received) | failed == set(originals) and not set(received) & failed
    assert _undecodable(files) in failed
    if only == ExplicitVRBigEndian:
        assert len(failed) == 1  # every decodable object can go out big endian
    assert final.Status == 0xB000 and final.NumberOfFailedSuboperations == len(failed)


def test_storescu_big_endian_segmentation_is_accepted(
    make_archive: Callable[..., Archive], start_gateway: Callable[[Archive], int], tmp_path: Path
) -> None:
    """`storescu -xb` (big endian preferred) of a SEG stored big endian: accepted and stored as sent. dcmtk's
    storescu proposes, by default, a fixed list of SOP classes without Segmentation (it fails before
    asking); `-R` proposes the classes of the files given, as a modality does."""
    archive = make_archive()
    port = start_gateway(archive)
    seg = segmentation_big_endian(tmp_path / "seg.dcm")
    result = run(
        [
            require_program("/usr/bin/storescu"),
            "-v",
            "-R",
            "-xb",
            "-aet",
            CLIENT_AE,
            "-aec",
            ARCHIVE_AE,
            "127.0.0.1",
            str(port),
            str(seg),
        ]
    )
    assert "Received Store Response (Success)" in result.stdout + result.stderr, result.stdout + result.stderr
    with archive.db.read() as s:
        row = s.scalar(select(Instance).where(Instance.SOPInstanceUID == uid_of(seg)))
    assert row is not None and row.TransferSyntaxUID == ExplicitVRBigEndian
    assert dataset_bytes(archive.store.read(row.object_key)) == dataset_bytes(seg.read_bytes())
