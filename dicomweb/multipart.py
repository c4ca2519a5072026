"""multipart/related (RFC 2387) for DICOMweb: media-type parameters (quoted or not), Accept negotiation,
an incremental parser for STOW bodies (parts spooled to temporary files, so memory does not grow with the
upload) and writers for multipart responses."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from imaging.storage.base import file_slice

# RFC 2046: the boundary is 1-70 characters; we also bound header blocks.
MAX_BOUNDARY = 70
MAX_PART_HEADERS = 16 * 1024
SPOOL_IN_MEMORY = 1024 * 1024
MAX_PARTS = 100_000  # parts in one body: each costs a little memory, whatever its size


class MultipartError(ValueError):
    """A malformed multipart body or media type (HTTP 400)."""


@dataclass(frozen=True)
class MediaType:
    type: str  # lower case, e.g. "multipart/related"
    params: dict[str, str] = field(default_factory=dict)  # names lower case, values unquoted
    q: float = 1.0

    def param(self, name: str) -> str | None:
        return self.params.get(name)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, current, quoted, escaped = [], [], False, False
    for ch in text:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            current.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            current.append(ch)
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def parse_media_type(text: str) -> MediaType:
    """`type/subtype; a=b; c="d"` → MediaType (parameter names lower-cased, values unquoted)."""
    pieces = _split_outside_quotes(text, ";")
    mtype = pieces[0].strip().lower()
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        name, sep, value = piece.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            continue
        value = _unquote(value)
        if name == "q":
            try:
                q = float(value)
            except ValueError:
                q = 0.0
        else:
            params[name] = value
    return MediaType(mtype, params, q)


def parse_accept(header: str | None) -> list[MediaType]:
    """Accept header → media ranges, best first (stable for equal q). Empty/absent → [*/*]."""
    if not header or not header.strip():
        return [MediaType("*/*")]
    ranges = [parse_media_type(p) for p in _split_outside_quotes(header, ",") if p.strip()]
    ranges = [r for r in ranges if r.q > 0]
    return sorted(ranges, key=lambda r: -r.q)


def new_boundary() -> str:
    return secrets.token_hex(16)


def multipart_content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def part_header(boundary: str, content_type: str, extra: dict[str, str] | None = None) -> bytes:
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("latin-1")


def encode(parts: Iterable[tuple[bytes, str]], boundary: str) -> bytes:
    """A complete multipart body from (payload, content type) pairs."""
    chunks: list[bytes] = []
    for payload, content_type in parts:
        chunks += [part_header(boundary, content_type), payload, b"\r\n"]
    chunks.append(closing(boundary))
    return b"".join(chunks)


def stream_parts(parts: Iterable[tuple[bytes | Iterable[bytes], str]], boundary: str) -> Iterator[bytes]:
    """A multipart body streamed from in-memory payloads or chunk iterators (objects read from storage)."""
    for source, content_type in parts:
        yield part_header(boundary, content_type)
        if isinstance(source, bytes):
            yield source
        else:
            yield from source
        yield b"\r\n"
    yield closing(boundary)


# ------------------------------------------------------------------------------------------- parsing
@dataclass
class Part:
    """One part: its headers and where its payload lies in the parser's spool file."""

    headers: dict[str, str]
    file: IO[bytes]
    offset: int = 0
    size: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def read(self) -> bytes:
        self.file.seek(self.offset)
        return self.file.read(self.size)

    def file_head(self, size: int) -> bytes:
        """The payload's first `size` bytes (or fewer)."""
        self.file.seek(self.offset)
        return self.file.read(min(size, self.size))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.file.seek(self.offset + self.size)
        self.file.write(data)
        self.size += len(data)

    def close(self) -> None:
        """Parts share their parser's spool file: MultipartParser.close() releases it."""

    def open(self, prefix: bytes = b"") -> BinaryIO:
        """The payload as a seekable file of its own (position 0 = `prefix`, then the payload's first
        byte), read from the spool file by position: parts are read this way concurrently, never whole."""
        return file_slice(self.file.fileno(), self.offset, self.size, prefix)


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line.strip():
            continue
        if line[0] in " \t" and headers:  # obsolete folding
            last = next(reversed(headers))
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MultipartError("malformed part header")
        headers[name.strip().lower()] = value.strip()
    return headers


class MultipartParser:
    """Incremental multipart parser: `feed()` chunks as they arrive, `finish()` at the end of the body.
    All payloads go to one spool file (in memory up to 1 MiB, then on disk), so memory stays bounded
    whatever the number and size of the parts."""

    def __init__(self, boundary: str, *, spool_dir: str | None = None) -> None:
        if not 0 < len(boundary) <= MAX_BOUNDARY or not boundary.isascii():
            raise MultipartError("invalid boundary")
        self.dash_boundary = b"--" + boundary.encode("ascii")
        self.delimiter = b"\r\n" + self.dash_boundary
        self.spool_dir = spool_dir
        self.parts: list[Part] = []
        self._buffer = bytearray()
        self._state = "preamble"
        self._current: Part | None = None
        self._end = 0
        self.spool: IO[bytes] = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_IN_MEMORY, dir=spool_dir
        )

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while self._step():
            pass

    def _step(self) -> bool:
        buf = self._buffer
        if self._state == "preamble":
            # The first delimiter may be at the very start (no CRLF before it).
            if buf.startswith(self.dash_boundary):
                del buf[: len(self.dash_boundary)]
                self._state = "after_delimiter"
                return True
            idx = buf.find(self.delimiter)
            if idx < 0:
                keep = len(self.delimiter)
                if len(buf) > keep:
                    del buf[: len(buf) - keep]
                return False
            del buf[: idx + len(self.delimiter)]
            self._state = "after_delimiter"
            return True
        if self._state == "after_delimiter":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = "end"
                buf.clear()
                return False
            # transport padding (spaces/tabs) then CRLF
            idx = buf.find(b"\r\n")
            if idx < 0:
                if len(buf) > 256:
                    raise MultipartError("malformed boundary line")
                return False
            if buf[:idx].strip(b" \t"):
                raise MultipartError("malformed boundary line")
            del buf[: idx + 2]
            self._state = "headers"
            return True
        if self._state == "headers":
            if buf.startswith(b"\r\n"):  # no headers at all
                del buf[:2]
                headers: dict[str, str] = {}
            else:
                idx = buf.find(b"\r\n\r\n")
                if idx < 0:
                    if len(buf) > MAX_PART_HEADERS:
                        raise MultipartError("part headers too long")
                    return False
                headers = _parse_headers(bytes(buf[:idx]))
                del buf[: idx + 4]
            if len(self.parts) >= MAX_PARTS:
                raise MultipartError(f"more than {MAX_PARTS} parts")
            self._current = Part(headers, self.spool, offset=self._end)
            self.parts.append(self._current)
            self._state = "body"
            return True
        if self._state == "body":
            assert self._current is not None
            idx = buf.find(self.delimiter)
            if idx < 0:
                safe = len(buf) - len(self.delimiter)
                if safe > 0:
                    self._current.write(memoryview(buf)[:safe])
                    self._end += safe
                    del buf[:safe]
                return False
            self._current.write(memoryview(buf)[:idx])
            self._end += idx
            del buf[: idx + len(self.delimiter)]
            self._current = None
            self._state = "after_delimiter"
            return True
        # "end": epilogue is ignored
        buf.clear()
        return False

    def finish(self) -> list[Part]:
        if self._state != "end":
            self.close()
            raise MultipartError("multipart body truncated: closing boundary missing")
        return self.parts

    def close(self) -> None:
        self.spool.close()
