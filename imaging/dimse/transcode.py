"""Transcoding on retrieve: a stored object re-encoded in a transfer syntax the peer accepted, when the peer
did not accept the one it is stored in.

Which syntax (`targets`), in order: the stored one (sent as stored, never through here); an uncompressed one
(Explicit VR Little Endian, Implicit VR Little Endian, Deflated, Explicit VR Big Endian), decompressing or
converting the byte order as needed; else a lossless compressed one for which an encoder is installed
(JPEG 2000 lossless, JPEG-LS lossless, RLE lossless). Never a lossy one: a peer that asked for uncompressed
pixels must not receive pixels degraded on our side. A data set without pixel data is encoded the same way in
every encapsulated syntax (explicit VR little endian), so any accepted syntax carries it.

`transcode` raises CannotTranscode when no decoder or encoder can produce the target (say, a 12-bit JPEG
Extended image that no installed decoder reads): the caller tries the next target, then fails the
sub-operation.
"""

from __future__ import annotations

from collections.abc import Iterable
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr, dcmwrite
from pydicom.pixels.encoders import JPEG2000LosslessEncoder, JPEGLSLosslessEncoder, RLELosslessEncoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

# Uncompressed syntaxes, most faithful first (explicit VRs kept, then implicit, then the retired big endian).
NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian)
# Lossless compressed syntaxes we can encode, best compression first.
LOSSLESS_ENCODERS = (JPEG2000LosslessEncoder, JPEGLSLosslessEncoder, RLELosslessEncoder)
# Bytes per swapped unit of each bulk VR whose value pydicom keeps as raw bytes (PS3.5 7.3).
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


class CannotTranscode(Exception):
    """This object cannot be produced in that transfer syntax here (no decoder or encoder for it)."""


def lossless_encodable() -> tuple[UID, ...]:
    return tuple(encoder.UID for encoder in LOSSLESS_ENCODERS if encoder.is_available)


def targets(stored: str, accepted: Iterable[str], *, has_pixels: bool) -> list[str]:
    """The accepted syntaxes to try for an object stored in `stored`, best first (`stored` itself when
    accepted: the caller sends the stored bytes)."""
    offered = list(dict.fromkeys(str(ts) for ts in accepted))
    if stored in offered:
        return [stored]
    chosen = [str(ts) for ts in NATIVE if str(ts) in offered]
    if has_pixels:
        chosen += [str(ts) for ts in lossless_encodable() if str(ts) in offered]
    else:
        # Without pixel data every encapsulated syntax encodes the data set as explicit VR little endian.
        chosen += [ts for ts in offered if UID(ts).is_encapsulated]
    return chosen


def transcode(data: bytes, target: str) -> bytes:
    """The Part 10 stream `data` re-encoded in `target`, pixel values unchanged (lossy stored pixels are
    decompressed as they are: their Lossy Image Compression attributes stay)."""
    try:
        ds = dcmread(BytesIO(data))
        return _encode(ds, UID(target))
    except CannotTranscode:
        raise
    except Exception as exc:  # a codec's refusal, a decoder missing: the type only (values may be PHI)
        raise CannotTranscode(f"{UID(target).name}: {type(exc).__name__}") from None


def _encode(ds: Dataset, target: UID) -> bytes:
    source = UID(ds.file_meta.TransferSyntaxUID)
    pixels = "PixelData" in ds
    if pixels and source.is_encapsulated:
        ds.decompress(generate_instance_uid=False)  # → Explicit VR Little Endian, native pixels
        source = ExplicitVRLittleEndian
    if target.is_encapsulated and pixels:
        if target not in lossless_encodable():
            raise CannotTranscode(f"no encoder for {target.name}")
        if not source.is_little_endian:
            _swap_bulk(ds, little_endian_source=False)
        ds.compress(target, generate_instance_uid=False)
    else:
        if source.is_little_endian != target.is_little_endian:
            _swap_bulk(ds, little_endian_source=source.is_little_endian)
        ds.file_meta.TransferSyntaxUID = target
    buffer = BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


def _swap_bulk(ds: Dataset, *, little_endian_source: bool) -> None:
    """Reverse the byte order of every raw multi-byte bulk value (OW, OF, OL, OD, OV), in sequences too:
    pydicom converts every other value when it writes, but keeps these as the bytes it read."""
    correct_ambiguous_vr(ds, little_endian_source)
    for element in ds:
        if element.VR == "SQ":
            for item in element.value or []:
                _swap_bulk(item, little_endian_source=little_endian_source)
            continue
        width = _SWAP_WIDTH.get(str(element.VR))
        if width and isinstance(element.value, bytes | bytearray) and element.value:
            element.value = _swapped(bytes(element.value), width)


def _swapped(value: bytes, width: int) -> bytes:
    if len(value) % width:
        raise CannotTranscode("bulk value length is not a multiple of its unit")
    view = memoryview(value).cast("B")
    out = bytearray(len(value))
    for i in range(width):
        out[i::width] = view[width - 1 - i :: width]
    return bytes(out)
