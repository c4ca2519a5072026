"""A deliberately simple multipart/related splitter for checking responses (independent of the app's)."""

from __future__ import annotations

import httpx


def split(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/related"), content_type
    boundary = next(
        p.split("=", 1)[1].strip('"')
        for p in (x.strip() for x in content_type.split(";"))
        if p.startswith("boundary=")
    )
    body = response.content
    delimiter = b"--" + boundary.encode()
    assert body.startswith(delimiter) and body.rstrip().endswith(delimiter + b"--")
    parts = []
    for chunk in body.split(b"\r\n" + delimiter)[:-1] if False else _chunks(body, delimiter):
        head, _, payload = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload))
    return parts


def _chunks(body: bytes, delimiter: bytes) -> list[bytes]:
    pieces = body.split(b"\r\n" + delimiter)
    first = pieces[0]
    assert first.startswith(delimiter)
    pieces[0] = first[len(delimiter) :]
    out = []
    for piece in pieces:
        if piece.startswith(b"--"):
            break
        assert piece.startswith(b"\r\n")
        out.append(piece[2:])
    return out
