"""One fuzzing exchange with the gateway: send the input, end it, collect the answer until the gateway closes."""

from __future__ import annotations

import socket
import struct
import time

ANSWERS = {2, 3, 4, 6, 7}  # what an acceptor may send: A-ASSOCIATE-AC/RJ, P-DATA-TF, A-RELEASE-RP, A-ABORT


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data`, end the input, and return all the gateway answered until it closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # the gateway may close before reading everything (an abort, the connection limit)
            pass
        answer = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return answer
            except TimeoutError:
                break
            if not chunk:
                return answer
            answer += chunk
        raise AssertionError(f"the gateway kept the connection open {timeout:.0f} s after the input ended")


def well_formed(answer: bytes) -> bool:
    """A sequence of complete PDUs of the types an acceptor sends."""
    offset = 0
    while offset < len(answer):
        if len(answer) - offset < 6:
            return False
        pdu_type, _, length = struct.unpack_from(">BBI", answer, offset)
        if pdu_type not in ANSWERS or offset + 6 + length > len(answer):
            return False
        offset += 6 + length
    return True
