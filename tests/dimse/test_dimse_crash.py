"""SIGKILL the server in the middle of a 4-association ingest (4 parallel dcmtk storescu), restart: every
instance acknowledged with Success is present, readable, byte-identical and indexed; no partial file is
visible; complete objects whose Success never went out (killed between publish and index commit) were
adopted or removed at start-up, with the decision logged, so `imaging fsck` is clean without --repair.
The recovery itself is also tested deterministically: orphans planted in storage, a stale run marker."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import socket
import subprocess
import sys
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
        assert report.clean, report  # adopted or removed at start-up: nothing left for --repair
    finally:
        archive.close()
    cli = subprocess.run(
        [sys.executable, "-m", "imaging.cli", "fsck", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "IMAGING_DEV_MODE": "true"},
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert "unindexed 0" in cli.stdout + cli.stderr
    lines = restart_log.read_text().splitlines()
    decisions = [line for line in lines if re.search(r"recovery: (adopted|removed|quarantined) object", line)]
    for line in decisions:  # each decision names the object by key (a hash) and nothing else
        assert re.search(r"object clinical/[0-9a-f]{64},", line), line
    summary = [line for line in lines if "recovery after an unclean stop" in line]
    if decisions:  # the kill landed between a publish and its index commit: adopted, and said so
        counts = [
            int(n)
            for n in re.findall(r"(\d+) objects adopted, (\d+) removed, (\d+) quarantined", summary[0])[0]
        ]
        assert sum(counts) == len(decisions), summary
    for log in (server_log, restart_log):  # no PHI (patient names / IDs) in the server log
        assert "SYNTH000" not in log.read_text() and "SYN00000" not in log.read_text()


def test_start_up_adopts_removes_or_quarantines_unacknowledged_objects(tmp_path, caplog):
    """What a kill between publish and index commit leaves, planted by hand, then a start after a crash."""
    settings = load_settings(data_dir=tmp_path / "data", dev_mode=True, min_free_bytes=0)
    archive = Archive.open(settings)
    files = write_synthetic_study(tmp_path / "study", series=1, per_series=3, rows=16)
    archive.ingestor.ingest(files[0].read_bytes(), source="test")
    # 1. a complete object whose index commit never happened: adopted
    lost = archive.store.put(files[1].read_bytes(), "clinical").key
    # 2. a different object under the first one's SOP Instance UID (policy reject): removed
    ds = dcmread(files[0])
    ds.SeriesDescription = "CHANGED"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    conflicting = archive.store.put(buffer.getvalue(), "clinical").key
    # 3. bytes that do not parse (no ingest of this version publishes such): quarantined, not deleted
    garbage = archive.store.put(b"not a DICOM file at all", "clinical").key
    archive.close()
    assert not fsck_clean(settings)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (settings.data_dir / "run").mkdir(exist_ok=True)
    (settings.data_dir / "run" / f"{socket.gethostname()}-{dead.pid}").touch()  # a process that died open

    with caplog.at_level(logging.WARNING, logger="imaging.ingest.recovery"):
        archive = Archive.open(settings)
    try:
        assert fsck(archive).clean
        with archive.db.read() as s:
            keys = set(s.scalars(select(Instance.object_key)))
        assert lost in keys and conflicting not in keys and garbage not in keys
        assert not archive.store.exists(conflicting) and not archive.store.exists(garbage)
        assert (settings.data_dir / "quarantine" / garbage.replace("/", "_")).exists()
        assert not (settings.data_dir / "run" / f"{socket.gethostname()}-{dead.pid}").exists()
    finally:
        archive.close()
    text = caplog.text
    assert f"adopted object {lost}" in text and f"removed object {conflicting}" in text
    assert f"quarantined object {garbage}" in text
    assert str(ds.PatientName) not in text and str(ds.PatientID) not in text


def test_a_clean_start_does_not_scan(tmp_path, caplog):
    settings = load_settings(data_dir=tmp_path / "data", dev_mode=True, min_free_bytes=0)
    archive = Archive.open(settings)
    files = write_synthetic_study(tmp_path / "study", series=1, per_series=1, rows=16)
    orphan = archive.store.put(files[0].read_bytes(), "clinical").key
    archive.close()  # closed cleanly: its marker is gone, nothing to recover
    with caplog.at_level(logging.WARNING, logger="imaging.ingest.recovery"):
        archive = Archive.open(settings)
    try:
        assert "recovery" not in caplog.text
        assert fsck(archive).unindexed == [orphan]  # left to fsck --repair: not a crash
    finally:
        archive.close()


def fsck_clean(settings) -> bool:
    archive = Archive.open(settings)
    try:
        return fsck(archive).clean
    finally:
        archive.close()
