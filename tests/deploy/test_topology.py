"""The compose topology as local processes, end to end: what docker/compose.yaml starts, started here from
that file (its commands, its environment with the images' ENV, its volumes as folders, its start order):
PostgreSQL (a fresh database on the local server), RabbitMQ (the local broker, queues under a namespace of
this test), object storage (Ceph radosgw, tests/infra/s3_server.py), `imaging schema upgrade`, the archive
(`imaging serve`), the general worker (`imaging worker --kind share.deliver`) and the triage-only worker
(`imaging worker --kind triage`), plus an Orthanc peer. Host names become loopback addresses and ports free
ones; the triage worker's device is the CPU (no GPU here) — nothing else differs.

A chest CT with planted nodules goes in with dcmtk's storescu from an allowed calling AE; the archive marks
it stable and publishes a triage job; the triage worker (another process, reading the objects from S3)
files SR and SEG and flags the study HIGH; the sharing policy queues a delivery; the general worker
de-identifies it with the project's key (from the keys folder the archive shares) and delivers it to
Orthanc, where it arrives de-identified. Readiness reports every component, metrics count what came in."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from imaging.synthetic import SyntheticStudy, synthetic_patient
from tests.archive_fixtures import PG_ADMIN_URL, _pg_connect, free_port, require_program
from tests.deploy.compose import load_compose, our_services
from tests.deploy.test_compose import service_env
from tests.infra.s3_server import CephS3Server, s3_server
from tests.sharing.conftest import ORTHANC_PASSWORD, ORTHANC_USER, OrthancServer
from tests.triage.conftest import COUNT, PIXEL, ROWS, THICKNESS, planted_phantom
from triage.training.synthetic_series import phantom_series

__all__ = ["s3_server"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.s3,
    pytest.mark.orthanc,
    pytest.mark.dcmtk,
]
AMQP = os.environ.get("IMAGING_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672")
BACKING = {"postgres", "rabbitmq", "objectstore", "orthanc-peer"}  # run here as local servers
CALLING_AE = "STORESCU"  # the calling AE that compose admits (IMAGING_CALLING_AES)


class Topology:
    """Our compose services as processes; `env[name]` is each one's environment."""

    def __init__(self, root: Path, local: dict[str, str]) -> None:
        self.root = root
        self.compose = load_compose()
        self.services = our_services(self.compose)
        self.env: dict[str, dict[str, str]] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}
        for name, service in self.services.items():
            self.env[name] = self._environment(name, service, local)

    def _environment(self, name: str, service: dict[str, Any], local: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGING_")}
        env.update(service_env(name, service))
        mounts = {}
        for volume in service.get("volumes", []):
            source, target = str(volume).split(":")[:2]
            mounts[target] = self.root / "volumes" / source
        for key in ("IMAGING_DATA_DIR", "IMAGING_KEYS_DIR", "IMAGING_VIEWER_DIR"):
            if key in env:  # a volume where compose mounts one, else the container's own folder
                folder = mounts.get(env[key], self.root / name / env[key].strip("/"))
                folder.mkdir(parents=True, exist_ok=True)
                env[key] = str(folder)
        env.update(local)  # the backing services' addresses here
        if env.get("IMAGING_TRIAGE_DEVICE") == "cuda":
            env["IMAGING_TRIAGE_DEVICE"] = "cpu"
        if "IMAGING_METRICS_PORT" in env:
            env["IMAGING_METRICS_PORT"] = str(self.port(f"{name}-metrics"))
        if name == "archive":
            # Compose admits its calling AEs from the Docker network; here they connect over loopback.
            admitted = json.loads(env["IMAGING_CALLING_AES"])
            env["IMAGING_CALLING_AES"] = json.dumps([{**ae, "hosts": ["127.0.0.1"]} for ae in admitted])
            env["IMAGING_DICOM_PORT"] = str(self.port("dicom"))
            env["IMAGING_HTTP_PORT"] = str(self.port("http"))
            env["IMAGING_DICOM_HOST"] = env["IMAGING_HTTP_HOST"] = "127.0.0.1"
        return env

    def port(self, name: str) -> int:
        return self.ports.setdefault(name, free_port())

    def start(self, name: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "imaging.cli", *self.services[name]["command"][1:]]
        log = (self.root / f"{name}.log").open("ab")
        process = subprocess.Popen(command, env=self.env[name], stdout=log, stderr=subprocess.STDOUT)
        self.processes[name] = process
        return process

    def cli(self, *args: str, extra_env: dict[str, str] | None = None) -> str:
        """An `imaging` command run as `docker compose exec archive imaging ...` would."""
        done = subprocess.run(
            [sys.executable, "-m", "imaging.cli", *args],
            env={**self.env["archive"], **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_for(condition: Callable[[], Any], timeout: float, what: str, topology: Topology) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        for name, process in topology.processes.items():
            if name != "migrate" and process.poll() is not None:
                raise AssertionError(f"{name} exited:\n{topology.log(name)}")
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n}:\n{topology.log(n)}" for n in topology.processes)
            raise AssertionError(f"{what}: not reached in {timeout:.0f} s\n{logs}")
        time.sleep(0.5)


@pytest.fixture
def fresh_database() -> Iterator[str]:
    admin = _pg_connect(PG_ADMIN_URL)
    name = f"imaging_topology_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def orthanc_peer(tmp_path: Path) -> Iterator[OrthancServer]:
    require_program("/usr/sbin/Orthanc")
    server = OrthancServer(tmp_path / "orthanc")
    server.start()
    yield server
    server.stop()


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_compose_topology_end_to_end(
    tmp_path: Path, fresh_database: str, s3_server: CephS3Server, orthanc_peer: OrthancServer
) -> None:
    storescu = require_program("/usr/bin/storescu")
    compose = load_compose()
    assert set(compose["services"]) == BACKING | set(our_services(compose))
    local = {
        "IMAGING_DATABASE_URL": fresh_database,
        "IMAGING_BROKER_URL": AMQP,
        "IMAGING_BROKER_NAMESPACE": f"topology-{secrets.token_hex(4)}",
        "IMAGING_S3_ENDPOINT_URL": s3_server.endpoint_url,
        "IMAGING_S3_ACCESS_KEY_ID": s3_server.access_key,
        "IMAGING_S3_SECRET_ACCESS_KEY": s3_server.secret_key,
        "IMAGING_S3_BUCKET": f"topology-{secrets.token_hex(4)}",  # made by the migrate step
        # Shorter waits than a site's, so that the test takes a minute.
        "IMAGING_STABILITY_SECONDS": "2",
        "IMAGING_SHARE_RETRY_BASE_SECONDS": "0.5",
        "IMAGING_WORKER_HEARTBEAT_SECONDS": "15",
        "IMAGING_MIN_FREE_BYTES": "0",
    }
    admitted = json.loads(compose["services"]["archive"]["environment"]["IMAGING_CALLING_AES"])
    assert [ae["ae_title"] for ae in admitted] == [CALLING_AE]
    topology = Topology(tmp_path, local)
    try:
        migrate = topology.start("migrate")
        assert migrate.wait(180) == 0, topology.log("migrate")
        for name in ("archive", "worker", "triage-worker"):
            topology.start(name)
        http = f"http://127.0.0.1:{topology.ports['http']}"

        def ready() -> dict[str, Any] | None:
            try:
                response = httpx.get(f"{http}/health", timeout=10)
            except httpx.HTTPError:
                return None
            body: dict[str, Any] = response.json()
            return body if response.status_code == 200 else None

        health = wait_for(ready, 120, "archive ready", topology)
        components = health["components"]
        assert components["storage"]["backend"] == "s3"
        assert set(components) >= {"index", "storage", "dimse", "broker", "workers", "triage"}
        assert components["workers"]["kinds"] == ["share.deliver", "triage"]
        assert components["triage"]["workers"][0]["device"] == "cpu"

        token = topology.cli("token", "create", "--role", "admin").strip().splitlines()[-1]
        topology.cli("project", "create", "net")
        topology.cli(
            *("share", "peer", "add", "orthanc", "--kind", "orthanc", "--url", orthanc_peer.url),
            *("--auth", "basic", "--username", ORTHANC_USER, "--secret-env", "PEER_SECRET"),
            extra_env={"PEER_SECRET": ORTHANC_PASSWORD},
        )
        topology.cli(
            *("share", "policy", "add", "nodules", "--peer", "orthanc", "--project", "net"),
            *("--modality", "CT", "--body-part", "CHEST", "--priority", "HIGH"),
        )

        study = SyntheticStudy(patient=synthetic_patient(31), StudyDescription="CT CHEST")
        folder = tmp_path / "study"
        folder.mkdir()
        series = phantom_series(
            planted_phantom(),
            study=study,
            rows=ROWS,
            columns=ROWS,
            count=COUNT,
            pixel_spacing=PIXEL,
            slice_thickness=THICKNESS,
        )
        for ds in series:
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        sent = subprocess.run(
            [
                storescu,
                "-aet",
                CALLING_AE,
                "-aec",
                "IMAGING",
                "+sd",
                "127.0.0.1",
                str(topology.ports["dicom"]),
                str(folder),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert sent.returncode == 0, sent.stderr
        refused = subprocess.run(
            [
                storescu,
                "-aet",
                "STRANGER",
                "-aec",
                "IMAGING",
                "127.0.0.1",
                str(topology.ports["dicom"]),
                str(next(folder.iterdir())),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode != 0  # not an allowed calling AE title

        headers = {"Authorization": f"Bearer {token}"}

        def triaged() -> dict[str, Any] | None:
            response = httpx.get(
                f"{http}/api/triage/studies/{study.StudyInstanceUID}", headers=headers, timeout=10
            )
            if response.status_code != 200:
                return None
            body: dict[str, Any] = response.json()
            return body if body.get("priority") == "HIGH" else None

        wait_for(triaged, 180, "study triaged HIGH by the triage worker", topology)

        def delivered() -> list[dict[str, Any]] | None:
            found = httpx.post(
                f"{orthanc_peer.url}/tools/find",
                auth=(ORTHANC_USER, ORTHANC_PASSWORD),
                json={"Level": "Instance", "Query": {"Modality": "CT"}, "Expand": True},
                timeout=10,
            ).json()
            return found if len(found) >= COUNT else None

        at_peer = wait_for(delivered, 180, "the study delivered to the Orthanc peer", topology)
        tags = orthanc_peer.get(f"/instances/{at_peer[0]['ID']}/simplified-tags")
        assert tags["PatientID"] != study.patient.PatientID  # de-identified with the project's key
        assert tags["PatientName"] != study.patient.PatientName
        assert tags["StudyInstanceUID"] != study.StudyInstanceUID

        metrics = httpx.get(f"{http}/metrics", timeout=10).text
        assert metric(metrics, "imaging_instances_received_total", source="c-store", status="stored") == COUNT
        worker_metrics = httpx.get(f"http://127.0.0.1:{topology.ports['triage-worker-metrics']}/metrics").text
        assert metric(worker_metrics, "imaging_triage_stage_duration_seconds_count") >= 1
        assert (
            metric(worker_metrics, "imaging_instances_received_total", source="triage", status="stored") >= 1
        )

        def delivered_rows() -> bool:  # the worker records the deliveries once the peer acknowledged them
            text = httpx.get(f"{http}/metrics", timeout=10).text
            done = sum(metric(text, "imaging_outbox", peer="orthanc", status=s) for s in ("sent", "verified"))
            return done >= COUNT

        wait_for(delivered_rows, 60, "deliveries recorded in the outbox", topology)
    finally:
        topology.stop()
