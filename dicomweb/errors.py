"""HTTP-only refusals of the DICOMweb edge (content negotiation, bodies, ranges). Like every domain error
they are ArchiveErrors, answered by the application's one exception handler (dicomweb.app)."""

from __future__ import annotations

from imaging.errors import ArchiveError


class NotAcceptable(ArchiveError):
    http_status = 406


class RequestTimeout(ArchiveError):
    """The client stopped sending its request body."""

    http_status = 408


class PayloadTooLarge(ArchiveError):
    http_status = 413


class UnsupportedMediaType(ArchiveError):
    http_status = 415


class RangeNotSatisfiable(ArchiveError):
    http_status = 416

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.headers = {"Content-Range": f"bytes */{size}"}
