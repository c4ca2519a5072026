"""pynetdicom's association socket, reading each PDU in as few system calls as the network allows, holding no
more memory than the bytes that arrived, and giving a PDU a deadline.

pynetdicom's `AssociationSocket.recv` reads 4 KiB at a time and grows a bytearray: a 0.5 MB CT slice arrives in
~130 `recv` calls, each releasing and re-taking the GIL, which the other associations of the process are waiting
for. Here the PDU's bytes go into one buffer (`recv_into`) that starts at `FIRST_READ` and doubles as the
bytes arrive, up to the length the PDU header announced: a header that announces a gigabyte and sends nothing
costs 64 KiB, not a gigabyte (issue 12). What arrives within the socket timeout is read; a whole PDU must
arrive within `deadline` seconds, so that a peer trickling a byte a minute does not hold a connection. The
result, a short read on a closed connection included, is what pynetdicom's `recv` returns.

The upper layer (imaging.dimse.upper_layer) bounds the lengths it asks for by PDU type.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

from pynetdicom.transport import AssociationSocket

if TYPE_CHECKING:
    import socket

    from pynetdicom.association import Association

FIRST_READ = 64 * 1024


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
                sock.socket.settimeout(timeout)  # accepted sockets block forever otherwise

    def recv(self, nr_bytes: int) -> bytearray:
        sock = cast("socket.socket", self.socket)
        buffer = bytearray(min(nr_bytes, FIRST_READ))
        received = 0
        until = None if self.deadline is None else time.monotonic() + self.deadline
        while received < nr_bytes:
            if received == len(buffer):  # full: double it, up to the announced length
                buffer.extend(bytes(min(len(buffer), nr_bytes - len(buffer))))
            with memoryview(buffer) as view:
                count = sock.recv_into(view[received:], len(buffer) - received)
            if not count:  # connection closed: what arrived, as pynetdicom returns it
                del buffer[received:]
                return buffer
            received += count
            if until is not None and received < nr_bytes and time.monotonic() > until:
                raise TimeoutError("PDU not received in time")
        return buffer
