"""C-ECHO and C-STORE with dcmtk's echoscu/storescu against the in-process gateway: every transfer syntax
comes back byte-identical from storage, the allow-list refuses unknown AEs, 16 associations at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from imaging.config import CallingAE
from imaging.index.schema import Instance
from tests.archive_fixtures import (
    ARCHIVE_AE,
    CLIENT_AE,
    EXTRA_FILES,
    TRANSFER_SYNTAX_FILES,
    require_program,
    run,
    unique_copy,
    write_synthetic_study,
)

pytestmark = pytest.mark.dcmtk


# storescu's option proposing each syntax (the default proposes uncompressed syntaxes only).
PROPOSE = {
    "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
}


def _elements(data: bytes) -> dict[int, object]:
    from io import BytesIO

    ds = dcmread(BytesIO(data))
    return {int(e.tag): e.value for e in ds if e.tag.element != 0 and e.tag != 0xFFFCFFFC}


def _storescu(port: int, files: list[Path], *extra: str, aet: str = CLIENT_AE, aec: str = ARCHIVE_AE) -> str:
    result = run(
        [
            require_program("/usr/bin/storescu"),
            "-v",
            "-aet",
            aet,
            "-aec",
            aec,
            *extra,
            "127.0.0.1",
            str(port),
            *map(str, files),
        ]
    )
    return result.stdout + result.stderr


def test_echo(make_archive, start_gateway):
    port = start_gateway(make_archive())
    result = run(
        [require_program("/usr/bin/echoscu"), "-aet", CLIENT_AE, "-aec", ARCHIVE_AE, "127.0.0.1", str(port)]
    )
    assert result.returncode == 0, result.stderr


def test_every_transfer_syntax_stored_byte_identical(make_archive, start_gateway, tmp_path):
    archive = make_archive()
    port = start_gateway(archive)
    files = [
        unique_copy(name, tmp_path / "send" / f"{i}_{name}", i)
        for i, name in enumerate([*TRANSFER_SYNTAX_FILES.values(), *EXTRA_FILES])
    ]
    files += write_synthetic_study(tmp_path / "send" / "study", series=2, per_series=3)
    # storescu proposes uncompressed syntaxes unless told otherwise: one association per syntax, proposing
    # that syntax, so nothing is converted on the way (the log must show no conversion).
    by_option: dict[str, list[Path]] = {}
    for f in files:
        ts = str(dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        by_option.setdefault(PROPOSE.get(ts, "-R"), []).append(f)
    log = "".join(_storescu(port, group, "-R", option) for option, group in by_option.items())
    for line in log.splitlines():
        if "Converting transfer syntax" in line:
            before, after = line.split(": ", 2)[-1].split(" -> ")
            assert before == after, line
    assert log.count("Received Store Response (Success)") == len(files), log

    with archive.db.read() as s:
        rows = {r.SOPInstanceUID: r for r in s.scalars(select(Instance))}
    assert len(rows) == len(files)
    seen_syntaxes = set()
    for path in files:
        sent = path.read_bytes()
        meta = dcmread(path, stop_before_pixels=True)
        row = rows[str(meta.SOPInstanceUID)]
        # Stored in the transfer syntax it was sent in, data set bytes unchanged.
        assert row.TransferSyntaxUID == str(meta.file_meta.TransferSyntaxUID), path.name
        stored = archive.store.read(row.object_key)
        # storescu re-encodes what it reads (drops trailing padding, group lengths, rewrites lengths), so
        # "what was sent" is compared element by element here; test_raw_bytes_stored_verbatim proves byte
        # identity with a client that sends a file's bytes unchanged.
        assert _elements(stored) == _elements(sent), path.name
        seen_syntaxes.add(row.TransferSyntaxUID)
    assert set(TRANSFER_SYNTAX_FILES) <= seen_syntaxes


def test_raw_bytes_stored_verbatim(make_archive, start_gateway, tmp_path, monkeypatch):
    """pynetdicom sending each file's data set bytes without decoding them (chunked send): what is stored is
    byte for byte what was on the wire, padding, group lengths and all."""
    from pynetdicom import AE, _config, build_context

    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    archive = make_archive()
    port = start_gateway(archive)
    names = [*TRANSFER_SYNTAX_FILES.values(), *EXTRA_FILES]
    files = [unique_copy(n, tmp_path / f"{i}_{n}", i) for i, n in enumerate(names)]
    ae = AE(ae_title=CLIENT_AE)
    metas = [dcmread(f, stop_before_pixels=True) for f in files]
    ae.requested_contexts = [build_context(m.SOPClassUID, [m.file_meta.TransferSyntaxUID]) for m in metas]
    assoc = ae.associate("127.0.0.1", port, ae_title=ARCHIVE_AE)
    assert assoc.is_established
    try:
        statuses = [assoc.send_c_store(f).Status for f in files]
    finally:
        assoc.release()
    # rtplan.dcm's file meta names another SOP Instance UID than its data set: the chunked send puts the
    # meta's in the request, which does not match the data set -> 0xA900, nothing stored.
    expected = [0xA900 if f.name.endswith("rtplan.dcm") else 0 for f in files]
    assert statuses == expected
    files, metas = zip(
        *[(f, m) for f, m in zip(files, metas, strict=True) if not f.name.endswith("rtplan.dcm")], strict=True
    )
    with archive.db.read() as s:
        rows = {r.SOPInstanceUID: r for r in s.scalars(select(Instance))}
    for f, m in zip(files, metas, strict=True):
        row = rows[str(m.SOPInstanceUID)]
        sent = f.read_bytes()
        stored = archive.store.read(row.object_key)
        offset = 132 + 12 + int.from_bytes(sent[140:144], "little")
        assert stored.endswith(sent[offset:]), f.name  # raw, even deflated bytes stay as they were
        assert row.TransferSyntaxUID == str(m.file_meta.TransferSyntaxUID)


def test_identical_resend_is_success_without_rewrite(make_archive, start_gateway, tmp_path):
    archive = make_archive()
    port = start_gateway(archive)
    files = write_synthetic_study(tmp_path, series=1, per_series=2)
    assert _storescu(port, files).count("(Success)") == 2
    mtimes = {p: p.stat().st_mtime_ns for p in archive.store.root.rglob("*") if p.is_file()}
    assert _storescu(port, files).count("(Success)") == 2
    assert {p: p.stat().st_mtime_ns for p in archive.store.root.rglob("*") if p.is_file()} == mtimes
    with archive.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 2


def test_unknown_calling_ae_refused(make_archive, start_gateway, tmp_path):
    everything = ["store", "find", "get", "move"]
    archive = make_archive(
        calling_aes=[CallingAE(ae_title=CLIENT_AE, hosts=["127.0.0.1"], permissions=everything)],
        dev_mode=False,
    )
    port = start_gateway(archive)
    files = write_synthetic_study(tmp_path, series=1, per_series=1)
    refused = run(
        [require_program("/usr/bin/echoscu"), "-aet", "INTRUDER", "-aec", ARCHIVE_AE, "127.0.0.1", str(port)]
    )
    assert refused.returncode != 0
    assert "Rejected" in refused.stdout + refused.stderr
    log = _storescu(port, files, aet="INTRUDER")
    assert "(Success)" not in log
    with archive.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 0
    allowed = run(
        [require_program("/usr/bin/echoscu"), "-aet", CLIENT_AE, "-aec", ARCHIVE_AE, "127.0.0.1", str(port)]
    )
    assert allowed.returncode == 0, allowed.stderr


def test_sixteen_concurrent_associations(make_archive, start_gateway, tmp_path):
    archive = make_archive()
    port = start_gateway(archive)
    groups = [write_synthetic_study(tmp_path / f"s{i}", series=1, per_series=2, patient=i) for i in range(16)]
    barrier = threading.Barrier(16)
    logs: list[str] = [""] * 16

    def send(i: int) -> None:
        barrier.wait()
        # --repeat keeps every association open long enough that all 16 overlap.
        logs[i] = _storescu(port, groups[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        assert log.count("Received Store Response (Success)") == 2, log
    with archive.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 32
