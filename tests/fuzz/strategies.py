"""Hypothesis strategies for hostile input: mutated DICOM Part 10 streams, and raw DICOM Upper Layer byte
streams (noise, hostile PDU headers, a valid association followed by broken P-DATA, mutated valid PDUs)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from hypothesis import strategies as st

from tests.dimse import raw

# Lengths that break parsers: zero, one, odd, around powers of two, undefined length, the maximum.
HOSTILE_LENGTHS = [0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE,
                   0xFFFFFFFF]  # fmt: skip
_LENGTH = st.sampled_from(HOSTILE_LENGTHS) | st.integers(0, 0xFFFFFFFF)


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], *, skip: int = 0) -> bytes:
    """One of `seeds` with 1-8 mutations (bit flips, bytes set, cuts, inserts, hostile 2- and 4-byte
    lengths, copied ranges), mostly after its first `skip` bytes."""
    data = bytearray(draw(st.sampled_from(list(seeds))))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            data += draw(st.binary(min_size=1, max_size=64))
            continue
        low = skip if skip < len(data) else 0
        position = draw(st.integers(low, len(data) - 1))
        operation = draw(st.sampled_from(["flip", "set", "cut", "insert", "length4", "length2", "copy"]))
        if operation == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "set":
            data[position] = draw(st.integers(0, 255))
        elif operation == "cut":
            del data[position:]
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=32))
        elif operation == "length4":
            value = draw(_LENGTH)
            order = draw(st.sampled_from("<>"))
            data[position : position + 4] = struct.pack(f"{order}I", value)
        elif operation == "length2":
            data[position : position + 2] = struct.pack("<H", draw(st.integers(0, 0xFFFF)))
        else:
            size = draw(st.integers(1, 256))
            target = draw(st.integers(0, len(data)))
            data[target:target] = data[position : position + size]
    return bytes(data)


# ---------------------------------------------------------------------------------------------- PDUs
CONTEXTS = [
    (1, raw.VERIFICATION, [raw.IMPLICIT_LE]),
    (3, raw.CT_IMAGE_STORAGE, [raw.EXPLICIT_LE, raw.IMPLICIT_LE]),
    (5, "1.2.840.10008.5.1.4.1.2.2.1", [raw.IMPLICIT_LE]),  # Study Root Find
]
VALID_RQ = raw.associate_rq(contexts=CONTEXTS)


def _header(pdu_type: int, length: int, body: bytes) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, length) + body


hostile_headers = st.builds(_header, st.integers(0, 255) | st.integers(1, 7), _LENGTH, st.binary(max_size=64))


@st.composite
def pdv(draw: st.DrawFn) -> bytes:
    """A presentation data value item: sometimes well-formed with a real command set, often not."""
    context_id = draw(st.sampled_from([1, 3, 5]) | st.integers(0, 255))
    control = draw(st.sampled_from([0, 1, 2, 3]) | st.integers(0, 255))
    data = draw(
        st.sampled_from(
            [raw.c_echo_rq(), raw.c_store_rq(raw.CT_IMAGE_STORAGE, "1.2.3.4"), b"\x08\x00\x05\x00CS\x00\x00"]
        )
        | st.binary(max_size=300)
    )
    if draw(st.booleans()):
        return raw.pdv(context_id, control, data)
    length = draw(_LENGTH | st.integers(0, 8))  # a lying item length
    return struct.pack(">IBB", length, context_id, control) + data


@st.composite
def p_data(draw: st.DrawFn) -> bytes:
    items = b"".join(draw(st.lists(pdv(), min_size=0, max_size=4)))
    if draw(st.booleans()):
        return raw.pdu(raw.P_DATA_TF, items)
    return _header(raw.P_DATA_TF, draw(_LENGTH), items)


@st.composite
def associated(draw: st.DrawFn) -> bytes:
    """A valid A-ASSOCIATE-RQ, then PDUs that are mostly broken P-DATA, sometimes a release or abort."""
    tail = draw(
        st.lists(
            p_data()
            | hostile_headers
            | st.sampled_from([raw.pdu(raw.RELEASE_RQ, b"\0" * 4), raw.pdu(raw.ABORT, b"\0" * 4)]),
            min_size=1,
            max_size=5,
        )
    )
    return VALID_RQ + b"".join(tail)


def pdu_streams(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=512),
        hostile_headers,
        associated(),
        mutated([VALID_RQ, *seeds], skip=0),
    )
