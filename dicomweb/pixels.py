"""Pixel data access for WADO-RS: frames read from the stored PixelData byte range (native: seek to the
frame; encapsulated: walk the item headers), decoding to Explicit VR Little Endian with pydicom's
decoders (pylibjpeg, pyjpegls, pillow), and instance transcoding between transfer syntaxes."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from io import BytesIO
from typing import Any, BinaryIO

import numpy as np
from pydicom import dcmread, dcmwrite
from pydicom.encaps import get_frame
from pydicom.pixels import pack_bits, pixel_array
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from imaging.errors import ArchiveError
from imaging.storage import InstanceStore

NATIVE = {ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian}
UNCOMPRESSED = NATIVE | {DeflatedExplicitVRLittleEndian}
# Targets we produce when a client asks for a transfer syntax other than the stored one.
TRANSCODE_TARGETS = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}

# PS3.18 Table 8.7.3-2/-5: the media type of a compressed frame per transfer syntax.
FRAME_MEDIA_TYPES: dict[str, tuple[str, ...]] = {
    "1.2.840.10008.1.2.4.50": ("image/jpeg",),
    "1.2.840.10008.1.2.4.51": ("image/jpeg",),
    "1.2.840.10008.1.2.4.57": ("image/jpeg",),
    "1.2.840.10008.1.2.4.70": ("image/jpeg",),
    "1.2.840.10008.1.2.4.80": ("image/jls", "image/x-jls"),
    "1.2.840.10008.1.2.4.81": ("image/jls", "image/x-jls"),
    "1.2.840.10008.1.2.4.90": ("image/jp2",),
    "1.2.840.10008.1.2.4.91": ("image/jp2",),
    "1.2.840.10008.1.2.4.92": ("image/jpx",),
    "1.2.840.10008.1.2.4.93": ("image/jpx",),
    "1.2.840.10008.1.2.4.201": ("image/jphc",),
    "1.2.840.10008.1.2.4.202": ("image/jphc",),
    "1.2.840.10008.1.2.4.203": ("image/jphc",),
    "1.2.840.10008.1.2.5": ("image/dicom-rle", "image/x-dicom-rle"),
}

_ITEM = 0xFFFEE000
_SEQ_DELIM = 0xFFFEE0DD


class CannotDecode(ArchiveError):
    """The stored encoding cannot be converted to what the client asked for."""

    http_status = 406


@dataclass(frozen=True)
class PixelInfo:
    store: InstanceStore
    key: str  # the object, read through the store by key (ranges for frames)
    transfer_syntax: str
    rows: int
    columns: int
    samples: int
    bits_allocated: int
    frames: int
    offset: int | None
    length: int | None

    @property
    def frame_bytes(self) -> int | None:
        if self.bits_allocated % 8:
            return None  # bit-packed frames are not byte aligned
        return self.rows * self.columns * self.samples * self.bits_allocated // 8

    @property
    def encapsulated(self) -> bool:
        return self.transfer_syntax not in UNCOMPRESSED

    def open(self) -> BinaryIO:
        return self.store.open(self.key)


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise ArchiveError("stored pixel data is truncated")
    return data


def _fragments(f: BinaryIO, offset: int, length: int) -> tuple[bytes, list[tuple[int, int]]]:
    """(basic offset table, [(file offset, length) of each fragment]) by walking item headers."""
    end = offset + length
    pos = offset
    bot = b""
    fragments: list[tuple[int, int]] = []
    first = True
    while pos + 8 <= end:
        f.seek(pos)
        tag_group, tag_elem, item_len = struct.unpack("<HHI", _read_exact(f, 8))
        tag = (tag_group << 16) | tag_elem
        if tag == _SEQ_DELIM:
            break
        if tag != _ITEM or item_len == 0xFFFFFFFF:
            raise ArchiveError("malformed encapsulated pixel data")
        if first:
            bot = _read_exact(f, item_len) if item_len else b""
            first = False
        else:
            fragments.append((pos + 8, item_len))
        pos += 8 + item_len
    return bot, fragments


def stored_frames(info: PixelInfo, numbers: list[int]) -> list[bytes]:
    """Frames (1-based numbers) exactly as stored: native slices or the encapsulated frame bytes."""
    if info.offset is None or info.length is None:
        return [_frame_via_pydicom_raw(info, n) for n in numbers]
    with info.open() as f:
        if not info.encapsulated:
            size = info.frame_bytes
            if size is None:
                return [_frame_via_pydicom_raw(info, n) for n in numbers]
            out = []
            for n in numbers:
                f.seek(info.offset + (n - 1) * size)
                out.append(_read_exact(f, size))
            return out
        bot, fragments = _fragments(f, info.offset, info.length)
        if info.frames == 1:
            return [b"".join(_read_at(f, o, n) for o, n in fragments)]
        if bot:
            offsets = list(struct.unpack(f"<{len(bot) // 4}I", bot))
            if len(offsets) == info.frames:
                starts = [info.offset + 8 + len(bot) + o for o in offsets]  # after the BOT item
                out = []
                for n in numbers:
                    lo = starts[n - 1]
                    hi = starts[n] if n < len(starts) else None
                    parts = [(o, ln) for o, ln in fragments if o - 8 >= lo and (hi is None or o - 8 < hi)]
                    out.append(b"".join(_read_at(f, o, ln) for o, ln in parts))
                return out
        if len(fragments) == info.frames:
            return [_read_at(f, *fragments[n - 1]) for n in numbers]
        f.seek(info.offset)
        buffer = _read_exact(f, info.length)
    return [get_frame(buffer, n - 1, number_of_frames=info.frames) for n in numbers]


def _read_at(f: BinaryIO, offset: int, length: int) -> bytes:
    f.seek(offset)
    return _read_exact(f, length)


def _frame_via_pydicom_raw(info: PixelInfo, number: int) -> bytes:
    with info.open() as f:
        ds = dcmread(f)
    if info.encapsulated:
        return get_frame(ds.PixelData, number - 1, number_of_frames=info.frames)
    size = info.frame_bytes
    if size is not None:
        return bytes(ds.PixelData[(number - 1) * size : number * size])
    return _native_le(info, number)


def _native_le(info: PixelInfo, number: int) -> bytes:
    with info.open() as f:
        arr: np.ndarray[Any, Any] = pixel_array(f, index=number - 1, raw=True)
    if info.bits_allocated == 1:
        return bytes(pack_bits(arr))
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def decoded_frames(info: PixelInfo, numbers: list[int]) -> list[bytes]:
    """Frames as Explicit VR Little Endian native pixel data (compressed data decoded)."""
    if info.transfer_syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) and info.offset is not None:
        return stored_frames(info, numbers)
    if info.transfer_syntax == DeflatedExplicitVRLittleEndian:
        with info.open() as f:
            arr = dcmread(f).pixel_array
        frames = arr if info.frames > 1 else arr[np.newaxis]
        return [frames[n - 1].astype(arr.dtype.newbyteorder("<"), copy=False).tobytes() for n in numbers]
    if not info.encapsulated:  # big endian: pydicom reads and byte-swaps
        return [_native_le(info, n) for n in numbers]
    out = []
    for n in numbers:
        try:
            with info.open() as f:
                arr = pixel_array(f, index=n - 1)
        except Exception as exc:
            raise CannotDecode(f"cannot decode {info.transfer_syntax}: {type(exc).__name__}") from None
        out.append(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
    return out


def transcode(source: BinaryIO, stored: str, target: str) -> bytes:
    """The Part 10 object read from `source` re-encoded in `target` (Explicit or Implicit VR Little Endian)."""
    if target not in TRANSCODE_TARGETS:
        raise CannotDecode(f"cannot transcode to {target}")
    ds = dcmread(source)
    if stored not in UNCOMPRESSED:
        try:
            ds.decompress(generate_instance_uid=False)
        except Exception as exc:
            raise CannotDecode(f"cannot decode {stored}: {type(exc).__name__}") from None
    elif stored == ExplicitVRBigEndian and "PixelData" in ds:
        arr = ds.pixel_array
        bits = int(ds.BitsAllocated)
        if bits > 8:
            ds.PixelData = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
            ds["PixelData"].VR = "OW"
    ds.file_meta.TransferSyntaxUID = UID(target)
    buffer = BytesIO()
    if stored == ExplicitVRBigEndian:
        ds.preamble = ds.preamble or b"\x00" * 128
        dcmwrite(
            buffer, ds, implicit_vr=target == ImplicitVRLittleEndian, little_endian=True, force_encoding=True
        )
    else:
        dcmwrite(
            buffer,
            ds,
            implicit_vr=target == ImplicitVRLittleEndian,
            little_endian=True,
            enforce_file_format=True,
        )
    return buffer.getvalue()
