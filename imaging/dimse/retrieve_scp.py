"""C-MOVE and C-GET SCP: stored objects go back to a destination AE named in configuration (C-MOVE) or over
the same association (C-GET), byte for byte as stored when the peer accepted the stored transfer syntax.

Decoding and re-encoding with pydicom would not give back the bytes received (group lengths dropped,
trailing padding, deflate stream, lengths of undefined-length items), so a sub-operation whose stored syntax
the peer accepted sends the stored file as it is (see Spool). Otherwise the object is transcoded to the best
syntax the peer accepted for its SOP class (imaging.dimse.transcode: decompressed, byte order converted, or
compressed losslessly) and that file is sent. Each file goes out in exactly its own syntax (pynetdicom's
chunked send matches the context exactly), so pynetdicom never converts behind our back.

A sub-operation fails only when no accepted syntax can carry its object (or the object cannot be read): it
is counted as failed, with its SOP Instance UID in the Failed SOP Instance UID List of the final response
(Warning 0xB000, or 0xA702 when every sub-operation failed), and the others go on.

A C-MOVE proposes to its destination every SOP class with the uncompressed syntaxes plus each stored syntax
(imaging.dimse.contexts.scu_contexts), so that the destination can pick.
A caller needs the `move` or `get` service (imaging.dimse.access): C-GET is limited as C-MOVE is, and C-MOVE
goes to configured destinations only. Each retrieve is audited per study: Begin Transferring, then DICOM
Instances Transferred with the sub-operations' outcomes (imaging.dimse.audit_trail)."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom import build_context, evt
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification

from imaging.archive import Archive
from imaging.config import DimseService
from imaging.dimse.access import peer_of
from imaging.dimse.audit_trail import AuditWriter, RetrieveTally
from imaging.dimse.contexts import called_ae_title, scu_contexts
from imaging.dimse.find_scp import levels_for
from imaging.dimse.query_keys import BadIdentifier, keys_of, level_of
from imaging.dimse.transcode import CannotTranscode, targets, transcode
from imaging.errors import ArchiveError
from imaging.index.access import record_access
from imaging.index.attributes import Level
from imaging.index.matching import InvalidMatchKey
from imaging.index.query import Query, find

log = logging.getLogger(__name__)

PENDING = 0xFF00
CANCEL = 0xFE00
IDENTIFIER_MISMATCH = 0xA900
NOT_AUTHORIZED = 0x0124


class Stored(NamedTuple):
    """What the index says of one instance to retrieve."""

    key: str
    sop_class: str
    sop_instance: str
    syntax: str
    has_pixels: bool
    study: str  # StudyInstanceUID, for the audit trail


class StoredInstance(Dataset):
    """A sub-operation's object as pynetdicom's retrieve service wants it (a Dataset, holding only its
    UIDs), standing for its stored file in the spool, which `send_stored` sends as it is."""

    @classmethod
    def spooled(cls, path: Path, sop_class: str, sop_instance: str, syntax: str) -> StoredInstance:
        ds = cls()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = UID(syntax)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = sop_instance
        object.__setattr__(ds, "spool_path", path)
        return ds


class Uncarried(Dataset):
    """A sub-operation that cannot be performed: no syntax the peer accepted can carry its object. Yielded
    like any other so that pynetdicom counts it as failed and lists its SOP Instance UID; its send raises."""

    @classmethod
    def of(cls, stored: Stored, reason: str) -> Uncarried:
        ds = cls()
        ds.SOPClassUID = stored.sop_class
        ds.SOPInstanceUID = stored.sop_instance
        object.__setattr__(ds, "reason", reason)
        return ds


def send_stored(assoc: Any) -> None:
    """Make this association's C-STORE sub-operations send a StoredInstance's file exactly as it is:
    pynetdicom sends a file given by path without decoding it (its STORE_SEND_CHUNKED_DATASET mode, set by
    the gateway), but its retrieve service takes Datasets only. Bound per association (our C-GET
    associations at EVT_REQUESTED, C-MOVE sub-associations at EVT_ACCEPTED), never module-wide."""
    send_c_store = assoc.send_c_store

    def send(dataset: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(dataset, Uncarried):
            # pynetdicom counts the sub-operation as failed and logs this message (no PHI in it).
            raise ValueError(dataset.__dict__["reason"])
        if isinstance(dataset, StoredInstance):
            dataset = dataset.__dict__["spool_path"]
        assoc.imaging_sent_status = None
        rsp = send_c_store(dataset, *args, **kwargs)
        # The sub-operation's outcome, for the audit trail (read when the handler is resumed).
        assoc.imaging_sent_status = int(rsp.Status) if "Status" in rsp else None
        return rsp

    assoc.send_c_store = send


class Spool:
    """Where a sub-operation's object waits, as a Part 10 file, while pynetdicom sends it: the store is
    read by key, so each object is copied here first, and removed once sent (pynetdicom asks for the next
    sub-operation only after the previous one's response)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.current: Path | None = None

    def hold(self, chunks: Iterable[bytes]) -> Path:
        self.release()
        fd, name = tempfile.mkstemp(prefix="retrieve-", suffix=".dcm", dir=self.folder)
        self.current = path = Path(name)
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            # PS3.5 A.5: a deflated data set of odd length is sent padded with one NUL byte (every value
            # field, and so every PDV, has an even length; dcmtk aborts on an odd one).
            f.flush()
            if (f.tell() - split_dataset(path)[1]) % 2:
                f.write(b"\0")
        return path

    def release(self) -> None:
        if self.current is not None:
            self.current.unlink(missing_ok=True)
            self.current = None


def _accepted(assoc: Any, sop_class: str) -> list[str]:
    """Transfer syntaxes the peer accepted for sending `sop_class` to it (we are the SCU of the C-STOREs:
    on a C-GET association, contexts where the requestor took the SCP role)."""
    return [
        str(cx.transfer_syntax[0])
        for cx in assoc.accepted_contexts
        if str(cx.abstract_syntax) == sop_class and cx.as_scu
    ]


def _sub_operation(archive: Archive, spool: Spool, stored: Stored, accepted: list[str]) -> Dataset:
    """The stored file when the peer accepted its syntax; else the object transcoded to the best syntax
    the peer accepted; else an Uncarried (a failed sub-operation)."""
    if stored.syntax in accepted:
        return StoredInstance.spooled(
            spool.hold(archive.store.stream(stored.key)), stored.sop_class, stored.sop_instance, stored.syntax
        )
    candidates = targets(stored.syntax, accepted, has_pixels=stored.has_pixels)
    if not candidates:
        return Uncarried.of(
            stored, f"no accepted transfer syntax for {stored.sop_class} can carry the object"
        )
    data = archive.store.read(stored.key)
    reasons = []
    for target in candidates:
        try:
            encoded = transcode(data, target)
        except CannotTranscode as exc:
            reasons.append(str(exc))
            continue
        return StoredInstance.spooled(spool.hold([encoded]), stored.sop_class, stored.sop_instance, target)
    log.warning("object %s: cannot transcode to any accepted syntax (%s)", stored.key, "; ".join(reasons))
    return Uncarried.of(stored, "cannot transcode the object to any accepted transfer syntax")


def _instances(event: evt.Event, archive: Archive) -> tuple[str, list[Stored]]:
    """The partition and every instance the identifier selects."""
    request = event.identifier
    level_of(request, levels_for(str(event.request.AffectedSOPClassUID)))
    matching, _ = keys_of(request)
    if not any(
        matching.get(k) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    ):
        raise BadIdentifier("a retrieve needs at least one unique key")
    partition = archive.receiver.partition_for(called_ae_title(event.assoc))
    if partition is None:
        raise BadIdentifier("called AE title serves no partition")
    with archive.db.read() as session:
        found = [
            Stored(
                m.instance.object_key,
                m.instance.SOPClassUID,
                m.instance.SOPInstanceUID,
                m.instance.TransferSyntaxUID,
                m.instance.Rows is not None or m.instance.pixel_offset is not None,
                m.study.StudyInstanceUID,
            )
            for m in find(session, Query(level=Level.IMAGE, keys=matching, partition=partition))
            if m.instance is not None
        ]
    record_access(archive.db, partition, {stored.study for stored in found})  # retention: last access
    return partition, found


def handle_move(event: evt.Event, archive: Archive, trail: AuditWriter | None = None) -> Iterator[Any]:
    destination = archive.settings.remote_ae(str(event.move_destination))
    if destination is None:
        yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
        return
    peer = peer_of(event.assoc, archive.settings)
    refusal = None
    try:
        if not peer.may(DimseService.MOVE):
            refusal = NOT_AUTHORIZED
            if trail is not None:
                trail.alert(user=peer.user, source=peer.host, reason="C-MOVE not permitted")
        else:
            partition, instances = _instances(event, archive)
    except (BadIdentifier, InvalidMatchKey) as exc:
        log.info("C-MOVE refused: %s", exc)
        refusal = IDENTIFIER_MISMATCH
    if refusal is not None:
        # pynetdicom takes a status only after the destination and a sub-operation count.
        yield destination.host, destination.port, {"contexts": [build_context(Verification)]}
        yield 1
        yield refusal, None
        return
    sub_association: list[Any] = []  # pynetdicom opens it between our yields; we need its contexts

    def accepted(event: evt.Event) -> None:
        send_stored(event.assoc)
        sub_association.append(event.assoc)

    yield (
        destination.host,
        destination.port,
        {
            "contexts": scu_contexts((i.sop_class, i.syntax) for i in instances),
            "evt_handlers": [(evt.EVT_ACCEPTED, accepted)],
        },
    )
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    tally = RetrieveTally(trail, peer.user, "C-MOVE", where) if trail is not None else None
    yield from _send(event, archive, partition, instances, lambda: sub_association[0], tally)


def handle_get(event: evt.Event, archive: Archive, trail: AuditWriter | None = None) -> Iterator[Any]:
    peer = peer_of(event.assoc, archive.settings)
    if not peer.may(DimseService.GET):
        if trail is not None:
            trail.alert(user=peer.user, source=peer.host, reason="C-GET not permitted")
        yield 1  # pynetdicom takes a status only after a sub-operation count
        yield NOT_AUTHORIZED, None
        return
    try:
        partition, instances = _instances(event, archive)
    except (BadIdentifier, InvalidMatchKey) as exc:
        log.info("C-GET refused: %s", exc)
        yield 1
        yield IDENTIFIER_MISMATCH, None
        return
    where = f"{peer.ae_title}@{peer.host}"
    tally = RetrieveTally(trail, peer.user, "C-GET", where) if trail is not None else None
    yield from _send(event, archive, partition, instances, lambda: event.assoc, tally)


def _send(
    event: evt.Event,
    archive: Archive,
    partition: str,
    instances: list[Stored],
    association: Callable[[], Any],
    tally: RetrieveTally | None,
) -> Iterator[Any]:
    yield len(instances)
    spool = Spool(archive.settings.data_dir / "spool")
    if tally is not None:
        tally.begin(partition, [stored.study for stored in instances])
    try:
        for stored in instances:
            if event.is_cancelled:
                yield CANCEL, None
                return
            try:
                item = _sub_operation(archive, spool, stored, _accepted(association(), stored.sop_class))
            except (ArchiveError, OSError) as exc:  # missing or unreadable object: this one fails, not all
                log.error("stored object %s unreadable: %s", stored.key, type(exc).__name__)
                item = Uncarried.of(stored, "the stored object cannot be read")
            yield PENDING, item
            if tally is not None:  # resumed once pynetdicom has the sub-operation's response
                tally.done(stored.study, getattr(association(), "imaging_sent_status", None))
    finally:
        spool.release()
        if tally is not None:
            tally.end()
