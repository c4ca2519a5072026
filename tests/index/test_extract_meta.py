"""parse() reads the usual File Meta Information itself and hands the rest to dcmread: both ways give the
same ParsedInstance (or the same error) on pydicom's test files, on synthetic CT and on damaged streams."""

from __future__ import annotations

import zlib
from io import BytesIO
from typing import Any

import pytest
from pydicom import dcmread

from imaging.errors import ArchiveError
from imaging.index import extract
from imaging.synthetic import SyntheticStudy, ct_slice, synthetic_patient
from tests.archive_fixtures import bundled_testdata_files, quiet


def _outcome(data: bytes | BytesIO) -> Any:
    try:
        parsed = extract.parse(data)
    except ArchiveError as exc:
        return (type(exc).__name__, str(exc))
    return (
        parsed.transfer_syntax,
        parsed.attributes,
        zlib.decompress(parsed.metadata_json),
        parsed.pixel_offset,
        parsed.pixel_length,
        parsed.warnings,
    )


def _both_ways(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any, bool]:
    """(parse's outcome, dcmread's outcome, whether parse read the meta group itself). Parsing the stream
    from a file (an upload spooled to disk) must give what parsing its bytes gives."""
    fast = extract._read_usual(data, len(data), BytesIO(data)) is not None
    ours = _outcome(data)
    assert _outcome(BytesIO(data)) == ours
    with monkeypatch.context() as m:
        m.setattr(extract, "_read_usual", lambda *_: None)
        theirs = _outcome(data)
    return ours, theirs, fast


def _ct() -> bytes:
    ds = ct_slice(SyntheticStudy(patient=synthetic_patient(7)), "1.2.826.0.1.3680043.8.498.77", 1, 3)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_same_as_dcmread_on_pydicom_test_files(monkeypatch):
    fast = compared = 0
    with quiet():
        for path in bundled_testdata_files():
            data = path.read_bytes()
            if data[128:132] != b"DICM":
                continue
            ours, theirs, read_itself = _both_ways(data, monkeypatch)
            assert ours == theirs, path
            fast += read_itself
            compared += 1
    assert compared > 50 and fast > compared // 2  # most files take the short path, and agree


def test_synthetic_ct_takes_the_short_path(monkeypatch):
    ours, theirs, fast = _both_ways(_ct(), monkeypatch)
    assert fast and ours == theirs
    assert ours[0] == "1.2.840.10008.1.2.1" and ours[1]["Modality"] == "CT" and ours[3] is not None


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d[:140],  # cut inside the meta group's length element
        lambda d: d[:200],  # cut inside the meta group
        lambda d: d[:-10],  # cut inside the pixel data
        lambda d: d[:140] + b"\xff\xff\xff\x7f" + d[144:],  # meta group length past the end
        lambda d: d[:144] + b"\x08\x00" + d[146:],  # an element of another group inside the meta group
        lambda d: d.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.9.9.9\x00", 1),  # unknown syntax
        lambda d: d.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.840.10008.1.2.\xff\x00", 1),  # not ASCII
    ],
)
def test_damaged_streams_fail_or_parse_as_with_dcmread(damage, monkeypatch):
    data = damage(_ct())
    with quiet():
        ours, theirs, _ = _both_ways(data, monkeypatch)
    assert ours == theirs


def test_dcmread_still_reads_the_file_meta_it_sees(monkeypatch):
    data = _ct()
    assert dcmread(BytesIO(data)).file_meta.TransferSyntaxUID == extract.parse(data).transfer_syntax
