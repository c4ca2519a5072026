"""C-STORE SCP: the received bytes, exactly as sent, go through the single ingest path."""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any, Protocol, cast

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE

from imaging.archive import Archive
from imaging.dimse.contexts import called_ae_title, is_storage_sop_class
from imaging.dimse.part10 import part10
from imaging.errors import ArchiveError, SOPClassNotSupported
from imaging.index.schema import CLINICAL

log = logging.getLogger(__name__)

SUCCESS = 0x0000
WARNING_COERCION = 0xB000
NOT_AUTHORIZED = 0x0124  # called AE title neither ours nor bound to a project


class ReceivingRelay(Protocol):
    """Where an extra gateway process reports its associations' received series (imaging.dimse.processes)."""

    def add(self, assoc_id: int, partition: str, series_instance_uid: str) -> None: ...

    def release(self, assoc_id: int) -> None: ...


def handle_store(event: evt.Event, archive: Archive, relay: ReceivingRelay | None = None) -> int | Any:
    request = cast(C_STORE, event.request)
    sop_class = str(request.AffectedSOPClassUID)
    try:
        if not is_storage_sop_class(sop_class) and sop_class not in archive.settings.extra_sop_classes:
            raise SOPClassNotSupported("SOP class not supported")
        partition = archive.partition_for(called_ae_title(event.assoc))
        if partition is None:
            return NOT_AUTHORIZED
        data = part10(
            sop_class,
            str(request.AffectedSOPInstanceUID),
            str(event.context.transfer_syntax),
            cast(BytesIO, request.DataSet).getvalue(),
        )
        calling = str(event.assoc.requestor.ae_title).strip()
        if partition != CLINICAL:
            # A project-bound AE title: de-identified on receive, no identified copy is kept.
            from imaging.projects import receive_into_project

            result = receive_into_project(archive, partition, data, source=f"ae:{calling}")
        else:
            result = archive.ingestor.ingest(
                data,
                source=calling,
                expected_sop_instance_uid=str(request.AffectedSOPInstanceUID),
                expected_sop_class_uid=sop_class,
            )
    except ArchiveError as exc:
        log.warning("C-STORE refused: 0x%04X %s", exc.dimse_status, exc)
        return exc.dimse_status
    except Exception:
        log.exception("C-STORE failed")
        return 0xC001
    received = archive.receiving.setdefault(id(event.assoc), set())
    series = (result.partition, result.series_instance_uid)
    if relay is not None and series not in received:
        relay.add(id(event.assoc), *series)  # before the Success goes out
    received.add(series)
    return WARNING_COERCION if result.warnings else SUCCESS


def handle_released(event: evt.Event, archive: Archive, relay: ReceivingRelay | None = None) -> None:
    if archive.receiving.pop(id(event.assoc), None) is not None and relay is not None:
        relay.release(id(event.assoc))
