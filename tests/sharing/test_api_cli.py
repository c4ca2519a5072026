"""The sharing REST API (imaging.sharing.api, mounted in the HTTP app) with real role tokens, and
the `imaging share | consent | audit` command lines."""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from imaging.archive import Archive
from imaging.index.schema import ApiToken
from imaging.jobs.runner import JobRunner
from imaging.research.projects import create_project
from imaging.sharing.delivery import register
from imaging.sharing.models import OutboxRow
from tests.sharing.conftest import count_instances, drive, ingest_study


def _token(archive: Archive, role: str, project: str = "") -> dict[str, str]:
    token = secrets.token_urlsafe(16)
    with archive.db.write() as s:
        s.add(ApiToken(token_hash=hashlib.sha256(token.encode()).hexdigest(), role=role, project=project))
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(make_archive: Callable[..., Archive], tmp_path: Path) -> Archive:
    return make_archive(
        tmp_path / "secured", dev_mode=False, stability_seconds=0, share_retry_base_seconds=0.05
    )


def test_api_roles_peers_policies_share_outbox_consent_audit_links(
    secured: Archive, site_b: Archive, start_gateway: Callable[[Archive], int]
) -> None:
    from dicomweb.app import create_app

    client = TestClient(create_app(secured))
    admin, clinician = _token(secured, "admin"), _token(secured, "clinician")
    researcher = _token(secured, "researcher", "proj")
    create_project(secured, "proj")
    port = start_gateway(site_b)

    assert client.get("/api/peers").status_code == 401
    assert client.get("/api/peers", headers=clinician).status_code == 403
    body = {"kind": "dimse", "ae_title": "SITEB", "host": "127.0.0.1", "port": port, "secret": "unused"}
    r = client.put("/api/peers/siteb", json=body, headers=admin)
    assert r.status_code == 200 and "secret" not in r.json()
    assert client.put("/api/peers/bad", json={"kind": "dimse"}, headers=admin).status_code == 400
    r = client.put(
        "/api/policies/ct",
        json={"modalities": ["CT"], "priorities": ["HIGH"], "peers": ["siteb"], "project": "proj"},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["priorities"] == ["HIGH"]
    assert (
        client.put(
            "/api/policies/x", json={"peers": ["nowhere"], "project": "proj"}, headers=admin
        ).status_code
        == 404
    )
    assert [p["name"] for p in client.get("/api/policies", headers=admin).json()] == ["ct"]

    study = ingest_study(secured, 1, series=1, count=2)
    runner = JobRunner(secured)
    register(runner, secured)
    runner.tick()
    share = {"study_uid": study.StudyInstanceUID, "peers": ["siteb"], "project": "proj"}
    assert client.post("/api/shares", json=share, headers=researcher).status_code == 403
    r = client.post("/api/shares", json=share, headers=clinician)
    assert r.status_code == 202 and r.json() == {"queued": {"siteb": 2}}
    assert (
        client.post("/api/shares", json={**share, "peers": ["nowhere"]}, headers=clinician).status_code == 404
    )
    drive(runner, lambda: count_instances(site_b) == 2)
    runner.tick()
    status = client.get("/api/outbox", headers=clinician).json()
    assert status["summary"] == {"siteb": {"verified": 2}}
    assert status["deliveries"][0]["StudyInstanceUID"] == study.StudyInstanceUID

    # Opt-out by API: a second study queued for a peer that is now down gets cancelled.
    client.put("/api/peers/siteb", json={**body, "port": 9}, headers=admin)
    other = ingest_study(secured, 2, series=1, count=2)
    runner.tick()
    client.post("/api/shares", json={**share, "study_uid": other.StudyInstanceUID}, headers=clinician)
    patient = {"PatientID": other.patient.PatientID}
    assert client.post("/api/consent/opt-outs", json=patient, headers=clinician).status_code == 403
    assert client.post("/api/consent/opt-outs", json=patient, headers=admin).json() == {"recorded": True}
    assert client.post("/api/consent/lookup", json=patient, headers=admin).json() == {"opted_out": True}
    with secured.db.read() as s:
        assert set(
            s.scalars(select(OutboxRow.status).where(OutboxRow.StudyInstanceUID == other.StudyInstanceUID))
        ) == {"cancelled"}
    assert (
        client.post(
            "/api/shares", json={**share, "study_uid": other.StudyInstanceUID}, headers=clinician
        ).status_code
        == 409
    )
    r = client.post("/api/consent/import", content="PatientID\nP9,\nP10,HOSP\n", headers=admin)
    assert r.json() == {"added": 2}

    records = client.get("/api/audit", params={"event": "110104"}, headers=admin).json()
    assert {r["outcome"] for r in records} == {"0", "4"}
    assert client.get("/api/audit", headers=clinician).status_code == 403
    xml = client.get("/api/audit", params={"format": "xml", "event": "110110"}, headers=admin)
    assert xml.status_code == 200 and xml.text.count("<AuditMessage>") == 3
    jsonl = client.get("/api/audit", params={"format": "jsonl"}, headers=admin).text.splitlines()
    assert len(jsonl) == len(client.get("/api/audit", headers=admin).json())
    assert other.patient.PatientID not in "\n".join(jsonl)

    # Share links: clinicians for clinical studies, researchers for their project only; revocation.
    r = client.post(
        "/api/share-links",
        json={"study_uids": [study.StudyInstanceUID], "expires_in_days": 2},
        headers=clinician,
    )
    assert r.status_code == 201 and r.json()["token"].startswith("shl_")
    link_id, token = r.json()["id"], r.json()["token"]
    assert (
        client.post(
            "/api/share-links", json={"study_uids": [study.StudyInstanceUID]}, headers=researcher
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/api/share-links",
            json={"study_uids": [study.StudyInstanceUID], "expires_in_days": 365},
            headers=clinician,
        ).status_code
        == 400
    )
    listed = client.get("/api/share-links", headers=clinician).json()
    assert [link["id"] for link in listed] == [link_id] and token not in json.dumps(listed)
    assert client.delete(f"/api/share-links/{link_id}", headers=researcher).status_code == 403
    assert client.delete(f"/api/share-links/{link_id}", headers=clinician).json() == {"revoked": True}
    assert client.get("/api/share-links", headers=clinician).json() == []
    from imaging.sharing.links import resolve

    with secured.db.read() as s:
        assert resolve(s, token) is None


def test_cli_share_consent_audit(
    site_a: Archive, site_b: Archive, start_gateway: Callable[[Archive], int], tmp_path: Path
) -> None:
    from imaging.cli import app

    cli = CliRunner()
    data = ["--data-dir", str(site_a.settings.data_dir)]
    port = start_gateway(site_b)
    create_project(site_a, "proj")
    r = cli.invoke(
        app,
        [
            "share",
            "peer",
            "add",
            "siteb",
            "--kind",
            "dimse",
            "--ae-title",
            "SITEB",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *data,
        ],
    )
    assert r.exit_code == 0, r.output
    r = cli.invoke(
        app,
        [
            "share",
            "policy",
            "add",
            "never",
            "--peer",
            "siteb",
            "--project",
            "proj",
            "--modality",
            "XA",
            *data,
        ],
    )
    assert r.exit_code == 0, r.output
    study = ingest_study(site_a, 1, series=1, count=2)
    runner = JobRunner(site_a)
    register(runner, site_a)
    runner.tick()
    r = cli.invoke(
        app, ["share", "study", study.StudyInstanceUID, "--peer", "siteb", "--project", "proj", *data]
    )
    assert r.exit_code == 0, r.output
    drive(runner, lambda: count_instances(site_b) == 2)
    runner.tick()
    r = cli.invoke(app, ["share", "status", *data])
    assert r.exit_code == 0 and "siteb" in r.output and "verified 2" in r.output
    r = cli.invoke(app, ["share", "study", "1.2.3", "--peer", "siteb", "--project", "proj", *data])
    assert r.exit_code == 1

    csv_file = tmp_path / "optouts.csv"
    csv_file.write_text("PatientID,IssuerOfPatientID\nA1,\nA2,HOSP\n")
    assert cli.invoke(app, ["consent", "import", str(csv_file), *data]).exit_code == 0
    r = cli.invoke(app, ["consent", "opt-out", study.patient.PatientID, *data])
    assert r.exit_code == 0
    r = cli.invoke(
        app, ["share", "study", study.StudyInstanceUID, "--peer", "siteb", "--project", "proj", *data]
    )
    assert r.exit_code == 1 and "opted out" in r.output

    r = cli.invoke(app, ["share", "link", "create", "--study", study.StudyInstanceUID, "--days", "1", *data])
    assert r.exit_code == 0 and r.stdout.strip().splitlines()[-1].startswith("shl_")
    assert cli.invoke(app, ["share", "link", "revoke", "1", *data]).exit_code == 0

    out = tmp_path / "audit.jsonl"
    r = cli.invoke(app, ["audit", "export", "--format", "jsonl", "--output", str(out), *data])
    assert r.exit_code == 0, r.output
    events = [json.loads(line)["event_id"] for line in out.read_text().splitlines()]
    assert {"110102", "110104", "110112", "110110", "110113"} <= set(events)
