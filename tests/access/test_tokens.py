"""API tokens (issue 12, findings 3 and 4): what a token may name is checked at creation and on every use;
tokens expire, are listed and revoked — by the CLI, the admin REST API and the domain functions alike, each
change audited (Security Alert, 110137)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from imaging import audit
from imaging.access.principal import Permission, Principal, Role, authorize
from imaging.access.tokens import (
    MAX_DAYS,
    create_token,
    list_tokens,
    parse_expiry,
    revoke_token,
    verify,
)
from imaging.archive import Archive
from imaging.cli import app
from imaging.config import load_settings
from imaging.errors import InvalidRequest, NotAuthenticated, NotAuthorized, NotFound
from imaging.index.schema import utcnow
from imaging.research.projects import create_project
from tests.dicomweb.conftest import Seeded, add_token

runner = CliRunner()


@pytest.fixture
def archive(tmp_path: Path):
    a = Archive.open(load_settings(data_dir=tmp_path / "data"))
    yield a
    a.close()


def test_researcher_never_reaches_the_clinical_partition() -> None:

    # Even a token that (from an older version, or a database edit) names the clinical partition.
    clinical = Principal("researcher", frozenset({"clinical"}), 1)
    for permission in (Permission.READ, Permission.LINK, Permission.STORE, Permission.COHORTS):
        with pytest.raises(NotAuthorized):
            authorize(clinical, permission, "clinical")
    lung = Principal("researcher", frozenset({"lung"}), 2)
    authorize(lung, Permission.READ, "lung")
    with pytest.raises(NotAuthorized):
        authorize(lung, Permission.READ, "neuro")


def test_creation_refuses_what_a_token_could_never_use(archive: Archive) -> None:
    with pytest.raises(InvalidRequest, match="clinical"):
        create_token(archive.db, role="researcher", project="clinical")
    with pytest.raises(InvalidRequest, match="no such research project"):
        create_token(archive.db, role="researcher", project="later")
    with pytest.raises(InvalidRequest):
        create_token(archive.db, role="researcher")
    with pytest.raises(InvalidRequest):
        create_token(archive.db, role="clinician", project="lung")
    with pytest.raises(InvalidRequest):
        create_token(archive.db, role="root")
    with pytest.raises(InvalidRequest):
        create_token(archive.db, role="admin", expires_at=utcnow() - dt.timedelta(seconds=1))
    with pytest.raises(InvalidRequest):
        create_token(archive.db, role="admin", expires_at=utcnow() + dt.timedelta(days=MAX_DAYS + 1))
    with archive.db.read() as s:
        assert list_tokens(s, include_inactive=True) == []


def test_a_project_created_later_does_not_open_to_an_older_token(archive: Archive) -> None:
    # What `create_token` now refuses, an older archive let through: a token naming a future project.
    early = add_token(archive, "researcher", "lung")
    with pytest.raises(NotAuthenticated):
        verify(archive.db, early)  # no such project: opens nothing
    create_project(archive, "lung")
    with pytest.raises(NotAuthenticated):
        verify(archive.db, early)  # the project is younger than the token
    token, _ = create_token(archive.db, role="researcher", project="lung")
    assert verify(archive.db, token).projects == frozenset({"lung"})


def test_expiry_list_revoke_audited(archive: Archive) -> None:
    short, row = create_token(
        archive.db, role="clinician", expires_at=utcnow() + dt.timedelta(seconds=1), created_by="cli"
    )
    lasting, lasting_row = create_token(archive.db, role="admin", created_by="cli")
    assert verify(archive.db, short).role == Role.CLINICIAN
    with archive.db.read() as s:
        assert [t.token_pk for t in list_tokens(s)] == [row.token_pk, lasting_row.token_pk]
    assert revoke_token(archive.db, lasting_row.token_pk, user="token:9:admin")
    assert not revoke_token(archive.db, lasting_row.token_pk)
    with pytest.raises(NotAuthenticated):
        verify(archive.db, lasting)  # at once in this process, despite the verification cache
    with pytest.raises(NotFound):
        revoke_token(archive.db, 999)
    with archive.db.read() as s:
        assert [t.token_pk for t in list_tokens(s)] == [row.token_pk]
        alerts = audit.query(s, event=audit.AuditEvent.SECURITY_ALERT)
    assert [(a.user, a.event_type, a.source) for a in alerts] == [
        ("cli", "110137", f"token:{row.token_pk}"),
        ("cli", "110137", f"token:{lasting_row.token_pk}"),
        ("token:9:admin", "110137", f"token:{lasting_row.token_pk}"),
    ]
    assert short not in json.dumps([audit.to_dict(a) for a in alerts])


def test_parse_expiry() -> None:
    now = dt.datetime(2026, 1, 1)
    assert parse_expiry("90d", now=now) == now + dt.timedelta(days=90)
    assert parse_expiry("12h", now=now) == now + dt.timedelta(hours=12)
    assert parse_expiry("2027-02-03", now=now) == dt.datetime(2027, 2, 3)
    assert parse_expiry("2027-02-03T10:00:00+01:00", now=now) == dt.datetime(2027, 2, 3, 9)
    assert parse_expiry("never") is None
    for bad in ("1e308d", "999999d", "soon", "", "9" * 400):
        with pytest.raises(InvalidRequest):
            parse_expiry(bad, now=now)


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    refused = runner.invoke(app, ["token", "create", "--role", "researcher", "--project", "clinical", *data])
    assert refused.exit_code == 1 and "clinical" in refused.output
    refused = runner.invoke(app, ["token", "create", "--role", "researcher", "--project", "nope", *data])
    assert refused.exit_code == 1 and "no such research project" in refused.output
    made = runner.invoke(
        app, ["token", "create", "--role", "ingest", "--expires", "30d", "--description", "PACS", *data]
    )
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[-1]
    forever = runner.invoke(app, ["token", "create", "--role", "admin", "--expires", "never", *data])
    assert forever.exit_code == 0
    listed = runner.invoke(app, ["token", "list", "--json", *data])
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["id"], r["role"], r["description"], r["created_by"]) for r in rows] == [
        (1, "ingest", "PACS", "cli"),
        (2, "admin", "", "cli"),
    ]
    assert rows[0]["expires_at"] and rows[1]["expires_at"] is None and token not in listed.stdout
    assert runner.invoke(app, ["token", "revoke", "1", *data]).exit_code == 0
    assert runner.invoke(app, ["token", "revoke", "7", *data]).exit_code == 1
    active = [
        json.loads(line)["id"]
        for line in runner.invoke(app, ["token", "list", "--json", *data]).stdout.splitlines()
    ]
    every = runner.invoke(app, ["token", "list", "--json", "--all", *data]).stdout.splitlines()
    assert active == [2] and len(every) == 2
    assert runner.invoke(app, ["token", "list", *data]).exit_code == 0  # the table


def test_admin_rest_api(fresh) -> None:
    s: Seeded = fresh()
    create_project(s.archive, "lung")
    clinician = add_token(s.archive, "clinician")
    with httpx.Client(base_url=s.server.url, headers={"Authorization": f"Bearer {s.tokens['admin']}"}) as api:
        made = api.post("/api/tokens", json={"role": "researcher", "project": "lung", "expires": "7d"})
        assert made.status_code == 201, made.text
        token, token_id = made.json()["token"], made.json()["id"]
        assert made.json()["created_by"].startswith("token:") and made.json()["project"] == "lung"
        assert api.post("/api/tokens", json={"role": "researcher", "project": "clinical"}).status_code == 400
        assert api.post("/api/tokens", json={"role": "researcher", "project": "later"}).status_code == 400
        assert api.post("/api/tokens", json={"role": "admin", "expires": "1e308d"}).status_code == 400
        listed = api.get("/api/tokens").json()
        assert token_id in [t["id"] for t in listed] and token not in json.dumps(listed)
        with httpx.Client(base_url=s.server.url, headers={"Authorization": f"Bearer {token}"}) as researcher:
            assert researcher.get("/projects/lung/dicomweb/studies").status_code == 200
            assert researcher.get("/api/tokens").status_code == 403
            assert api.delete(f"/api/tokens/{token_id}").json() == {"revoked": True}
            assert researcher.get("/projects/lung/dicomweb/studies").status_code == 401  # at once
        assert api.delete("/api/tokens/999").status_code == 404
        assert api.delete(f"/api/tokens/{2**70}").status_code == 400
    with httpx.Client(base_url=s.server.url, headers={"Authorization": f"Bearer {clinician}"}) as other:
        assert other.get("/api/tokens").status_code == 403
        assert other.post("/api/tokens", json={"role": "admin"}).status_code == 403


def test_researcher_token_naming_clinical_reaches_nothing_over_http(seeded: Seeded) -> None:
    """Finding 3: `--project clinical` on a researcher token was accepted and let it create a share link to
    a clinical study. Such a row (inserted directly: creation refuses it now) opens nothing at all."""
    study = seeded.studies["ct"]
    for project in ("clinical", "lung"):
        token = add_token(seeded.archive, "researcher", project)
        headers = {"Authorization": f"Bearer {token}"}
        link = httpx.post(
            f"{seeded.server.url}/api/share-links",
            json={"study_uids": [study], "partition": "clinical"},
            headers=headers,
        )
        assert link.status_code in (401, 403), (project, link.text)
        assert httpx.get(f"{seeded.server.root}/studies/{study}/metadata", headers=headers).status_code in (
            401,
            403,
        )
