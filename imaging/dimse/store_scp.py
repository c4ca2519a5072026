"""C-STORE SCP: the received bytes, exactly as sent, go through the single ingest path."""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom import evt

from imaging.archive import Archive
from imaging.dimse.contexts import called_ae_title, is_storage_sop_class
from imaging.errors import ArchiveError, SOPClassNotSupported
from imaging.index.schema import CLINICAL

log = logging.getLogger(__name__)

SUCCESS = 0x0000
WARNING_COERCION = 0xB000
NOT_AUTHORIZED = 0x0124  # called AE title neither ours nor bound to a project


def handle_store(event: evt.Event, archive: Archive) -> int | Any:
    request = event.request
    sop_class = str(request.AffectedSOPClassUID)
    try:
        if not is_storage_sop_class(sop_class) and sop_class not in archive.settings.extra_sop_classes:
            raise SOPClassNotSupported("SOP class not supported")
        partition = archive.partition_for(called_ae_title(event.assoc))
        if partition is None:
            return NOT_AUTHORIZED
        data = event.encoded_dataset(include_meta=True)
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
    archive.receiving.setdefault(id(event.assoc), set()).add((result.partition, result.series_instance_uid))
    return WARNING_COERCION if result.warnings else SUCCESS


def handle_released(event: evt.Event, archive: Archive) -> None:
    archive.receiving.pop(id(event.assoc), None)
