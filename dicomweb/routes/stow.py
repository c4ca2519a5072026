"""STOW-RS (PS3.18 10.5): POST /studies and /studies/{study}.

The body is parsed as it arrives and each part spooled to a temporary file (memory does not grow with the
upload); only a complete, well-formed body is ingested, in groups of parts, through the single ingest path:
one sync and one index transaction per group (Ingestor.ingest_batch). A part of any size is parsed and stored
from the spool file, never held in memory whole.
A body over `max_upload_bytes` is refused with 413, a malformed one with 400, one that stalls for
`http_body_timeout` seconds with 408, before anything is stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from fastapi import APIRouter, Request, Response
from pydicom import dcmread
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from dicomweb import auditing, multipart
from dicomweb.deps import Context, StoreContext
from dicomweb.dicom_json import MEDIA_TYPE, dumps
from dicomweb.errors import PayloadTooLarge, RequestTimeout, UnsupportedMediaType
from imaging.errors import ArchiveError, InvalidRequest, ProcessingFailure
from imaging.index.extract import valid_uid
from imaging.ingest import Expected, IngestResult
from imaging.storage.base import Source

log = logging.getLogger(__name__)
router = APIRouter(tags=["STOW-RS"])

# PS3.18 Table 10.5.3-2 / PS3.4 Annex B status codes used here.
FAILURE_PROCESSING = 0x0110
FAILURE_CANNOT_UNDERSTAND = 0xC000
FAILURE_MISMATCH = 0xA900
WARNING_ELEMENTS_DISCARDED = 0xB006
WARNING_DOES_NOT_MATCH = 0xB007
# Bytes of an oversized body read and discarded before answering 413, so that a client still sending
# gets the answer instead of a reset connection.
DRAIN_LIMIT = 8 * 1024 * 1024
DRAIN_TIMEOUT = 5.0
# The parts of a request are ingested in groups: each group's bytes made durable by one sync and its rows
# written by one index transaction (Ingestor.ingest_batch), Success for each part only after both.
BATCH_PARTS = 64
BATCH_BYTES = 64 * 1024 * 1024
# Parts larger than this are parsed and stored from the spool file, never read into memory whole.
LARGE_PART = 8 * 1024 * 1024
PREAMBLE = b"\x00" * 128 + b"DICM"


@dataclass
class Outcome:
    sop_class: str = ""
    sop_instance: str = ""
    study: str = ""
    series: str = ""
    failure: int | None = None
    warnings: list[str] = field(default_factory=list)


def _request_body_type(request: Request) -> tuple[str, str | None]:
    """('multipart', boundary) or ('single', None); raises 415/400 on unsupported or malformed types."""
    header = request.headers.get("content-type")
    if not header:
        raise UnsupportedMediaType('Content-Type is required: multipart/related; type="application/dicom"')
    media = multipart.parse_media_type(header)
    if media.type == "application/dicom":
        return "single", None
    if media.type != "multipart/related":
        raise UnsupportedMediaType(f"unsupported media type {media.type[:64]}; use multipart/related")
    part_type = (media.param("type") or "").lower()
    if not part_type:
        raise InvalidRequest("multipart/related needs a type parameter (application/dicom)")
    if part_type != "application/dicom":
        raise UnsupportedMediaType(
            f"unsupported part type {part_type[:64]}; this server stores application/dicom"
        )
    boundary = media.param("boundary")
    if not boundary:
        raise InvalidRequest("multipart/related needs a boundary parameter")
    if len(boundary) > multipart.MAX_BOUNDARY:
        raise InvalidRequest("boundary parameter too long")
    return "multipart", boundary


async def _chunks(request: Request, timeout: float) -> AsyncIterator[bytes]:
    """The request body as it arrives; RequestTimeout when the client sends nothing for `timeout` seconds
    (a client that declares 100 MB and stops must not hold a connection and a spool file for ever), and
    InvalidRequest when it goes away mid-body (nothing is stored then)."""
    stream = request.stream()
    while True:
        try:
            chunk = await asyncio.wait_for(anext(stream), timeout)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise RequestTimeout(f"no request body data for {timeout:g} seconds") from None
        except ClientDisconnect:
            raise InvalidRequest("the client disconnected before the body was complete") from None
        yield chunk


async def _drain(request: Request, already: int) -> None:
    read = already
    try:
        async for chunk in _chunks(request, DRAIN_TIMEOUT):
            read += len(chunk)
            if read > DRAIN_LIMIT:
                break
    except Exception:
        pass


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")


async def _receive_parts(request: Request, ctx: Context) -> tuple[list[multipart.Part], Any]:
    """The body's parts and the spool file holding their payloads (the caller closes it)."""
    kind, boundary = _request_body_type(request)
    limit = ctx.archive.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_large = int(declared) > limit
        except ValueError:
            raise InvalidRequest("invalid Content-Length") from None
        if too_large:
            await _drain(request, 0)
            raise _too_large(limit)
    spool_dir = ctx.archive.settings.data_dir / "tmp"
    spool_dir.mkdir(parents=True, exist_ok=True)
    received = 0
    if kind == "single":
        parser = None
        spool: Any = multipart.tempfile.SpooledTemporaryFile(
            max_size=multipart.SPOOL_IN_MEMORY, dir=str(spool_dir)
        )
        single = multipart.Part({"content-type": "application/dicom"}, spool)
    else:
        assert boundary is not None
        parser = multipart.MultipartParser(boundary, spool_dir=str(spool_dir))
        spool = parser.spool
    try:
        async for chunk in _chunks(request, ctx.archive.settings.http_body_timeout):
            received += len(chunk)
            if received > limit:
                await _drain(request, received)
                raise _too_large(limit)
            if parser is not None:
                parser.feed(chunk)
            else:
                single.write(chunk)
        if parser is None:
            if single.size == 0:
                raise InvalidRequest("empty request body")
            return [single], spool
        parts = parser.finish()
        if not parts:
            raise InvalidRequest("the multipart body has no parts")
        return parts, spool
    except multipart.MultipartError as exc:
        spool.close()
        raise InvalidRequest(f"malformed multipart body: {exc}") from None
    except BaseException:
        spool.close()
        raise


def _identify(data: Source) -> tuple[str, str, str]:
    """(SOPClassUID, SOPInstanceUID, StudyInstanceUID) read without the pixel data; blanks if unreadable."""
    try:
        if not isinstance(data, bytes):
            data.seek(0)
        ds = dcmread(
            BytesIO(data) if isinstance(data, bytes) else data,
            stop_before_pixels=True,
            specific_tags=[0x00080016, 0x00080018, 0x0020000D],
        )
        return (
            str(ds.get("SOPClassUID", "")),
            str(ds.get("SOPInstanceUID", "")),
            str(ds.get("StudyInstanceUID", "")),
        )
    except Exception:
        return "", "", ""


def _failed(data: Source, status: int) -> Outcome:
    """The UIDs a failure is reported under, read only now: on success the ingest result has them."""
    sop_class, sop_instance, _ = _identify(data)
    outcome = Outcome(
        sop_class if valid_uid(sop_class) else "", sop_instance if valid_uid(sop_instance) else ""
    )
    outcome.failure = status
    return outcome


def _source(part: multipart.Part) -> Source:
    """The part's Part 10 stream: bytes, or (a large part) a file read from the spool by position, so that
    an object of any size is parsed and stored without being held in memory. A stream without its
    preamble (pydicom.dcmwrite's default, as dicomweb-client sends) is stored with the 128-byte preamble
    and "DICM" the file format requires; the rest as received."""
    head = part.file_head(132)
    prefix = PREAMBLE if head[128:132] != b"DICM" and head[:2] == b"\x02\x00" else b""
    if part.size > LARGE_PART:
        return part.open(prefix)
    return prefix + part.read()


def _batches(parts: list[multipart.Part]) -> Iterator[list[multipart.Part]]:
    """Consecutive parts, at most BATCH_PARTS of them or BATCH_BYTES together (a large part goes alone)."""
    batch: list[multipart.Part] = []
    size = 0
    for part in parts:
        if batch and (len(batch) >= BATCH_PARTS or size + part.size > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(part)
        size += part.size
    if batch:
        yield batch


def _store_batch(ctx: Context, parts: list[multipart.Part], study: str | None) -> list[Outcome]:
    """One group commit for the batch (one sync, one index transaction); each part its own outcome."""
    outcomes: list[Outcome | None] = [None] * len(parts)
    items: list[tuple[int, Source]] = []
    for index, part in enumerate(parts):
        source = _source(part)
        if multipart.parse_media_type(part.content_type or "application/dicom").type != "application/dicom":
            outcomes[index] = _failed(source, FAILURE_CANNOT_UNDERSTAND)
        else:
            items.append((index, source))
    if items:
        # A project's STOW root de-identifies on receive; an instance of another study than the URL's is a
        # mismatch (PS3.18), refused by the receive service like any other difference from the request.
        try:
            results: list[IngestResult | ArchiveError] = ctx.archive.receiver.receive_batch(
                [(source, Expected(StudyInstanceUID=study)) for _, source in items],
                source=f"stow:{ctx.principal.user}",
                partition=ctx.partition,
            )
        except ArchiveError as exc:  # the batch as a whole (storage full)
            results = [exc] * len(items)
        except Exception:
            log.exception("STOW batch failed")
            results = [ProcessingFailure("processing failure")] * len(items)
        for (index, source), result in zip(items, results, strict=True):
            if isinstance(result, ArchiveError):
                outcomes[index] = _failed(source, result.dimse_status or FAILURE_PROCESSING)
            else:
                outcome = Outcome(result.sop_class_uid, result.sop_instance_uid)
                outcome.study = result.study_instance_uid
                outcome.series = result.series_instance_uid
                outcome.warnings = list(result.warnings)
                outcomes[index] = outcome
    return [o for o in outcomes if o is not None]


def _warning_reason(warnings: list[str]) -> int:
    return WARNING_ELEMENTS_DISCARDED if any("not indexed" in w for w in warnings) else WARNING_DOES_NOT_MATCH


def _response(ctx: Context, outcomes: list[Outcome], study: str | None) -> Response:
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    body: dict[str, Any] = {}
    studies = {o.study for o in stored}
    if study is not None:
        body["00081190"] = {"vr": "UR", "Value": [ctx.study_url(study)]}
    elif len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [ctx.study_url(next(iter(studies)))]}
    if failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": {"vr": "UI", "Value": [o.sop_class]} if o.sop_class else {"vr": "UI"},
                    "00081155": {"vr": "UI", "Value": [o.sop_instance]} if o.sop_instance else {"vr": "UI"},
                    "00081197": {"vr": "US", "Value": [o.failure]},
                }
                for o in failed
            ],
        }
    if stored:
        items = []
        for o in stored:
            item: dict[str, Any] = {
                "00081150": {"vr": "UI", "Value": [o.sop_class]},
                "00081155": {"vr": "UI", "Value": [o.sop_instance]},
                "00081190": {"vr": "UR", "Value": [ctx.instance_url(o.study, o.series, o.sop_instance)]},
            }
            if o.warnings:
                item["00081196"] = {"vr": "US", "Value": [_warning_reason(o.warnings)]}
            items.append(item)
        body["00081199"] = {"vr": "SQ", "Value": items}
    if not stored:
        status = 409
    elif failed or any(o.warnings for o in stored):
        status = 202
    else:
        status = 200
    return Response(dumps(dict(sorted(body.items()))), status_code=status, media_type=MEDIA_TYPE)


async def store(request: Request, ctx: Context, study: str | None) -> Response:
    if study is not None and not valid_uid(study):
        raise InvalidRequest("invalid study UID")
    parts, spool = await _receive_parts(request, ctx)

    def work() -> list[Outcome]:
        try:
            return [outcome for batch in _batches(parts) for outcome in _store_batch(ctx, batch, study)]
        finally:
            spool.close()

    outcomes = await run_in_threadpool(work)
    stored = sum(1 for o in outcomes if o.failure is None)
    studies = sorted({o.study for o in outcomes if o.failure is None})
    auditing.add_detail(
        request,
        f"{stored} of {len(outcomes)} instances stored"
        + (f" in studies {', '.join(studies[:20])}" if len(studies) > 1 else ""),
        study_uid=studies[0] if len(studies) == 1 else "",
    )
    return _response(ctx, outcomes, study)


@router.post("/studies", summary="Store instances")
async def store_instances(request: Request, ctx: StoreContext) -> Response:
    return await store(request, ctx, None)


@router.post("/studies/{study}", summary="Store instances of a study")
async def store_study_instances(study: str, request: Request, ctx: StoreContext) -> Response:
    return await store(request, ctx, study)
