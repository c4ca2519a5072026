"""The audit trail sent to a syslog collector (an ATNA audit record repository) as RFC 5424 messages, over
TLS (RFC 5425: octet-counted frames) or UDP (RFC 5426: one datagram each), each carrying one DICOM audit
message (PS3.15 A.5.1) as its MSG.

The index rows are the buffer: `SyslogExporter` sends the records after its cursor (AuditCursor, per
destination) in order and moves the cursor only after a batch was handed to the transport, so a collector
that is down, refuses the connection or drops it gets every record once it is back (a record may arrive
twice after a crash, never not at all). Before each batch a TLS connection is checked for a close from the
collector's side (it never sends anything), so records are not written into a connection the collector
has already left. UDP cannot tell a delivered datagram from a lost one: use TLS for a lossless trail.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import select
import socket
import ssl
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import select as sql_select
from sqlalchemy.orm import Session

from imaging.audit.messages import to_xml
from imaging.audit.records import AUDIT_SOURCE_ID, AuditCursor, AuditRecord
from imaging.orm import utcnow

log = logging.getLogger(__name__)

# <PRI>: facility 10 (security/authorization, authpriv) × 8 + severity 5 (notice), as IHE ATNA uses.
PRI = 10 * 8 + 5
APP_NAME = "imaging-archive"
MSGID = "DICOM+RFC3881"
BOM = b"\xef\xbb\xbf"
MAX_UDP_MESSAGE = 65000


def rfc5424(row: AuditRecord, *, hostname: str, source_id: str = AUDIT_SOURCE_ID) -> bytes:
    """One RFC 5424 message: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - BOM+audit message."""
    timestamp = (
        row.created_at.replace(tzinfo=dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    )
    header = f"<{PRI}>1 {timestamp} {_field(hostname)} {APP_NAME} {os.getpid()} {MSGID} - "
    return header.encode("ascii") + BOM + to_xml(row, source_id).encode("utf-8")


def _field(text: str) -> str:
    """An RFC 5424 header field: printable US-ASCII without spaces, 1-255 characters ('-' if empty)."""
    cleaned = "".join(c for c in text if 33 <= ord(c) <= 126)[:255]
    return cleaned or "-"


class SyslogTransport:
    """A connection to one collector: `udp://host:port` or `tls://host:port`."""

    def __init__(
        self,
        url: str,
        *,
        ca_file: Path | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("udp", "tls") or not parts.hostname:
            raise ValueError("a syslog destination is udp://host:port or tls://host:port")
        self.scheme = parts.scheme
        self.address = (parts.hostname, parts.port or (514 if parts.scheme == "udp" else 6514))
        self.timeout = timeout
        self._context: ssl.SSLContext | None = None
        if self.scheme == "tls":
            context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if certfile is not None:
                context.load_cert_chain(certfile, keyfile)
            self._context = context
        self._socket: socket.socket | None = None

    def _connect(self) -> socket.socket:
        if self.scheme == "udp":
            family = socket.getaddrinfo(*self.address, type=socket.SOCK_DGRAM)[0][0]
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.connect(self.address)  # a refused port then shows as ConnectionRefusedError
            return sock
        assert self._context is not None
        raw = socket.create_connection(self.address, timeout=self.timeout)
        try:
            return self._context.wrap_socket(raw, server_hostname=self.address[0])
        except BaseException:
            raw.close()
            raise

    def _alive(self, sock: socket.socket) -> bool:
        """A TLS connection the collector has not closed (it never sends: readable means closed)."""
        if self.scheme == "udp":
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        return not readable

    def send(self, messages: list[bytes]) -> None:
        """Hand the messages to the transport, in order; OSError (incl. ssl.SSLError) when it cannot."""
        if self._socket is not None and not self._alive(self._socket):
            self.close()
        if self._socket is None:
            self._socket = self._connect()
        try:
            if self.scheme == "udp":
                for message in messages:
                    self._socket.send(message[:MAX_UDP_MESSAGE])
            else:
                self._socket.sendall(b"".join(str(len(m)).encode() + b" " + m for m in messages))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None


class SyslogExporter:
    """Sends the audit trail after its cursor to one collector, in a background thread, for ever."""

    def __init__(
        self,
        read: Callable[[], AbstractContextManager[Session]],
        write: Callable[[], AbstractContextManager[Session]],
        transport: SyslogTransport,
        *,
        destination: str,
        source_id: str = AUDIT_SOURCE_ID,
        hostname: str | None = None,
        batch: int = 200,
        poll_seconds: float = 1.0,
        max_backoff: float = 60.0,
    ) -> None:
        self._read, self._write = read, write
        self.transport = transport
        self.destination = destination
        self.source_id = source_id
        self.hostname = hostname or socket.gethostname()
        self.batch = batch
        self.poll_seconds = poll_seconds
        self.max_backoff = max_backoff
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SyslogExporter:
        self._thread = threading.Thread(target=self._run, name="audit-syslog", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(15)
        self.transport.close()

    def cursor(self) -> int:
        with self._read() as session:
            row = session.get(AuditCursor, self.destination)
            return row.audit_pk if row is not None else 0

    def send_pending(self) -> int:
        """Send one batch after the cursor and move the cursor; how many were sent (0: nothing pending)."""
        after = self.cursor()
        with self._read() as session:
            rows = list(
                session.scalars(
                    sql_select(AuditRecord)
                    .where(AuditRecord.audit_pk > after)
                    .order_by(AuditRecord.audit_pk)
                    .limit(self.batch)
                )
            )
        if not rows:
            return 0
        self.transport.send([rfc5424(r, hostname=self.hostname, source_id=self.source_id) for r in rows])
        with self._write() as session:
            cursor = session.get(AuditCursor, self.destination)
            if cursor is None:
                session.add(AuditCursor(destination=self.destination, audit_pk=rows[-1].audit_pk))
            else:
                cursor.audit_pk = max(cursor.audit_pk, rows[-1].audit_pk)
                cursor.updated_at = utcnow()
        return len(rows)

    def _run(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                while self.send_pending() == self.batch and not self._stop.is_set():
                    pass
                backoff = 1.0
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
            except Exception as exc:  # the collector is down or refused us: keep the cursor, retry later
                log.warning(
                    "audit export to syslog failed (%s); retrying in %.0f s", type(exc).__name__, backoff
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff)
