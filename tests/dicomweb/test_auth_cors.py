"""Tokens and roles, CORS preflight, Cross-Origin-Resource-Policy, health, capabilities, OpenAPI."""

from __future__ import annotations

import datetime as dt

import httpx

from tests.dicomweb.conftest import Seeded, add_token


def test_tokens_and_roles(seeded: Seeded) -> None:
    root, url = seeded.server.root, seeded.server.url
    study = seeded.studies["ct"]
    project = f"{url}/projects/lung/dicomweb"

    def get(path: str, token: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.get(path, headers=headers)

    r = get(f"{root}/studies", None)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert get(f"{root}/studies", "not-a-token").status_code == 401
    assert httpx.get(f"{root}/studies", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    assert get(f"{root}/studies", seeded.tokens["clinician"]).status_code == 200
    assert get(f"{root}/studies/{study}/metadata", seeded.tokens["ingest"]).status_code == 403
    assert get(f"{root}/studies", seeded.tokens["researcher"]).status_code == 403
    assert get(f"{project}/studies", seeded.tokens["researcher"]).status_code == 200
    assert get(f"{url}/projects/other/dicomweb/studies", seeded.tokens["researcher"]).status_code == 403
    assert get(f"{project}/studies", seeded.tokens["other-researcher"]).status_code == 403
    assert get(f"{project}/studies", seeded.tokens["clinician"]).status_code == 403
    assert get(f"{project}/studies", seeded.tokens["admin"]).status_code == 200
    assert get(f"{url}/projects/BAD..NAME/dicomweb/studies", seeded.tokens["admin"]).status_code == 404
    revoked = add_token(seeded.archive, "admin", revoked=True)
    expired = add_token(seeded.archive, "admin", expires_at=dt.datetime(2000, 1, 1))
    assert get(f"{root}/studies", revoked).status_code == 401
    assert get(f"{root}/studies", expired).status_code == 401
    health = httpx.get(f"{url}/health").json()  # readiness: index and storage here (tests/observability)
    assert health["status"] == "ok" and health["components"]["index"] == {"ready": True}
    assert httpx.get(f"{url}/health/live").json() == {"status": "ok"}
    assert get(f"{root}/capabilities", None).status_code == 401
    caps = get(f"{root}/capabilities", seeded.tokens["admin"]).json()
    assert caps["qido"]["maxResults"] == 20 and "stow" in caps


def test_dev_mode_opens_everything(fresh) -> None:
    s = fresh(dev_mode=True)
    assert httpx.get(f"{s.server.root}/studies").status_code == 200
    assert httpx.get(f"{s.server.url}/projects/any/dicomweb/studies").status_code == 200


def test_cors_preflight_and_resource_policy(seeded: Seeded) -> None:
    r = httpx.options(
        f"{seeded.server.root}/studies",
        headers={
            "Origin": "http://viewer.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, accept",
        },
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://viewer.example"
    allowed = r.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "accept" in allowed
    denied = httpx.options(
        f"{seeded.server.root}/studies",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert "access-control-allow-origin" not in denied.headers
    with seeded.client(headers={"Origin": "http://viewer.example"}) as c:
        r = c.get("/studies")
    assert r.headers["cross-origin-resource-policy"] == "cross-origin"
    assert r.headers["access-control-allow-origin"] == "http://viewer.example"
    assert "warning" in r.headers["access-control-expose-headers"].lower()


def test_openapi_lists_the_routes(seeded: Seeded) -> None:
    paths = httpx.get(f"{seeded.server.url}/openapi.json").json()["paths"]
    for path in (
        "/dicomweb/studies",
        "/dicomweb/studies/{study}/series/{series}/metadata",
        "/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/{frames}",
        "/projects/{project}/dicomweb/studies",
        "/health",
    ):
        assert path in paths, path


def test_verified_tokens_are_remembered_briefly(fresh, monkeypatch) -> None:
    """imaging.access.tokens remembers a verified token for TOKEN_CACHE_SECONDS: revocation in the index takes
    effect within that time; expiry is checked on every request; unknown tokens are never remembered."""
    from sqlalchemy import update

    from imaging.access import tokens as auth
    from imaging.index.schema import ApiToken

    s = fresh()
    token = add_token(s.archive, "clinician")
    clock = [1000.0]
    monkeypatch.setattr(auth, "_clock", lambda: clock[0])
    with s.client(token=None, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get("/studies").status_code == 200
        with s.archive.db.write() as session:
            session.execute(update(ApiToken).values(revoked=True))
        clock[0] += auth.TOKEN_CACHE_SECONDS / 2
        assert c.get("/studies").status_code == 200  # remembered: still open for a moment
        clock[0] += auth.TOKEN_CACHE_SECONDS
        assert c.get("/studies").status_code == 401  # looked up again: revoked
        clock[0] += 0.1
        assert c.get("/studies").status_code == 401  # a refusal is not remembered as anything
    other = fresh()  # another index: the token means nothing there
    with other.client(token=None, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get("/studies").status_code == 401
    with s.archive.db.write() as session:
        session.execute(update(ApiToken).values(revoked=False))
    with s.client(token=None, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get("/studies").status_code == 200
        auth.forget_tokens()
        with s.archive.db.write() as session:
            session.execute(update(ApiToken).values(revoked=True))
        assert c.get("/studies").status_code == 401  # forgotten: looked up at once


def test_expiry_is_checked_on_every_request(fresh, monkeypatch) -> None:
    from imaging.access import tokens as auth

    s = fresh()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    token = add_token(s.archive, "clinician", expires_at=now + dt.timedelta(minutes=1))
    monkeypatch.setattr(auth, "_clock", lambda: 1000.0)  # the verification never ages
    with s.client(token=None, headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get("/studies").status_code == 200
        monkeypatch.setattr(auth, "utcnow", lambda: now + dt.timedelta(minutes=2))
        r = c.get("/studies")
        assert r.status_code == 401 and "expired" in r.json()["detail"]
