"""C-FIND SCP: Patient Root and Study Root, PATIENT/STUDY/SERIES/IMAGE levels."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pynetdicom import evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from imaging.archive import Archive
from imaging.dimse.contexts import called_ae_title
from imaging.dimse.query_keys import BadIdentifier, keys_of, level_of, sequence_keys, sequence_matches
from imaging.index.attributes import Level
from imaging.index.matching import InvalidMatchKey
from imaging.index.query import Query, find, identifier, representative_metadata

log = logging.getLogger(__name__)

PATIENT_ROOT_MODELS = {
    str(PatientRootQueryRetrieveInformationModelFind),
    str(PatientRootQueryRetrieveInformationModelMove),
    str(PatientRootQueryRetrieveInformationModelGet),
}

PENDING = 0xFF00
CANCEL = 0xFE00
IDENTIFIER_MISMATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000


def levels_for(model: str) -> tuple[Level, ...]:
    if model in PATIENT_ROOT_MODELS:
        return (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
    return (Level.STUDY, Level.SERIES, Level.IMAGE)


def handle_find(event: evt.Event, archive: Archive) -> Iterator[tuple[int, Any]]:
    model = str(event.request.AffectedSOPClassUID)
    try:
        request = event.identifier
        level = level_of(request, levels_for(model))
        matching, returned = keys_of(request)
        in_sequences = sequence_keys(request)
        partition = archive.receiver.partition_for(called_ae_title(event.assoc))
        if partition is None:
            raise BadIdentifier("called AE title serves no partition")
        query = Query(level=level, keys=matching, partition=partition)
        with archive.db.read() as session:
            matches = find(session, query)
            charset = request.get("SpecificCharacterSet")
            for match in matches:
                if event.is_cancelled:
                    yield CANCEL, None
                    return
                if in_sequences and not sequence_matches(
                    representative_metadata(session, match), in_sequences
                ):
                    continue
                ds = identifier(session, match, level, returned)
                ds.QueryRetrieveLevel = level.value
                ds.RetrieveAETitle = archive.settings.ae_title
                ds.SpecificCharacterSet = charset or "ISO_IR 192"
                yield PENDING, ds
    except (BadIdentifier, InvalidMatchKey) as exc:
        log.info("C-FIND refused: %s", exc)
        yield IDENTIFIER_MISMATCH, None
    except Exception:
        log.exception("C-FIND failed")
        yield UNABLE_TO_PROCESS, None
