"""pynetdicom's association socket, reading each PDU in as few system calls as the network allows, holding no
more memory than the bytes that arrived, and giving a PDU a deadline.

pynetdicom's `AssociationSocket.recv` reads 4 KiB at a time and grows a bytearray: a 0.5 MB CT slice arrives in
~130 `recv` calls, each releasing and re-taking the GIL, which the other associations of the process are waiting
for. Here the PDU's bytes go into one buffer (`recv_into`) that starts at `FIRST_READ` and doubles as the
bytes arrive, up to the length the PDU header announced: a header that announces a gigabyte and sends nothing
costs 64 KiB, not a gigabyte (issue 12). What arrives within the socket timeout is read; a whole PDU must
arrive within `deadline` seconds, so that a peer trickling a byte a minute does not hold a connection; each
read and write waits at most that long (kernel socket timeouts). The
result, a short read on a closed connection included, is what pynetdicom's `recv` returns.

The upper layer (imaging.dimse.upper_layer) bounds the lengths it asks for by PDU type.
"""

from __future__ import annotations

import fcntl
import struct
import termios
import time
from socket import SO_RCVTIMEO, SO_SNDTIMEO, SOL_SOCKET
from typing import TYPE_CHECKING, cast

from pynetdicom.transport import AssociationSocket

if TYPE_CHECKING:
    import socket

    from pynetdicom.association import Association

FIRST_READ = 64 * 1024
_ZEROS = memoryview(bytes(1 << 20))  # what a buffer grows by, without a temporary object each time
_INT = bytes(4)


def _arrived(sock: socket.socket) -> int:
    """Bytes received on the connection and not read yet (the kernel's count; for TLS, still encrypted)."""
    try:
        return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, _INT), "little")
    except OSError:
        return 0


def _kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Accepted sockets block forever: give their reads and writes a timeout, kept by the kernel
    (SO_RCVTIMEO / SO_SNDTIMEO; a read or write past it fails with EAGAIN, which pynetdicom's upper layer takes
    as a closed connection). Python's own socket timeout would put a poll() before every recv and send."""
    sock.settimeout(None)
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(SOL_SOCKET, SO_RCVTIMEO, value)
    sock.setsockopt(SOL_SOCKET, SO_SNDTIMEO, value)


class ReceiveSocket(AssociationSocket):
    deadline: float | None = None  # seconds a whole PDU (or its header) may take to arrive

    @classmethod
    def install(cls, assoc: Association, timeout: float | None) -> None:
        """Use this `recv` for `assoc`'s accepted connection (the socket pynetdicom created)."""
        sock = assoc.dul.socket
        if isinstance(sock, AssociationSocket) and type(sock) is AssociationSocket:
            sock.__class__ = cls
            cast(ReceiveSocket, sock).deadline = timeout
            if sock.socket is not None and timeout is not None:
                _kernel_timeouts(sock.socket, timeout)

    def recv(self, nr_bytes: int) -> bytearray:
        sock = cast("socket.socket", self.socket)
        size = nr_bytes if nr_bytes <= FIRST_READ else min(nr_bytes, max(FIRST_READ, _arrived(sock)))
        buffer = bytearray(size)
        received = 0
        until = None if self.deadline is None else time.monotonic() + self.deadline
        while received < nr_bytes:
            if received == len(buffer):  # full: grow by what arrived, at least double, at most announced
                wanted = min(nr_bytes, max(2 * len(buffer), received + _arrived(sock)))
                while len(buffer) < wanted:
                    buffer += _ZEROS[: wanted - len(buffer)]
            with memoryview(buffer) as view:
                count = sock.recv_into(view[received:], len(buffer) - received)
            if not count:  # connection closed: what arrived, as pynetdicom returns it
                del buffer[received:]
                return buffer
            received += count
            if until is not None and received < nr_bytes and time.monotonic() > until:
                raise TimeoutError("PDU not received in time")
        return buffer
