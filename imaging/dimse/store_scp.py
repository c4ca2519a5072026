"""C-STORE SCP: the received bytes, exactly as sent, go through the single ingest path (a large data set as
the spool file it was received into, never read into memory whole), for a caller allowed to store; each
outcome is tallied for the association's audit record (imaging.dimse.audit_trail)."""

from __future__ import annotations

import logging
import os
from io import BytesIO
from typing import Any, Protocol, cast

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from imaging.archive import Archive
from imaging.config import DimseService
from imaging.dimse.access import peer_of
from imaging.dimse.audit_trail import StoreTally
from imaging.dimse.contexts import called_ae_title, is_storage_sop_class
from imaging.dimse.part10 import part10
from imaging.errors import ArchiveError, NotAuthorized, OutOfResources, SOPClassNotSupported
from imaging.ingest import Expected
from imaging.storage.base import Source, file_slice

log = logging.getLogger(__name__)

SUCCESS = 0x0000
WARNING_COERCION = 0xB000


class ReceivingRelay(Protocol):
    """Where an extra gateway process reports its associations' received series (imaging.dimse.processes)."""

    def add(self, assoc_id: int, partition: str, series_instance_uid: str) -> None: ...

    def release(self, assoc_id: int) -> None: ...


def handle_store(event: evt.Event, archive: Archive, relay: ReceivingRelay | None = None) -> int | Any:
    request = cast(C_STORE, event.request)
    sop_class = str(request.AffectedSOPClassUID)
    tally = getattr(event.assoc, "imaging_stores", None)
    try:
        if not peer_of(event.assoc, archive.settings).may(DimseService.STORE):
            raise NotAuthorized("the calling AE may not store")
        if not is_storage_sop_class(sop_class) and sop_class not in archive.settings.extra_sop_classes:
            raise SOPClassNotSupported("SOP class not supported")
        if request.DataSet is None:  # dropped on arrival: over max_upload_bytes (imaging.dimse.provider)
            raise OutOfResources("data set larger than the archive accepts")
        sop_instance = str(request.AffectedSOPInstanceUID)
        transfer_syntax = str(event.context.transfer_syntax)
        spool = request._dataset_file  # a large data set, spooled as it arrived (imaging.dimse.provider)
        data: Source
        if spool is not None:
            header = part10(sop_class, sop_instance, transfer_syntax, b"")
            fd = spool.file.fileno()
            data = file_slice(fd, 0, os.fstat(fd).st_size, header)
        else:
            data = part10(sop_class, sop_instance, transfer_syntax, cast(BytesIO, request.DataSet).getvalue())
        calling = str(event.assoc.requestor.ae_title).strip()
        result = archive.receiver.receive(
            data,
            source=calling,
            called_ae=called_ae_title(event.assoc),
            expected=Expected(SOPInstanceUID=sop_instance, SOPClassUID=sop_class),
        )
    except ArchiveError as exc:
        log.warning("C-STORE refused: 0x%04X %s", exc.dimse_status, exc)
        if isinstance(tally, StoreTally):
            tally.refuse(exc.dimse_status)
        return exc.dimse_status
    except Exception:
        log.exception("C-STORE failed")
        if isinstance(tally, StoreTally):
            tally.refuse(0xC001)
        return 0xC001
    if isinstance(tally, StoreTally):
        tally.stored(result.partition, result.study_instance_uid, str(result.disposition))
    received = archive.receiving.setdefault(id(event.assoc), set())
    series = (result.partition, result.series_instance_uid)
    if relay is not None and series not in received:
        relay.add(id(event.assoc), *series)  # before the Success goes out
    received.add(series)
    return WARNING_COERCION if result.warnings else SUCCESS


def handle_released(event: evt.Event, archive: Archive, relay: ReceivingRelay | None = None) -> None:
    if archive.receiving.pop(id(event.assoc), None) is not None and relay is not None:
        relay.release(id(event.assoc))
