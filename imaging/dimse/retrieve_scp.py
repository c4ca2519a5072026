"""C-MOVE and C-GET SCP: stored objects go back byte for byte as stored, to a destination AE named in
configuration (C-MOVE) or over the same association (C-GET).

pynetdicom's retrieve service wants a Dataset per sub-operation and encodes it with
`pynetdicom.association.encode`. Decoding and re-encoding with pydicom would not give back the bytes
received (group lengths dropped, trailing padding, deflate stream, lengths of undefined-length items), so
each sub-operation yields a `StoredInstance`: a Dataset that carries its stored data set bytes, which
`_encode` (wrapping pynetdicom's) returns unchanged when the agreed transfer syntax is the stored one. Only
when a peer accepted another (uncompressed) syntax is the object decoded and re-encoded."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pynetdicom.association as _association
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom import build_context, evt
from pynetdicom.sop_class import Verification

from imaging.archive import Archive
from imaging.dimse.contexts import called_ae_title, scu_contexts
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


class StoredInstance(Dataset):
    """A stored object as a Dataset holding only its UIDs, plus its stored bytes (see module doc)."""

    @classmethod
    def load(cls, data: bytes, sop_class: str, sop_instance: str) -> StoredInstance:
        meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
        syntax = UID(dcmread(BytesIO(data[:meta_end]), specific_tags=[]).file_meta.TransferSyntaxUID)
        ds = cls()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_instance
        ds.set_original_encoding(syntax.is_implicit_VR, syntax.is_little_endian, None)
        object.__setattr__(ds, "stored", data)
        object.__setattr__(ds, "body_offset", meta_end)
        return ds

    def encoded(self, implicit: bool, little: bool, deflated: bool) -> bytes | None:
        syntax = self.file_meta.TransferSyntaxUID
        data: bytes = self.__dict__["stored"]
        if (syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated) == (
            implicit,
            little,
            deflated,
        ):
            body = data[self.__dict__["body_offset"] :]
            if len(body) % 2:  # PS3.5 A.5: an odd deflated stream is sent padded with one NUL byte
                body += b"\0"
            return body
        return _pynetdicom_encode(dcmread(BytesIO(data)), implicit, little, deflated)


_pynetdicom_encode = _association.encode


def _encode(
    ds: Dataset, is_implicit_vr: bool, is_little_endian: bool, deflated: bool = False
) -> bytes | None:
    if isinstance(ds, StoredInstance):
        return ds.encoded(is_implicit_vr, is_little_endian, deflated)
    return _pynetdicom_encode(ds, is_implicit_vr, is_little_endian, deflated)


_association.encode = _encode


def _instances(event: evt.Event, archive: Archive) -> list[tuple[str, str, str, str]]:
    """(object key, SOP class, SOP instance, transfer syntax) of every instance the identifier selects."""
    request = event.identifier
    level_of(request, levels_for(str(event.request.AffectedSOPClassUID)))
    matching, _ = keys_of(request)
    if not any(
        matching.get(k) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    ):
        raise BadIdentifier("a retrieve needs at least one unique key")
    partition = archive.partition_for(called_ae_title(event.assoc))
    if partition is None:
        raise BadIdentifier("called AE title serves no partition")
    with archive.db.read() as session:
        return [
            (
                m.instance.object_key,
                m.instance.SOPClassUID,
                m.instance.SOPInstanceUID,
                m.instance.TransferSyntaxUID,
            )
            for m in find(session, Query(level=Level.IMAGE, keys=matching, partition=partition))
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
        # pynetdicom takes a status only after the destination and a sub-operation count.
        yield destination.host, destination.port, {"contexts": [build_context(Verification)]}
        yield 1
        yield IDENTIFIER_MISMATCH, None
        return
    pairs = {(sop_class, syntax) for _, sop_class, _, syntax in instances}
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


def _send(event: evt.Event, archive: Archive, instances: list[tuple[str, str, str, str]]) -> Iterator[Any]:
    yield len(instances)
    for key, sop_class, sop_instance, _ in instances:
        if event.is_cancelled:
            yield CANCEL, None
            return
        try:
            ds = StoredInstance.load(archive.store.read(key), sop_class, sop_instance)
        except Exception as exc:
            log.error("stored object %s unreadable: %s", key, type(exc).__name__)
            yield UNABLE_TO_PROCESS, None
            return
        yield PENDING, ds
