"""Storage Commitment Push Model SCP (PS3.4 Annex J): a modality asks, with an N-ACTION, whether the archive
has taken custody of the instances it sent, and frees its disk on the answer, an N-EVENT-REPORT. A wrong
"committed" is data loss, so an instance is reported committed only when it is indexed in the partition the
called AE title serves (the ingest path indexes only what is fsynced: durable), not rejected or deleted, and
its stored bytes still hash to their key (verified now, not remembered). Everything else is reported failed
with its reason: 0x0112 no such object instance, 0x0119 class/instance conflict, 0x0122 SOP class not
supported, 0x0110 processing failure (the object is unreadable or corrupt), 0x0131 duplicate transaction UID.

Which association (PS3.4 J.3.3.1.2): the N-ACTION is answered at once; the report follows on the same
association when the requester took the SCP role for Storage Commitment (SCP/SCU role selection) and has
not asked to release it, else on a new association to the requester's AE title as configured in
`remote_aes`, proposing the SCP role, retried `commitment_report_attempts` times. On the same association the
report is sent from the association's own thread right after the N-ACTION response (pynetdicom's reactor
must not see the N-EVENT-REPORT response as a request), as C-GET sub-operations are.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.dimse_primitives import N_ACTION
from pynetdicom.sop_class import StorageCommitmentPushModel
from sqlalchemy import select

from imaging.archive import Archive
from imaging.dimse.contexts import called_ae_title, is_storage_sop_class
from imaging.errors import ArchiveError
from imaging.index.schema import Instance, Series, Study

log = logging.getLogger(__name__)

STORAGE_COMMITMENT = "1.2.840.10008.1.20.1"
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID
ALL_SUCCEEDED, SOME_FAILED = 1, 2  # Event Type IDs
PROCESSING_FAILURE = 0x0110
NO_SUCH_OBJECT_INSTANCE = 0x0112
NO_SUCH_ACTION = 0x0123
INVALID_ARGUMENT = 0x0115
INVALID_OBJECT_INSTANCE = 0x0117
CLASS_INSTANCE_CONFLICT = 0x0119
SOP_CLASS_NOT_SUPPORTED = 0x0122
DUPLICATE_TRANSACTION_UID = 0x0131
REMEMBERED_TRANSACTIONS = 10_000


@dataclass
class Outcome:
    committed: list[tuple[str, str]] = field(default_factory=list)  # (SOP class, SOP instance)
    failed: list[tuple[str, str, int]] = field(default_factory=list)  # (..., FailureReason)

    def event(self, transaction_uid: str) -> tuple[int, Dataset]:
        """The N-EVENT-REPORT's Event Type ID and Event Information."""
        info = Dataset()
        info.TransactionUID = transaction_uid
        if self.committed:
            info.ReferencedSOPSequence = [_item(c, i) for c, i in self.committed]
        if self.failed:
            info.FailedSOPSequence = [_item(c, i, reason) for c, i, reason in self.failed]
        return (SOME_FAILED if self.failed else ALL_SUCCEEDED), info


def _item(sop_class: str, sop_instance: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if reason is not None:
        item.FailureReason = reason
    return item


def evaluate(archive: Archive, partition: str, references: list[tuple[str, str]]) -> Outcome:
    """Which of the referenced instances the archive holds, durable, indexed and verified (see above)."""
    outcome = Outcome()
    uids = list({uid for _, uid in references})
    held: dict[str, tuple[str, str]] = {}
    with archive.db.read() as session:
        for start in range(0, len(uids), 500):
            held.update(
                (uid, (sop_class, key))
                for uid, sop_class, key in session.execute(
                    select(Instance.SOPInstanceUID, Instance.SOPClassUID, Instance.object_key)
                    .join(Series, Series.series_pk == Instance.series_pk)
                    .join(Study, Study.study_pk == Series.study_pk)
                    .where(
                        Study.partition == partition, Instance.SOPInstanceUID.in_(uids[start : start + 500])
                    )
                )
            )
    verified: dict[str, bool] = {}
    for sop_class, uid in references:
        storable = is_storage_sop_class(sop_class) or sop_class in archive.settings.extra_sop_classes
        if uid not in held:
            outcome.failed.append(
                (sop_class, uid, NO_SUCH_OBJECT_INSTANCE if storable else SOP_CLASS_NOT_SUPPORTED)
            )
            continue
        stored_class, key = held[uid]
        if stored_class != sop_class:
            outcome.failed.append((sop_class, uid, CLASS_INSTANCE_CONFLICT))
            continue
        if key not in verified:
            verified[key] = _verify(archive, key)
        if verified[key]:
            outcome.committed.append((sop_class, uid))
        else:
            outcome.failed.append((sop_class, uid, PROCESSING_FAILURE))
    return outcome


def _verify(archive: Archive, key: str) -> bool:
    """The stored bytes hash to the key they are stored under (content addressing: "<partition>/<sha256>")."""
    digest = hashlib.sha256()
    try:
        for chunk in archive.store.stream(key):
            digest.update(chunk)
    except (ArchiveError, OSError):
        return False
    ok = digest.hexdigest() == key.split("/", 1)[1]
    if not ok:
        log.error("storage commitment: object %s does not match its checksum", key)
    return ok


@dataclass
class _Request:
    message_id: int
    transaction_uid: str
    references: list[tuple[str, str]]
    partition: str
    calling_ae: str
    same_association: bool


class CommitmentSCP:
    """EVT_N_ACTION handler of the gateway (one per Gateway)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._transactions: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def handle_action(self, event: evt.Event) -> tuple[int, Dataset | None]:
        request = cast(N_ACTION, event.request)
        if str(request.RequestedSOPClassUID) != STORAGE_COMMITMENT:
            return NO_SUCH_ACTION, None
        if str(request.RequestedSOPInstanceUID) != WELL_KNOWN_INSTANCE:
            return INVALID_OBJECT_INSTANCE, None
        if request.ActionTypeID != REQUEST_STORAGE_COMMITMENT:
            return NO_SUCH_ACTION, None
        try:
            info = event.action_information
            transaction_uid = str(info.TransactionUID)
            references = [
                (str(item.ReferencedSOPClassUID), str(item.ReferencedSOPInstanceUID))
                for item in info.ReferencedSOPSequence
            ]
        except Exception:  # missing or malformed: PS3.7 C.5.10 (as dcm4chee-arc answers it)
            return INVALID_ARGUMENT, None
        if not transaction_uid or not references or not all(c and i for c, i in references):
            return INVALID_ARGUMENT, None
        partition = self.archive.receiver.partition_for(called_ae_title(event.assoc))
        if partition is None:
            return INVALID_ARGUMENT, None
        commitment = _Request(
            message_id=int(request.MessageID or 0),
            transaction_uid=transaction_uid,
            references=references,
            partition=partition,
            calling_ae=str(event.assoc.requestor.ae_title).strip(),
            same_association=_may_report_here(event.assoc),
        )
        duplicate = self._seen(transaction_uid)
        _after_response(event.assoc, commitment, lambda: self._report(event.assoc, commitment, duplicate))
        return 0x0000, None

    def _seen(self, transaction_uid: str) -> bool:
        with self._lock:
            if transaction_uid in self._transactions:
                return True
            self._transactions[transaction_uid] = None
            while len(self._transactions) > REMEMBERED_TRANSACTIONS:
                self._transactions.popitem(last=False)
            return False

    def _report(self, assoc: Any, commitment: _Request, duplicate: bool) -> None:
        """Evaluate and report: on this association if allowed and still open, else on a new one."""
        if duplicate:
            outcome = Outcome(failed=[(c, i, DUPLICATE_TRANSACTION_UID) for c, i in commitment.references])
        else:
            try:
                outcome = evaluate(self.archive, commitment.partition, commitment.references)
            except Exception as exc:  # the index is unreachable: nothing is committed
                log.error("storage commitment evaluation failed: %s", type(exc).__name__)
                outcome = Outcome(failed=[(c, i, PROCESSING_FAILURE) for c, i in commitment.references])
        event_type, info = outcome.event(commitment.transaction_uid)
        log.info(
            "storage commitment %s: %d committed, %d failed",
            commitment.transaction_uid,
            len(outcome.committed),
            len(outcome.failed),
        )
        if commitment.same_association and _open(assoc) and _sent(assoc, event_type, info):
            return
        threading.Thread(
            target=self._report_on_new_association,
            args=(commitment, event_type, info),
            name="commitment-report",
            daemon=True,
        ).start()

    def _report_on_new_association(self, commitment: _Request, event_type: int, info: Dataset) -> None:
        settings = self.archive.settings
        destination = settings.remote_ae(commitment.calling_ae)
        if destination is None:
            log.error(
                "storage commitment %s: the requester's AE title has no address in remote_aes: no report sent",
                commitment.transaction_uid,
            )
            return
        for attempt in range(1, settings.commitment_report_attempts + 1):
            ae = AE(ae_title=settings.ae_title)
            ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.network_timeout
            ae.add_requested_context(StorageCommitmentPushModel)
            role = build_role(StorageCommitmentPushModel, scp_role=True, scu_role=False)
            assoc = ae.associate(
                destination.host, destination.port, ae_title=destination.ae_title, ext_neg=[role]
            )
            if assoc.is_established:
                try:
                    if _sent(assoc, event_type, info):
                        return
                finally:
                    if assoc.is_established:
                        assoc.release()
            log.warning(
                "storage commitment %s: report not delivered (attempt %d)",
                commitment.transaction_uid,
                attempt,
            )
            time.sleep(settings.commitment_report_retry_seconds)
        log.error("storage commitment %s: report not delivered, giving up", commitment.transaction_uid)


def _may_report_here(assoc: Any) -> bool:
    """The requester took the SCP role for Storage Commitment: it accepts N-EVENT-REPORTs here."""
    return any(str(cx.abstract_syntax) == STORAGE_COMMITMENT and cx.as_scu for cx in assoc.accepted_contexts)


def _open(assoc: Any) -> bool:
    return bool(assoc.is_established) and not assoc.acse.is_release_requested()


def _sent(assoc: Any, event_type: int, info: Dataset) -> bool:
    try:
        status, _ = assoc.send_n_event_report(info, event_type, STORAGE_COMMITMENT, WELL_KNOWN_INSTANCE)
    except (RuntimeError, ValueError) as exc:
        log.warning("storage commitment report not sent: %s", type(exc).__name__)
        return False
    return bool(status) and "Status" in status and int(status.Status) == 0x0000


def _after_response(assoc: Any, commitment: _Request, report: Callable[[], None]) -> None:
    """Run `report` once the N-ACTION response for this request has been sent: in the association's own
    thread when it will use this association, else in a thread of its own."""
    dimse = assoc.dimse
    send_msg = dimse.send_msg

    def send(primitive: Any, context_id: int) -> None:
        send_msg(primitive, context_id)
        if isinstance(primitive, N_ACTION) and primitive.MessageIDBeingRespondedTo == commitment.message_id:
            dimse.send_msg = send_msg  # one request, one report
            if int(primitive.Status or 0) != 0x0000:
                return
            if commitment.same_association:
                report()
            else:
                threading.Thread(target=report, name="commitment", daemon=True).start()

    dimse.send_msg = send
