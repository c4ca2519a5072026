"""SIGKILL the server in the middle of a 4-association ingest (4 parallel dcmtk storescu), restart: every
instance acknowledged with Success is present, readable, byte-identical and indexed; no partial file is
visible; fsck finds nothing missing or corrupt. Complete objects whose Success never went out may remain
unindexed: `fsck --repair` adopts them, after which fsck is clean."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from imaging.archive import Archive
from imaging.config import load_settings
from imaging.index.schema import Instance
from imaging.maintenance import fsck
from tests.archive_fixtures import (
    ARCHIVE_AE,
    CLIENT_AE,
    dataset_bytes,
    echo,
    free_port,
    require_program,
    serve_subprocess,
    write_synthetic_study,
)

pytestmark = [pytest.mark.dcmtk, pytest.mark.slow]


def _acknowledged(log: str) -> list[str]:
    """Files storescu reported Success for: each 'Sending file: X' followed by its Success response."""
    done, current = [], None
    for line in log.splitlines():
        m = re.search(r"Sending file: (.+)$", line)
        if m:
            current = m.group(1).strip()
        elif "Received Store Response (Success)" in line and current:
            done.append(current)
            current = None
    return done


def test_sigkill_mid_ingest_loses_nothing_acknowledged(tmp_path):
    storescu = require_program("/usr/bin/storescu")
    data_dir = tmp_path / "data"
    port = free_port()
    server_log = tmp_path / "server.log"
    groups = [
        write_synthetic_study(tmp_path / f"g{i}", series=1, per_series=40, patient=i, rows=256)
        for i in range(4)
    ]
    server = serve_subprocess(data_dir, port, server_log)
    logs = [tmp_path / f"storescu{i}.log" for i in range(4)]
    clients = [
        subprocess.Popen(
            [storescu, "-v", "-aet", CLIENT_AE, "-aec", ARCHIVE_AE, "127.0.0.1", str(port), *map(str, group)],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for group, log in zip(groups, logs, strict=True)
    ]
    total = sum(len(g) for g in groups)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill once about a quarter has been acknowledged
        acked = sum(log.read_text().count("(Success)") for log in logs)
        if acked >= total // 4:
            break
        time.sleep(0.02)
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    for c in clients:
        c.wait(60)
    acknowledged = [f for log in logs for f in _acknowledged(log.read_text())]
    assert total // 4 <= len(acknowledged) < total, "the kill must land mid-ingest"

    # Restart the server: it comes up, sweeps temp files, serves.
    restart_log = tmp_path / "server-restart.log"
    server = serve_subprocess(data_dir, port, restart_log)
    try:
        assert echo(port)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    objects = data_dir / "objects"
    assert not list(objects.rglob(".tmp-*")), "a partial file is visible after restart"
    archive = Archive.open(load_settings(data_dir=data_dir, dev_mode=True))
    try:
        with archive.db.read() as s:
            rows = {r.SOPInstanceUID: r for r in s.scalars(select(Instance))}
        for name in acknowledged:
            sent = Path(name)
            uid = str(dcmread(sent, stop_before_pixels=True).SOPInstanceUID)
            assert uid in rows, f"acknowledged instance {sent.name} lost"
            stored = archive.store.read(rows[uid].object_key)
            assert dataset_bytes(stored) == dataset_bytes(sent.read_bytes())
        report = fsck(archive)
        assert not report.missing and not report.corrupt, report
        # Objects renamed into place but never acknowledged (killed before the index commit) are adopted.
        fsck(archive, repair=True)
        assert fsck(archive).clean
    finally:
        archive.close()
    for log in (server_log, restart_log):  # no PHI (patient names / IDs) in the server log
        assert "SYNTH000" not in log.read_text() and "SYN00000" not in log.read_text()
