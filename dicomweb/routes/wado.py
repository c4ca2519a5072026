"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data.

* Instances go out as stored (`transfer-syntax=*`, or the stored syntax asked for); a different syntax
  is produced by transcoding (uncompressed ↔ uncompressed, compressed → Explicit VR Little Endian), else 406.
* Metadata comes from the index's compressed per-instance DICOM JSON; the stored files are never opened.
* Frames are read from the PixelData byte range recorded at ingest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from sqlalchemy import Select
from sqlalchemy.orm import Session

from dicomweb import multipart
from dicomweb.deps import Context, ReadContext
from dicomweb.dicom_json import MEDIA_TYPE, cached_dict, instance_metadata, json_array
from dicomweb.errors import NotAcceptable, RangeNotSatisfiable
from dicomweb.pixels import (
    FRAME_MEDIA_TYPES,
    TRANSCODE_TARGETS,
    CannotDecode,
    PixelInfo,
    decoded_frames,
    stored_frames,
    transcode,
)
from imaging.errors import InvalidRequest, NotFound
from imaging.index.access import record_access
from imaging.index.extract import valid_uid
from imaging.index.reads import select_instances
from imaging.index.schema import Instance, Series, Study

router = APIRouter(tags=["WADO-RS"])

_FRAME_LIST = re.compile(r"^\d{1,9}(,\d{1,9}){0,9999}$")
_BULK_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
MAX_FRAMES_PER_REQUEST = 10000
# Instances of a study/series retrieval transcoded before the answer starts (beyond: while streaming).
EAGER_TRANSCODE = 64


@dataclass
class Row:
    instance: Instance
    series_uid: str
    study_uid: str


def check_uids(**uids: str | None) -> None:
    for name, uid in uids.items():
        if uid is not None and not valid_uid(uid):
            raise InvalidRequest(f"invalid {name} UID")


def _select_instances(
    columns: tuple[Any, ...], ctx: Context, study: str, series: str | None, sop: str | None
) -> Select[Any]:
    return select_instances(columns, ctx.partition, study, series, sop)


def _not_found(series: str | None, sop: str | None) -> NotFound:
    return NotFound("no such " + ("instance" if sop else "series" if series else "study"))


def find_instances(
    session: Session, ctx: Context, study: str, series: str | None = None, sop: str | None = None
) -> list[Row]:
    columns = (Instance, Series.SeriesInstanceUID, Study.StudyInstanceUID)
    rows = [
        Row(i, se, st) for i, se, st in session.execute(_select_instances(columns, ctx, study, series, sop))
    ]
    if not rows:
        raise _not_found(series, sop)
    return rows


def _one(ctx: Context, study: str, series: str, sop: str) -> Row:
    check_uids(study=study, series=series, instance=sop)
    with ctx.archive.db.read() as session:
        return find_instances(session, ctx, study, series, sop)[0]


# --------------------------------------------------------------------------------- negotiation
def _accepts(request: Request) -> list[multipart.MediaType]:
    return multipart.parse_accept(request.headers.get("accept"))


def _instance_plan(
    ranges: list[multipart.MediaType], stored: str, *, single: bool
) -> tuple[str, bool] | None:
    """(transfer syntax to send, multipart?) for one instance, or None when nothing acceptable."""
    for r in ranges:
        if r.type == "multipart/related":
            part = (r.param("type") or "application/dicom").lower()
            if part not in ("application/dicom", "*/*", "application/*"):
                continue
            is_multipart = True
        elif r.type == "application/dicom" and single:
            part, is_multipart = r.type, False
        elif r.type in ("*/*", "application/*"):
            part, is_multipart = "*/*", True
        else:
            continue
        ts = r.param("transfer-syntax")
        if ts is None:
            # PS3.18: no parameter means Explicit VR Little Endian, except for a wildcard request.
            if part == "*/*":
                return stored, is_multipart
            ts = ExplicitVRLittleEndian
        if ts == "*" or ts == stored:
            return stored, is_multipart
        if ts in TRANSCODE_TARGETS:
            return ts, is_multipart
    return None


Payload = bytes | Iterator[bytes]  # transcoded in memory, or the stored object streamed from storage


def _dicom_part(ctx: Context, row: Row, ts: str) -> tuple[Payload, str]:
    """The instance in `ts`: the stored bytes streamed by key (NotFound before the first chunk), or a
    transcoded copy."""
    key, stored = row.instance.object_key, row.instance.TransferSyntaxUID
    content_type = f"application/dicom; transfer-syntax={ts}"
    if ts == stored:
        return ctx.archive.store.stream(key), content_type
    with ctx.archive.store.open(key) as f:
        return transcode(f, stored, ts), content_type


def retrieve(request: Request, ctx: Context, study: str, series: str | None, sop: str | None) -> Response:
    check_uids(study=study, series=series, instance=sop)
    with ctx.archive.db.read() as session:
        rows = find_instances(session, ctx, study, series, sop)
    if rows:
        record_access(ctx.archive.db, ctx.partition, [study])  # retention rules on last access
    ranges = _accepts(request)
    plans = []
    for row in rows:
        plan = _instance_plan(ranges, row.instance.TransferSyntaxUID, single=sop is not None)
        plans.append(plan)
    servable = [(row, plan) for row, plan in zip(rows, plans, strict=True) if plan is not None]
    ready: dict[int, tuple[Payload, str]] = {}
    to_transcode = [(row, plan) for row, plan in servable if plan[0] != row.instance.TransferSyntaxUID]
    if sop is None and 0 < len(to_transcode) <= EAGER_TRANSCODE:
        # Transcode before answering, so that what cannot be converted is reported (206 + Warning)
        # instead of silently missing from a stream that has already started.
        for row, plan in to_transcode:
            try:
                ready[row.instance.instance_pk] = _dicom_part(ctx, row, plan[0])
            except CannotDecode:
                servable.remove((row, plan))
    if not servable:
        raise NotAcceptable("none of the accepted media types / transfer syntaxes can be served")
    headers: dict[str, str] = {}
    status = 200
    if len(servable) < len(rows):
        status = 206
        headers["Warning"] = (
            f'299 imaging: "{len(rows) - len(servable)} instances cannot be served in the accepted '
            'transfer syntaxes and were left out"'
        )
    boundary = multipart.new_boundary()
    if sop is not None:  # one instance: build it now, so a failed transcode is a 406, not an empty body
        source, content_type = _dicom_part(ctx, servable[0][0], servable[0][1][0])
        if not servable[0][1][1]:
            return Response(
                source if isinstance(source, bytes) else b"".join(source), media_type=content_type
            )
        return StreamingResponse(
            multipart.stream_parts([(source, content_type)], boundary),
            media_type=multipart.multipart_content_type("application/dicom", boundary),
        )

    def parts() -> Iterator[tuple[Payload, str]]:
        for row, plan in servable:
            assert plan is not None
            try:
                pk = row.instance.instance_pk
                yield ready.pop(pk) if pk in ready else _dicom_part(ctx, row, plan[0])
            except (CannotDecode, NotFound):
                continue  # already streaming: leave the instance out

    for row, plan in servable:  # objects missing from storage are a 404 before streaming starts
        if plan and plan[0] == row.instance.TransferSyntaxUID:
            if not ctx.archive.store.exists(row.instance.object_key):
                raise NotFound("object not in storage")
            break
    return StreamingResponse(
        multipart.stream_parts(parts(), boundary),
        status_code=status,
        media_type=multipart.multipart_content_type("application/dicom", boundary),
        headers=headers,
    )


@router.get("/studies/{study}", summary="Retrieve a study")
def retrieve_study(study: str, request: Request, ctx: ReadContext) -> Response:
    return retrieve(request, ctx, study, None, None)


@router.get("/studies/{study}/series/{series}", summary="Retrieve a series")
def retrieve_series(study: str, series: str, request: Request, ctx: ReadContext) -> Response:
    return retrieve(request, ctx, study, series, None)


@router.get("/studies/{study}/series/{series}/instances/{sop}", summary="Retrieve an instance")
def retrieve_instance(study: str, series: str, sop: str, request: Request, ctx: ReadContext) -> Response:
    return retrieve(request, ctx, study, series, sop)


# --------------------------------------------------------------------------------- metadata
def _check_json_accept(request: Request) -> None:
    for r in _accepts(request):
        if r.type in (MEDIA_TYPE, "application/json", "*/*", "application/*"):
            return
    raise NotAcceptable("metadata is available as application/dicom+json")


def metadata(request: Request, ctx: Context, study: str, series: str | None, sop: str | None) -> Response:
    check_uids(study=study, series=series, instance=sop)
    _check_json_accept(request)
    columns = (Instance.metadata_json, Instance.SOPInstanceUID, Series.SeriesInstanceUID)
    with ctx.archive.db.read() as session:
        rows = session.execute(_select_instances(columns, ctx, study, series, sop)).all()
    if not rows:
        raise _not_found(series, sop)
    record_access(ctx.archive.db, ctx.partition, [study])  # a viewer opening a study reads its metadata
    series_root = f"{ctx.root}/studies/{study}/series/"
    body = json_array(
        instance_metadata(blob, f"{series_root}{se}/instances/{uid}/bulk") for blob, uid, se in rows
    )
    return Response(body, media_type=MEDIA_TYPE)


@router.get("/studies/{study}/metadata", summary="Retrieve study metadata")
def study_metadata(study: str, request: Request, ctx: ReadContext) -> Response:
    return metadata(request, ctx, study, None, None)


@router.get("/studies/{study}/series/{series}/metadata", summary="Retrieve series metadata")
def series_metadata(study: str, series: str, request: Request, ctx: ReadContext) -> Response:
    return metadata(request, ctx, study, series, None)


@router.get("/studies/{study}/series/{series}/instances/{sop}/metadata", summary="Retrieve instance metadata")
def instance_metadata_route(
    study: str, series: str, sop: str, request: Request, ctx: ReadContext
) -> Response:
    return metadata(request, ctx, study, series, sop)


# --------------------------------------------------------------------------------- frames
def pixel_info(ctx: Context, instance: Instance) -> PixelInfo:
    if instance.Rows is None or instance.Columns is None:
        raise NotFound("instance has no pixel data")
    cached = cached_dict(instance.metadata_json)
    if "7FE00010" not in cached and instance.pixel_offset is None:
        raise NotFound("instance has no pixel data")

    def number(tag: str, default: int) -> int:
        value = cached.get(tag, {}).get("Value")
        try:
            return int(value[0]) if value else default
        except (TypeError, ValueError):
            return default

    return PixelInfo(
        store=ctx.archive.store,
        key=instance.object_key,
        transfer_syntax=instance.TransferSyntaxUID,
        rows=instance.Rows,
        columns=instance.Columns,
        samples=number("00280002", 1),
        bits_allocated=instance.BitsAllocated or number("00280100", 16),
        frames=instance.NumberOfFrames or 1,
        offset=instance.pixel_offset,
        length=instance.pixel_length,
    )


def _frame_plan(ranges: list[multipart.MediaType], stored: str) -> tuple[str, str, bool] | None:
    """(mode "stored"|"decoded", part content type, multipart?) for frames."""
    compressed_types = FRAME_MEDIA_TYPES.get(stored, ())
    for r in ranges:
        if r.type == "multipart/related":
            part = (r.param("type") or "*/*").lower()
            is_multipart = True
        else:
            part, is_multipart = r.type, False
        ts = r.param("transfer-syntax")
        if part in ("application/octet-stream", "*/*", "application/*"):
            if stored == DeflatedExplicitVRLittleEndian and ts in ("*", stored):
                ts = ExplicitVRLittleEndian  # deflate applies to the data set; frames are native
            if ts == "*" or (ts is not None and ts == stored):
                return "stored", f"application/octet-stream; transfer-syntax={stored}", is_multipart
            if ts is None or ts in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
                return (
                    "decoded",
                    f"application/octet-stream; transfer-syntax={ExplicitVRLittleEndian}",
                    is_multipart,
                )
            continue
        if (part in compressed_types or (part == "image/*" and compressed_types)) and ts in (
            None,
            "*",
            stored,
        ):
            media = compressed_types[0] if part == "image/*" else part
            return "stored", f"{media}; transfer-syntax={stored}", is_multipart
    return None


def parse_frame_list(text: str, frames: int) -> list[int]:
    if not _FRAME_LIST.match(text):
        raise InvalidRequest("frame list must be comma-separated frame numbers")
    numbers = [int(n) for n in text.split(",")]
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise InvalidRequest("too many frames in one request")
    if any(n < 1 for n in numbers):
        raise InvalidRequest("frame numbers start at 1")
    if any(n > frames for n in numbers):
        raise NotFound(f"the instance has {frames} frames")
    return numbers


@router.get("/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", summary="Retrieve frames")
def retrieve_frames(
    study: str, series: str, sop: str, frames: str, request: Request, ctx: ReadContext
) -> Response:
    row = _one(ctx, study, series, sop)
    info = pixel_info(ctx, row.instance)
    numbers = parse_frame_list(frames, info.frames)
    plan = _frame_plan(_accepts(request), info.transfer_syntax)
    if plan is None:
        raise NotAcceptable("the frames cannot be served in any accepted media type")
    mode, content_type, is_multipart = plan
    data = stored_frames(info, numbers) if mode == "stored" else decoded_frames(info, numbers)
    if not is_multipart:
        if len(data) != 1:
            raise NotAcceptable("several frames need a multipart/related response")
        return Response(data[0], media_type=content_type)
    boundary = multipart.new_boundary()
    part_type = content_type.split(";")[0]
    return Response(
        multipart.encode(((d, content_type) for d in data), boundary),
        media_type=multipart.multipart_content_type(part_type, boundary),
    )


# --------------------------------------------------------------------------------- bulk data
def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """Inclusive (start, end) of a single `bytes=` range; None when absent. 416 when unsatisfiable."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise RangeNotSatisfiable("only a single bytes range is supported", size)
    first, sep, last = spec.strip().partition("-")
    try:
        if not sep:
            raise ValueError
        if first == "":
            n = int(last)
            start, end = max(0, size - n), size - 1
        else:
            start = int(first)
            end = int(last) if last else size - 1
    except ValueError:
        raise RangeNotSatisfiable("malformed Range", size) from None
    end = min(end, size - 1)
    if start > end or start >= size:
        raise RangeNotSatisfiable("range not satisfiable", size)
    return start, end


def _find_element(ds: Any, tag: int) -> Any:
    if tag in ds:
        return ds[tag]
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                found = _find_element(item, tag)
                if found is not None:
                    return found
    return None


def _bulk_bytes(ctx: Context, instance: Instance, tag: int) -> tuple[bytes, str]:
    key, ts = instance.object_key, instance.TransferSyntaxUID
    if tag == 0x7FE00010 and instance.pixel_offset is not None and instance.pixel_length is not None:
        return ctx.archive.store.read_range(key, instance.pixel_offset, instance.pixel_length), ts
    with ctx.archive.store.open(key) as f:
        ds = dcmread(f)
    elem = _find_element(ds, tag)
    if elem is None or elem.value is None:
        raise NotFound("no such bulk data")
    value = elem.value
    if isinstance(value, bytes):
        return value, ts
    if isinstance(value, str):
        return value.encode(), ts
    raise NotFound("no such bulk data")


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/bulk/{tag}", summary="Retrieve bulk data (BulkDataURI)"
)
def retrieve_bulk(
    study: str, series: str, sop: str, tag: str, request: Request, ctx: ReadContext
) -> Response:
    if not _BULK_TAG.match(tag):
        raise InvalidRequest("bulk data is addressed by an 8-digit hex tag")
    row = _one(ctx, study, series, sop)
    data, ts = _bulk_bytes(ctx, row.instance, int(tag, 16))
    content_type = (
        f"application/octet-stream; transfer-syntax={ts}"
        if int(tag, 16) == 0x7FE00010
        else ("application/octet-stream")
    )
    ranges = _accepts(request)
    wants_multipart = False
    for r in ranges:
        if r.type == "multipart/related" and (r.param("type") or "application/octet-stream") in (
            "application/octet-stream",
            "*/*",
        ):
            wants_multipart = True
            break
        if r.type in ("application/octet-stream", "*/*", "application/*"):
            break
    else:
        raise NotAcceptable("bulk data is available as application/octet-stream")
    status, headers = 200, {"Accept-Ranges": "bytes"}
    byte_range = _byte_range(request.headers.get("range"), len(data))
    if byte_range is not None:
        start, end = byte_range
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        data = data[start : end + 1]
        status = 206
    if wants_multipart:
        boundary = multipart.new_boundary()
        return Response(
            multipart.encode([(data, content_type)], boundary),
            status_code=status,
            media_type=multipart.multipart_content_type("application/octet-stream", boundary),
            headers=headers,
        )
    return Response(data, status_code=status, media_type=content_type, headers=headers)
