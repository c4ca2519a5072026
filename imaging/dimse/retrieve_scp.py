"""C-MOVE and C-GET SCP: stored objects go back as stored (pydicom rewrites unmodified raw elements
byte for byte), to a destination AE named in configuration (C-MOVE) or over the same association (C-GET)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom import dcmread
from pynetdicom import evt

from imaging.archive import Archive
from imaging.dimse.contexts import scu_contexts
from imaging.dimse.find_scp import levels_for
from imaging.dimse.query_keys import BadIdentifier, keys_of, level_of
from imaging.index.attributes import Level
from imaging.index.matching import InvalidMatchKey
from imaging.index.query import Query, find

log = logging.getLogger(__name__)

PENDING = 0xFF00
CANCEL = 0xFE00
IDENTIFIER_MISMATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000


def _instances(event: evt.Event, archive: Archive) -> list[tuple[str, str, str]]:
    """(object key, SOP class, transfer syntax) of every instance the identifier selects."""
    request = event.identifier
    level_of(request, levels_for(str(event.request.AffectedSOPClassUID)))
    matching, _ = keys_of(request)
    if not any(
        matching.get(k) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    ):
        raise BadIdentifier("a retrieve needs at least one unique key")
    with archive.db.read() as session:
        return [
            (m.instance.object_key, m.instance.SOPClassUID, m.instance.TransferSyntaxUID)
            for m in find(session, Query(level=Level.IMAGE, keys=matching))
            if m.instance is not None
        ]


def handle_move(event: evt.Event, archive: Archive) -> Iterator[Any]:
    destination = archive.settings.remote_ae(str(event.move_destination))
    if destination is None:
        yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
        return
    try:
        instances = _instances(event, archive)
    except (BadIdentifier, InvalidMatchKey) as exc:
        log.info("C-MOVE refused: %s", exc)
        yield IDENTIFIER_MISMATCH, None
        return
    pairs = {(sop_class, syntax) for _, sop_class, syntax in instances}
    yield destination.host, destination.port, {"contexts": scu_contexts(pairs)}
    yield from _send(event, archive, instances)


def handle_get(event: evt.Event, archive: Archive) -> Iterator[Any]:
    try:
        instances = _instances(event, archive)
    except (BadIdentifier, InvalidMatchKey) as exc:
        log.info("C-GET refused: %s", exc)
        yield IDENTIFIER_MISMATCH, None
        return
    yield from _send(event, archive, instances)


def _send(event: evt.Event, archive: Archive, instances: list[tuple[str, str, str]]) -> Iterator[Any]:
    yield len(instances)
    for key, _, _ in instances:
        if event.is_cancelled:
            yield CANCEL, None
            return
        try:
            ds = dcmread(archive.object_path(key))
        except Exception:
            log.exception("stored object unreadable")
            yield UNABLE_TO_PROCESS, None
            return
        yield PENDING, ds
