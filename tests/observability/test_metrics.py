"""/metrics over real HTTP, scraped with prometheus-client's own parser: instances received per channel and
outcome (STOW-RS and C-STORE through the real protocols, a refused one too), HTTP latency by route template,
DIMSE latency per service, job queue depth and age per kind, the sharing outbox per peer and status, free
space per storage backend; and, with two DIMSE gateway processes, the counts of both."""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imaging.jobs.runner import enqueue
from imaging.sharing.models import OutboxRow
from tests.archive_fixtures import (
    ARCHIVE_AE,
    CLIENT_AE,
    echo,
    free_port,
    require_program,
    run,
    write_synthetic_study,
)
from tests.dicomweb.conftest import Server, add_token

STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=b'


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_of_a_running_archive(make_archive: Any, start_gateway: Any, tmp_path: Path) -> None:
    archive = make_archive(dev_mode=False)
    server = Server(archive)
    try:
        token = add_token(archive, "admin")
        url = server.url
        before = scrape(url)
        files = write_synthetic_study(tmp_path / "study", series=1, per_series=3)
        body = b"".join(
            b"--b\r\nContent-Type: application/dicom\r\n\r\n" + f.read_bytes() + b"\r\n" for f in files[:2]
        )
        body += b"--b\r\nContent-Type: application/dicom\r\n\r\nnot dicom\r\n--b--\r\n"
        response = httpx.post(
            f"{server.root}/studies",
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": STOW_TYPE},
        )
        assert response.status_code == 202
        project = httpx.get(
            f"{url}/projects/lung/dicomweb/studies/1.2.3/series", headers={"Authorization": f"Bearer {token}"}
        )
        port = start_gateway(archive)
        assert echo(port)
        storescu = require_program("/usr/bin/storescu")
        done = run([storescu, "-aet", CLIENT_AE, "-aec", ARCHIVE_AE, "127.0.0.1", str(port), str(files[2])])
        assert done.returncode == 0, done.stderr
        archive.db.transaction(lambda s: enqueue(s, "triage", "series-x", {}))
        archive.db.transaction(
            lambda s: s.add(
                OutboxRow(
                    peer="siteb",
                    project="",
                    partition="clinical",
                    StudyInstanceUID="1.2.3",
                    SeriesInstanceUID="1.2.3.4",
                    SOPInstanceUID="1.2.3.4.5",
                    patient_pk=1,
                    object_key="clinical/" + "0" * 64,
                    peer_StudyInstanceUID="1.2.3",
                    peer_SOPInstanceUID="1.2.3.4.5",
                )
            )
        )
        time.sleep(1.1)  # the job has an age
        after = scrape(url)
    finally:
        server.stop()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    received = "imaging_instances_received_total"
    assert grew(received, source="stow-rs", status="stored") == 2
    assert grew(received, source="stow-rs", status="cannot_understand") == 1
    assert grew(received, source="c-store", status="stored") == 1
    route = {"route": "/dicomweb/studies", "method": "POST", "status": "202"}
    assert grew("imaging_http_request_duration_seconds_count", **route) == 1
    templated = {"route": "/projects/{project}/dicomweb/studies/{study}/series", "method": "GET"}
    assert (
        grew("imaging_http_request_duration_seconds_count", **templated, status=str(project.status_code)) == 1
    )
    assert value(after, "imaging_dimse_request_duration_seconds_count", service="C-ECHO") >= 1
    assert value(after, "imaging_dimse_request_duration_seconds_count", service="C-STORE") >= 1
    assert value(after, "imaging_jobs", kind="triage", status="pending") == 1
    assert value(after, "imaging_job_oldest_waiting_seconds", kind="triage") >= 1
    assert value(after, "imaging_outbox", peer="siteb", status="pending") == 1
    assert value(after, "imaging_storage_free_bytes", backend="filesystem") > 0
    # No identifier ever becomes a label value.
    labels = {v for (_, pairs) in after for _, v in pairs}
    assert not any(v.startswith("1.2.826") or "SYNTH" in v.upper() for v in labels)


@pytest.mark.slow
@pytest.mark.dcmtk
def test_two_gateway_processes_count_together(tmp_path: Path) -> None:
    """`imaging serve` with two DIMSE gateway processes: concurrent associations land in both (the server
    process and its child), and /metrics counts every instance, whichever process received it."""
    storescu = require_program("/usr/bin/storescu")
    dicom_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "IMAGING_DIMSE_PROCESSES": "2",
        "IMAGING_TRIAGE_ENABLED": "false",
        "IMAGING_MIN_FREE_BYTES": "0",
    }
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "imaging.cli", "serve", "--dev", "--data-dir", str(tmp_path / "data")]
    command += ["--dicom-port", str(dicom_port), "--http-port", str(http_port)]
    process = subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        studies = [
            write_synthetic_study(tmp_path / f"s{i}", series=1, per_series=6, patient=i) for i in range(2)
        ]
        with cf.ThreadPoolExecutor(2) as pool:
            results = list(
                pool.map(
                    lambda files: run(
                        [storescu, "-aet", CLIENT_AE, "-aec", ARCHIVE_AE, "127.0.0.1", str(dicom_port)]
                        + [str(f) for f in files]
                    ),
                    studies,
                )
            )
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        samples = scrape(url)
        assert value(samples, "imaging_instances_received_total", source="c-store", status="stored") == 12
        assert value(samples, "imaging_dimse_request_duration_seconds_count", service="C-STORE") == 12
        health = httpx.get(f"{url}/health", timeout=30).json()
        assert health["components"]["dimse"]["ready"] and health["components"]["workers"]["ready"]
    finally:
        process.terminate()
        process.wait(30)
