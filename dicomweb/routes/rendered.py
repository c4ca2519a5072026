"""Rendered resources and thumbnails (PS3.18 10.4.1.1.3 / 10.7, consumer-ready JPEG or PNG).

Query parameters: `window=center,width[,linear|linear-exact|sigmoid]`, `viewport=vw,vh[,sx,sy,sw,sh]`,
`quality=1..100`. Without a window the instance's own WindowCenter/Width is used, else its value range.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from PIL import Image
from pydicom.pixels import pixel_array
from sqlalchemy import select

from dicomweb import multipart
from dicomweb.deps import Context, ReadContext
from dicomweb.dicom_json import cached_dict
from dicomweb.errors import NotAcceptable
from dicomweb.pixels import CannotDecode
from dicomweb.routes.wado import Row, check_uids, find_instances, parse_frame_list, pixel_info
from imaging.errors import InvalidRequest, NotFound
from imaging.index.schema import Instance, Series, Study

router = APIRouter(tags=["Rendered"])
THUMBNAIL_SIZE = 128
MAX_VIEWPORT = 4096
MAX_CROP = 1 << 20  # crop coordinates beyond this cannot name pixels of any image
# The most pixels one rendered answer may hold (all its images together): a study rendered at full size, or
# a crop blown up per instance, must not build gigabytes of images in memory.
MAX_RENDERED_PIXELS = 64 * 1024 * 1024


class RenderParams:
    def __init__(self, request: Request, *, thumbnail: bool) -> None:
        q = request.query_params
        self.window: tuple[float, float, str] | None = None
        self.viewport: tuple[int, int, tuple[float, float, float, float] | None] | None = None
        self.quality = 90
        self.media = _negotiate(request)
        if "window" in q:
            parts = [p.strip() for p in q["window"].split(",")]
            if len(parts) not in (2, 3):
                raise InvalidRequest("window must be center,width[,function]")
            try:
                center, width = float(parts[0]), float(parts[1])
            except ValueError:
                raise InvalidRequest("window center and width must be numbers") from None
            function = (parts[2] if len(parts) == 3 else "linear").lower()
            if function not in ("linear", "linear-exact", "sigmoid") or not (
                math.isfinite(center) and math.isfinite(width)
            ):
                raise InvalidRequest("window function must be linear, linear-exact or sigmoid")
            if width <= 0 or (function == "linear" and width < 1):
                raise InvalidRequest("window width out of range")
            self.window = (center, width, function)
        if "viewport" in q:
            parts = [p.strip() for p in q["viewport"].split(",")]
            try:
                if len(parts) not in (2, 6):
                    raise ValueError
                vw, vh = int(parts[0]), int(parts[1])
                crop = tuple(float(p) for p in parts[2:]) if len(parts) == 6 else None
            except ValueError:
                raise InvalidRequest("viewport must be vw,vh[,sx,sy,sw,sh]") from None
            if not (0 < vw <= MAX_VIEWPORT and 0 < vh <= MAX_VIEWPORT):
                raise InvalidRequest(f"viewport sizes must be 1..{MAX_VIEWPORT}")
            if crop is not None:
                if not all(math.isfinite(c) and abs(c) <= MAX_CROP for c in crop):
                    raise InvalidRequest(f"viewport crop values must be numbers within ±{MAX_CROP}")
                if int(crop[2]) == 0 or int(crop[3]) == 0:
                    raise InvalidRequest("viewport crop width and height must not be 0")
            self.viewport = (vw, vh, crop)  # type: ignore[assignment]
        elif thumbnail:
            self.viewport = (THUMBNAIL_SIZE, THUMBNAIL_SIZE, None)
        if "quality" in q:
            try:
                self.quality = int(q["quality"])
            except ValueError:
                raise InvalidRequest("quality must be 1..100") from None
            if not 1 <= self.quality <= 100:
                raise InvalidRequest("quality must be 1..100")


def _negotiate(request: Request) -> str:
    for r in multipart.parse_accept(request.headers.get("accept")):
        media = r.type
        if media == "multipart/related":
            media = (r.param("type") or "image/jpeg").lower()
        if media in ("image/jpeg", "image/png"):
            return media
        if media in ("*/*", "image/*"):
            return "image/jpeg"
    raise NotAcceptable("rendered images are available as image/jpeg or image/png")


def _first(cached: dict[str, Any], tag: str) -> float | None:
    value = cached.get(tag, {}).get("Value")
    try:
        return float(value[0]) if value else None
    except (TypeError, ValueError):
        return None


def _to_uint8(
    arr: np.ndarray[Any, Any], cached: dict[str, Any], params: RenderParams
) -> np.ndarray[Any, Any]:
    photometric = (cached.get("00280004", {}).get("Value") or ["MONOCHROME2"])[0]
    if arr.ndim == 3:  # colour (decoded to RGB)
        if arr.dtype != np.uint8:
            top = float(arr.max()) or 1.0
            arr = (arr.astype(np.float32) * (255.0 / top)).clip(0, 255)
        return arr.astype(np.uint8)
    data = arr.astype(np.float64)
    slope = _first(cached, "00281053") or 1.0
    intercept = _first(cached, "00281052") or 0.0
    data = data * slope + intercept
    if params.window is not None:
        center, width, function = params.window
    else:
        wc, ww = _first(cached, "00281050"), _first(cached, "00281051")
        if wc is not None and ww is not None and ww > 0:
            center, width, function = wc, ww, "linear"
        else:
            lo, hi = float(data.min()), float(data.max())
            center, width, function = (lo + hi) / 2, max(hi - lo, 1.0), "linear-exact"
    if function == "sigmoid":
        out = 255.0 / (1.0 + np.exp(-4.0 * (data - center) / width))
    elif function == "linear-exact":
        out = ((data - (center - width / 2)) / width) * 255.0
    else:  # PS3.3 C.11.2.1.2.1
        out = ((data - (center - 0.5)) / (width - 1) + 0.5) * 255.0
    out = out.clip(0, 255)
    if photometric == "MONOCHROME1":
        out = 255.0 - out
    return out.astype(np.uint8)


def render_frame(ctx: Context, instance: Instance, number: int, params: RenderParams) -> bytes:
    info = pixel_info(ctx, instance)
    if not 1 <= number <= info.frames:
        raise NotFound(f"the instance has {info.frames} frames")
    try:
        with info.open() as f:  # NotFound when the object is missing from storage
            arr = pixel_array(f, index=number - 1)
    except NotFound:
        raise
    except Exception as exc:
        raise CannotDecode(f"cannot decode {info.transfer_syntax}: {type(exc).__name__}") from None
    image = Image.fromarray(_to_uint8(arr, cached_dict(instance.metadata_json), params))
    if params.viewport is not None:
        vw, vh, crop = params.viewport
        if crop is not None:
            box = crop_box(crop, image.width, image.height)
            if box is None:
                raise InvalidRequest("the viewport crop lies outside the image")
            sw, sh = crop[2], crop[3]
            image = image.crop(box)
            if sw < 0:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if sh < 0:
                image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        scale = min(vw / image.width, vh / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if params.media == "image/png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=params.quality)
    return buffer.getvalue()


def crop_box(
    crop: tuple[float, float, float, float], width: int, height: int
) -> tuple[int, int, int, int] | None:
    """The crop region (sx, sy, sw, sh; negative sizes flip) clipped to the image; None when empty."""
    sx, sy, sw, sh = crop
    left, right = sorted((sx, sx + sw))
    top, bottom = sorted((sy, sy + sh))
    box = (max(0, int(left)), max(0, int(top)), min(width, int(right)), min(height, int(bottom)))
    return box if box[0] < box[2] and box[1] < box[3] else None


def output_pixels(rows: int | None, columns: int | None, frames: int, params: RenderParams) -> int:
    """An upper bound of the pixels the rendering of `frames` frames of an image holds."""
    if params.viewport is not None:
        return params.viewport[0] * params.viewport[1] * frames
    return (rows or 0) * (columns or 0) * frames


def check_budget(pixels: int) -> None:
    if pixels > MAX_RENDERED_PIXELS:
        raise InvalidRequest(
            f"the rendered answer would hold more than {MAX_RENDERED_PIXELS} pixels: "
            "ask for a smaller viewport, or for fewer images"
        )


def _image_response(data: list[bytes], media: str, force_multipart: bool = False) -> Response:
    if len(data) == 1 and not force_multipart:
        return Response(data[0], media_type=media)
    boundary = multipart.new_boundary()
    return Response(
        multipart.encode(((d, media) for d in data), boundary),
        media_type=multipart.multipart_content_type(media, boundary),
    )


def _instance(ctx: Context, study: str, series: str, sop: str) -> Row:
    check_uids(study=study, series=series, instance=sop)
    with ctx.archive.db.read() as session:
        return find_instances(session, ctx, study, series, sop)[0]


def _representative(ctx: Context, study: str, series: str | None) -> Instance:
    """The middle image of the (first) series: what a thumbnail shows."""
    check_uids(study=study, series=series)
    with ctx.archive.db.read() as session:
        stmt = (
            select(Instance)
            .join(Series, Series.series_pk == Instance.series_pk)
            .join(Study, Study.study_pk == Series.study_pk)
            .where(
                Study.partition == ctx.partition, Study.StudyInstanceUID == study, Instance.Rows.is_not(None)
            )
        )
        if series is not None:
            stmt = stmt.where(Series.SeriesInstanceUID == series)
        else:
            first = session.scalar(
                select(Series.series_pk)
                .join(Study, Study.study_pk == Series.study_pk)
                .join(Instance, Instance.series_pk == Series.series_pk)
                .where(
                    Study.partition == ctx.partition,
                    Study.StudyInstanceUID == study,
                    Instance.Rows.is_not(None),
                )
                .order_by(Series.SeriesNumber, Series.series_pk)
                .limit(1)
            )
            stmt = stmt.where(Instance.series_pk == first)
        images = session.scalars(stmt.order_by(Instance.InstanceNumber, Instance.instance_pk)).all()
    if not images:
        raise NotFound("nothing to render")
    return images[len(images) // 2]


# ------------------------------------------------------------------------------------------- routes
@router.get("/studies/{study}/series/{series}/instances/{sop}/rendered", summary="Rendered instance")
def rendered_instance(study: str, series: str, sop: str, request: Request, ctx: ReadContext) -> Response:
    params = RenderParams(request, thumbnail=False)
    row = _instance(ctx, study, series, sop)
    check_budget(output_pixels(row.instance.Rows, row.instance.Columns, 1, params))
    return _image_response([render_frame(ctx, row.instance, 1, params)], params.media)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered", summary="Rendered frames"
)
def rendered_frames(
    study: str, series: str, sop: str, frames: str, request: Request, ctx: ReadContext
) -> Response:
    params = RenderParams(request, thumbnail=False)
    row = _instance(ctx, study, series, sop)
    numbers = parse_frame_list(frames, row.instance.NumberOfFrames or 1)[:100]
    check_budget(output_pixels(row.instance.Rows, row.instance.Columns, len(numbers), params))
    return _image_response([render_frame(ctx, row.instance, n, params) for n in numbers], params.media)


@router.get("/studies/{study}/series/{series}/rendered", summary="Rendered series (one part per image)")
def rendered_series(study: str, series: str, request: Request, ctx: ReadContext) -> Response:
    params = RenderParams(request, thumbnail=False)
    check_uids(study=study, series=series)
    with ctx.archive.db.read() as session:
        rows = [r for r in find_instances(session, ctx, study, series) if r.instance.Rows]
    if not rows:
        raise NotFound("nothing to render")
    rows = rows[:1000]
    check_budget(sum(output_pixels(r.instance.Rows, r.instance.Columns, 1, params) for r in rows))
    return _image_response([render_frame(ctx, r.instance, 1, params) for r in rows], params.media, True)


@router.get("/studies/{study}/rendered", summary="Rendered study (one part per image)")
def rendered_study(study: str, request: Request, ctx: ReadContext) -> Response:
    params = RenderParams(request, thumbnail=False)
    check_uids(study=study)
    with ctx.archive.db.read() as session:
        rows = [r for r in find_instances(session, ctx, study) if r.instance.Rows]
    if not rows:
        raise NotFound("nothing to render")
    rows = rows[:1000]
    check_budget(sum(output_pixels(r.instance.Rows, r.instance.Columns, 1, params) for r in rows))
    return _image_response([render_frame(ctx, r.instance, 1, params) for r in rows], params.media, True)


@router.get("/studies/{study}/thumbnail", summary="Study thumbnail")
def thumbnail_study(study: str, request: Request, ctx: ReadContext) -> Response:
    params = RenderParams(request, thumbnail=True)
    return _image_response([render_frame(ctx, _representative(ctx, study, None), 1, params)], params.media)


@router.get("/studies/{study}/series/{series}/thumbnail", summary="Series thumbnail")
def thumbnail_series(study: str, series: str, request: Request, ctx: ReadContext) -> Response:
    params = RenderParams(request, thumbnail=True)
    return _image_response([render_frame(ctx, _representative(ctx, study, series), 1, params)], params.media)


@router.get("/studies/{study}/series/{series}/instances/{sop}/thumbnail", summary="Instance thumbnail")
def thumbnail_instance(study: str, series: str, sop: str, request: Request, ctx: ReadContext) -> Response:
    params = RenderParams(request, thumbnail=True)
    row = _instance(ctx, study, series, sop)
    return _image_response([render_frame(ctx, row.instance, 1, params)], params.media)


@router.get(
    "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail", summary="Frame thumbnail"
)
def thumbnail_frame(
    study: str, series: str, sop: str, frames: str, request: Request, ctx: ReadContext
) -> Response:
    params = RenderParams(request, thumbnail=True)
    row = _instance(ctx, study, series, sop)
    numbers = parse_frame_list(frames, row.instance.NumberOfFrames or 1)
    return _image_response([render_frame(ctx, row.instance, numbers[0], params)], params.media)
