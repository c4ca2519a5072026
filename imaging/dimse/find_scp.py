"""C-FIND SCP: Patient Root and Study Root, PATIENT/STUDY/SERIES/IMAGE levels, for a caller allowed to query;
each request is one Query record in the audit trail (the names of its matching keys, never their values)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pynetdicom import evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from imaging.archive import Archive
from imaging.audit import AuditEvent, Outcome
from imaging.config import DimseService
from imaging.dimse.access import Peer, peer_of
from imaging.dimse.audit_trail import AuditWriter
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
NOT_AUTHORIZED = 0x0124


def levels_for(model: str) -> tuple[Level, ...]:
    if model in PATIENT_ROOT_MODELS:
        return (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
    return (Level.STUDY, Level.SERIES, Level.IMAGE)


def handle_find(
    event: evt.Event, archive: Archive, trail: AuditWriter | None = None
) -> Iterator[tuple[int, Any]]:
    model = str(event.request.AffectedSOPClassUID)
    peer = peer_of(event.assoc, archive.settings)
    if not peer.may(DimseService.FIND):
        if trail is not None:
            trail.alert(user=peer.user, source=peer.host, reason="C-FIND not permitted")
        yield NOT_AUTHORIZED, None
        return
    asked = _Asked(level="", keys=[], partition="", study_uid="")
    matched, outcome = 0, Outcome.SUCCESS
    try:
        request = event.identifier
        level = level_of(request, levels_for(model))
        matching, returned = keys_of(request)
        constraining = sorted(k for k, v in matching.items() if v.strip("*"))  # not universal matches
        asked = _Asked(level.value, constraining, "", _single_uid(matching.get("StudyInstanceUID", "")))
        in_sequences = sequence_keys(request)
        partition = archive.receiver.partition_for(called_ae_title(event.assoc))
        if partition is None:
            raise BadIdentifier("called AE title serves no partition")
        asked.partition = partition
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
                matched += 1
                yield PENDING, ds
    except (BadIdentifier, InvalidMatchKey) as exc:
        log.info("C-FIND refused: %s", exc)
        outcome = Outcome.MINOR_FAILURE
        yield IDENTIFIER_MISMATCH, None
    except Exception:
        log.exception("C-FIND failed")
        outcome = Outcome.SERIOUS_FAILURE
        yield UNABLE_TO_PROCESS, None
    finally:
        if trail is not None:
            _record(trail, peer, model, asked, matched, outcome)


@dataclass
class _Asked:
    """What a C-FIND asked, for its audit record: level, matching key names, partition, the one study."""

    level: str
    keys: list[str]
    partition: str
    study_uid: str


def _single_uid(value: str) -> str:
    """A matching key that names exactly one UID (no list, no wildcard), else ""."""
    return value if value and not any(c in value for c in "\\*?") else ""


def _record(
    trail: AuditWriter, peer: Peer, model: str, asked: _Asked, matched: int, outcome: Outcome
) -> None:
    root = "Patient Root" if model in PATIENT_ROOT_MODELS else "Study Root"
    keys = ",".join(asked.keys) or "none"
    trail.record(
        AuditEvent.QUERY,
        user=peer.user,
        action="E",
        outcome=outcome,
        source=peer.host,
        partition=asked.partition,
        study_uid=asked.study_uid,
        detail=f"C-FIND {root} level={asked.level or '?'} keys={keys} matches={matched}",
    )
