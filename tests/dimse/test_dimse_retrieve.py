"""C-MOVE to a dcmtk storescp named in configuration, and C-GET with dcmtk's getscu: every selected
instance is delivered, byte for byte as stored (storescp +B writes exactly the bytes received)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import select

from imaging.config import RemoteAE
from imaging.index.schema import Instance
from tests.archive_fixtures import (
    ARCHIVE_AE,
    CLIENT_AE,
    EXTRA_FILES,
    TRANSFER_SYNTAX_FILES,
    dataset_bytes,
    free_port,
    require_program,
    run,
    send_raw,
    storescp,
    unique_copy,
    write_synthetic_study,
)

pytestmark = pytest.mark.dcmtk


def _stored(archive) -> dict[str, bytes]:
    """SOP Instance UID -> stored data set bytes."""
    with archive.db.read() as s:
        rows = s.scalars(select(Instance)).all()
    return {r.SOPInstanceUID: dataset_bytes(archive.store.read(r.object_key)) for r in rows}


def _received(folder: Path) -> dict[str, bytes]:
    return {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): dataset_bytes(p.read_bytes())
        for p in folder.iterdir()
        if p.is_file()
    }


@pytest.fixture
def filled(make_archive, start_gateway, tmp_path):
    dest_port = free_port()
    archive = make_archive(remote_aes=[RemoteAE(ae_title="DEST", host="127.0.0.1", port=dest_port)])
    port = start_gateway(archive)
    names = [n for n in [*TRANSFER_SYNTAX_FILES.values(), *EXTRA_FILES] if n != "rtplan.dcm"]
    files = [unique_copy(n, tmp_path / "src" / f"{i}_{n}", i) for i, n in enumerate(names)]
    study = write_synthetic_study(tmp_path / "study", series=2, per_series=3)
    assert set(send_raw(port, files + study)) == {0}
    return archive, port, dest_port, study


def test_move_study_list_to_storescp(filled, tmp_path):
    archive, port, dest_port, _ = filled
    stored = _stored(archive)
    with archive.db.read() as s:
        studies = sorted(set(s.scalars(select(Instance.series_pk)).all()))
    from imaging.index.schema import Series, Study

    with archive.db.read() as s:
        study_uids = sorted(set(s.scalars(select(Study.StudyInstanceUID)).all()))
    assert studies and len(study_uids) >= 5
    out = tmp_path / "moved"
    with storescp(out, ae_title="DEST", port=dest_port):
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
                "StudyInstanceUID=" + "\\".join(study_uids),
                "127.0.0.1",
                str(port),
            ]
        )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    received = _received(out)
    assert received.keys() == stored.keys(), log
    for uid, body in stored.items():
        assert received[uid] == body, uid  # byte for byte as stored, every transfer syntax
    assert (
        "Completed Suboperations     : " + str(len(stored)) in log
        or f"Completed Suboperations : {len(stored)}" in log
        or len(received) == len(stored)
    )
    del Series


def test_move_series_and_unknown_destination(filled, tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as StudyMove

    _archive, port, dest_port, study = filled
    first = dcmread(study[0], stop_before_pixels=True)
    ae = AE(ae_title=CLIENT_AE)
    ae.add_requested_context(StudyMove)
    q = Dataset()
    q.QueryRetrieveLevel = "SERIES"
    q.StudyInstanceUID = first.StudyInstanceUID
    q.SeriesInstanceUID = first.SeriesInstanceUID
    out = tmp_path / "series"
    with storescp(out, ae_title="DEST", port=dest_port):
        assoc = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)
        try:
            final = [st for st, _ in assoc.send_c_move(q, "DEST", StudyMove)][-1]
            unknown = [st for st, _ in assoc.send_c_move(q, "NOWHERE", StudyMove)][-1]
            no_key = Dataset()
            no_key.QueryRetrieveLevel = "STUDY"
            refused = [st for st, _ in assoc.send_c_move(no_key, "DEST", StudyMove)][-1]
        finally:
            assoc.release()
    assert final.Status == 0 and final.NumberOfCompletedSuboperations == 3
    assert len(list(out.iterdir())) == 3
    assert unknown.Status == 0xA801  # Move Destination unknown
    assert refused.Status == 0xA900  # no unique key


def test_get_with_getscu(filled, tmp_path):
    archive, port, _, study = filled
    stored = _stored(archive)
    first = dcmread(study[0], stop_before_pixels=True)
    out = tmp_path / "got"
    out.mkdir()
    result = run(
        [
            require_program("/usr/bin/getscu"),
            "-v",
            "-S",
            "-aet",
            CLIENT_AE,
            "-aec",
            ARCHIVE_AE,
            "+xe",
            "-od",
            str(out),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={first.StudyInstanceUID}",
            "127.0.0.1",
            str(port),
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    received = _received(out)
    assert len(received) == 6
    for uid, body in received.items():
        assert body == stored[uid]
