"""The project's exception tree. Each error knows its DIMSE status and HTTP status; the edges
(SCP handlers, the FastAPI exception handler) translate, nothing else does."""

from __future__ import annotations


class ArchiveError(Exception):
    """Base class. Messages never contain PHI (identifiers are UIDs or opaque keys at most)."""

    dimse_status: int = 0xC000
    http_status: int = 500


class OutOfResources(ArchiveError):
    dimse_status = 0xA700
    http_status = 507


class CannotUnderstand(ArchiveError):
    """The data set cannot be parsed or lacks what every stored object needs."""

    dimse_status = 0xC000
    http_status = 400


class DataSetMismatch(ArchiveError):
    """The data set does not match the SOP class / required identifiers are missing or invalid."""

    dimse_status = 0xA900
    http_status = 400


class SOPClassNotSupported(ArchiveError):
    dimse_status = 0x0122
    http_status = 409


class DuplicateConflict(ArchiveError):
    """A different object under an already stored SOP Instance UID, and the policy is reject."""

    dimse_status = 0xA900
    http_status = 409


class NotAuthenticated(ArchiveError):
    """No credential, or one that is unknown, expired or revoked."""

    dimse_status = 0x0124
    http_status = 401


class NotAuthorized(ArchiveError):
    """The caller is known but may not do this here (role, partition, AE title)."""

    dimse_status = 0x0124  # Refused: Not Authorized
    http_status = 403


class InvalidRequest(ArchiveError, ValueError):
    """The request itself is malformed: a bad parameter, an unknown value, an impossible combination.
    (Also a ValueError: what a caller passing a bad value expects from a domain function.)"""

    dimse_status = 0xC000
    http_status = 400


class Conflict(ArchiveError):
    """The request conflicts with the current state (exists already, not ready yet)."""

    http_status = 409


class NotFound(ArchiveError):
    dimse_status = 0xC000
    http_status = 404


class ProcessingFailure(ArchiveError):
    dimse_status = 0x0110
    http_status = 500
