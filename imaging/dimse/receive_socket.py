"""pynetdicom's association socket, reading each PDU in as few system calls as the network allows.

pynetdicom's `AssociationSocket.recv` reads 4 KiB at a time and grows a bytearray: a 0.5 MB CT slice arrives in
~130 `recv` calls, each releasing and re-taking the GIL, which the other associations of the process are waiting
for. Here the PDU's bytes go straight into one buffer of the announced length (`recv_into`); the result, a
short read on a closed connection included, is the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from pynetdicom.transport import AssociationSocket

if TYPE_CHECKING:
    import socket

    from pynetdicom.association import Association


class ReceiveSocket(AssociationSocket):
    @classmethod
    def install(cls, assoc: Association) -> None:
        """Use this `recv` for `assoc`'s accepted connection (the socket pynetdicom created; no state added)."""
        sock = assoc.dul.socket
        if type(sock) is AssociationSocket:
            sock.__class__ = cls

    def recv(self, nr_bytes: int) -> bytearray:
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        sock = cast("socket.socket", self.socket)
        received = 0
        while received < nr_bytes:
            count = sock.recv_into(view[received:], nr_bytes - received)
            if not count:  # connection closed: what arrived, as pynetdicom returns it
                view.release()
                del buffer[received:]
                return buffer
            received += count
        view.release()
        return buffer
