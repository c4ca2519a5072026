"""Storage Commitment Push Model SCP (PS3.4 Annex J) with a pynetdicom requester: the report on the same
association (requester took the SCP role) and on a new one (to the requester's configured AE); a mix of
present, absent, conflicting, unsupported, rejected and corrupt instances, each reported with its reason;
a duplicate transaction UID; malformed requests refused with 0x0115."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel
from sqlalchemy import select

from imaging.archive import Archive
from imaging.config import RemoteAE
from imaging.dimse.commitment_scp import WELL_KNOWN_INSTANCE
from imaging.index.rejection import Reference, RejectionTitle, make_rejection_note
from imaging.index.schema import Instance
from tests.archive_fixtures import ARCHIVE_AE, free_port, send_raw, write_synthetic_study

MODALITY = "MODALITY"
CT, MR = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"


class Reports:
    """N-EVENT-REPORTs received by the requester (on its association or on its own listener)."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()

    def handler(self, event: evt.Event) -> tuple[int, None]:
        self.received.append((int(event.event_type), event.event_information))
        self.arrived.set()
        return 0x0000, None

    def wait(self, timeout: float = 20.0) -> tuple[int, Dataset]:
        assert self.arrived.wait(timeout), "no N-EVENT-REPORT arrived"
        return self.received[-1]


@pytest.fixture
def site(make_archive: Callable[..., Archive], start_gateway: Callable[[Archive], int], tmp_path: Path):
    listener_port = free_port()
    archive = make_archive(
        remote_aes=[RemoteAE(ae_title=MODALITY, host="127.0.0.1", port=listener_port)],
        commitment_report_retry_seconds=0.2,
    )
    port = start_gateway(archive)
    files = write_synthetic_study(tmp_path / "study", series=1, per_series=4, rows=16)
    assert send_raw(port, files, aet=MODALITY) == [0] * 4
    uids = [str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    return archive, port, listener_port, files, uids


def _request(references: list[tuple[str, str]], transaction: str | None = None) -> Dataset:
    info = Dataset()
    info.TransactionUID = transaction or generate_uid()
    info.ReferencedSOPSequence = []
    for sop_class, sop_uid in references:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_uid
        info.ReferencedSOPSequence.append(item)
    return info


def _requester() -> AE:
    ae = AE(ae_title=MODALITY)
    ae.add_requested_context(StorageCommitmentPushModel)
    return ae


def _ask_same_association(port: int, info: Dataset, reports: Reports) -> tuple[int, Dataset]:
    ae = _requester()
    role = build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    assoc = ae.associate(
        "127.0.0.1",
        port,
        ae_title=ARCHIVE_AE,
        ext_neg=[role],
        evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)],
    )
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assert status.Status == 0x0000
        return reports.wait()
    finally:
        assoc.release()


def _by_uid(info: Dataset) -> tuple[set[str], dict[str, int]]:
    committed = {str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])}
    failed = {
        str(i.ReferencedSOPInstanceUID): int(i.FailureReason) for i in info.get("FailedSOPSequence", [])
    }
    return committed, failed


def test_same_association_mixed_instances_each_with_its_reason(site) -> None:
    archive, port, _, files, uids = site
    # one instance rejected (hidden, pending deletion: not in custody any more), one corrupted on disk
    ds = dcmread(files[0], stop_before_pixels=True)
    note = make_rejection_note(
        RejectionTitle.QUALITY, [Reference(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), CT, uids[0])]
    )
    archive.ingestor.ingest_dataset(note)
    with archive.db.read() as session:
        key = session.scalar(select(Instance.object_key).where(Instance.SOPInstanceUID == uids[1]))
    path = archive.store.path_for(key)  # type: ignore[attr-defined]  (the filesystem backend, in its test)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))

    absent = generate_uid()
    references = [
        (CT, uids[0]),  # rejected
        (CT, uids[1]),  # corrupt
        (CT, uids[2]),  # present
        (MR, uids[3]),  # present, but the requester names another class
        (CT, absent),  # never received
        ("1.2.840.10008.5.1.4.1.1.9999", generate_uid()),  # no such storage class
    ]
    reports = Reports()
    event_type, info = _ask_same_association(port, _request(references), reports)
    committed, failed = _by_uid(info)
    assert event_type == 2
    assert committed == {uids[2]}
    assert failed[uids[0]] == 0x0112 and failed[absent] == 0x0112
    assert failed[uids[1]] == 0x0110
    assert failed[uids[3]] == 0x0119
    assert 0x0122 in failed.values()


def test_new_association_when_the_requester_did_not_take_the_scp_role(site) -> None:
    _archive, port, listener_port, _, uids = site
    reports = Reports()
    listener = AE(ae_title=MODALITY)
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = listener.start_server(
        ("127.0.0.1", listener_port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)]
    )
    try:
        ae = _requester()
        assoc = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)  # default roles: no report here
        assert assoc.is_established
        info = _request([(CT, u) for u in uids])
        status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assoc.release()  # the modality goes away at once, as it may
        assert status.Status == 0x0000
        event_type, report = reports.wait()
        committed, failed = _by_uid(report)
        assert event_type == 1 and committed == set(uids) and not failed
        assert report.TransactionUID == info.TransactionUID
    finally:
        server.shutdown()


def test_report_retried_until_the_requester_listens(site) -> None:
    _archive, port, listener_port, _, uids = site
    reports = Reports()
    ae = _requester()
    assoc = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)
    info = _request([(CT, uids[2])])
    status, _ = assoc.send_n_action(info, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
    assoc.release()
    assert status.Status == 0x0000
    time.sleep(0.5)  # the first attempt finds nobody listening
    listener = AE(ae_title=MODALITY)
    listener.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = listener.start_server(
        ("127.0.0.1", listener_port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)]
    )
    try:
        event_type, report = reports.wait()
        assert event_type == 1 and _by_uid(report)[0] == {uids[2]}
    finally:
        server.shutdown()


def test_duplicate_transaction_and_malformed_requests(site) -> None:
    _archive, port, _, _, uids = site
    transaction = generate_uid()
    first = Reports()
    assert _ask_same_association(port, _request([(CT, uids[2])], transaction), first)[0] == 1
    again = Reports()
    event_type, info = _ask_same_association(port, _request([(CT, uids[2])], transaction), again)
    assert event_type == 2 and _by_uid(info)[1] == {uids[2]: 0x0131}

    ae = _requester()
    assoc = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)
    try:
        no_transaction = Dataset()
        no_transaction.ReferencedSOPSequence = _request([(CT, uids[2])]).ReferencedSOPSequence
        status, _ = assoc.send_n_action(no_transaction, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assert status.Status == 0x0115
        empty = Dataset()
        empty.TransactionUID = generate_uid()
        empty.ReferencedSOPSequence = []
        status, _ = assoc.send_n_action(empty, 1, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE)
        assert status.Status == 0x0115
        status, _ = assoc.send_n_action(
            _request([(CT, uids[2])]), 2, StorageCommitmentPushModel, WELL_KNOWN_INSTANCE
        )
        assert status.Status == 0x0123  # no such action type
    finally:
        assoc.release()
