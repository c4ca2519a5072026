"""OpenID Connect against a real provider (LemonLDAP::NG, tests/infra/oidc_provider.py): the API as a
resource server (access tokens by discovery and JWKS; issuer, audience, expiry, algorithms, key rotation with
a rate-limited JWKS refetch; claims mapped to roles and projects) and the browser login (authorization code
with PKCE through the archive, ending in a session cookie — no token in any URL)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from imaging import audit
from imaging.access.oidc import OpenIDProvider as ResourceServer
from imaging.archive import Archive
from imaging.config import load_settings
from imaging.errors import NotAuthenticated
from imaging.research.projects import create_project
from tests.conftest import require_program
from tests.dicomweb.conftest import Seeded, Server, add_token
from tests.infra.oidc_provider import LLNG_FASTCGI_SERVER, NGINX, OpenIDProvider, _hidden_inputs

pytestmark = pytest.mark.oidc

ROLE_MAP = {"archive-admin": "admin", "radiologist": "clinician", "researcher": "researcher"}


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenIDProvider]:
    require_program(LLNG_FASTCGI_SERVER)
    require_program(NGINX)
    with OpenIDProvider(access_token_lifetime=120) as op:
        yield op


def _settings(op: OpenIDProvider, data_dir: Path, **extra: Any) -> Any:
    values: dict[str, Any] = {
        "min_free_bytes": 0,
        "oidc_issuer": op.issuer,
        "oidc_audience": op.audience,
        "oidc_client_id": op.client_id,
        "oidc_client_secret": op.client_secret,
        "oidc_role_map": ROLE_MAP,
        "oidc_jwks_refresh_seconds": 1,
    }
    return load_settings(None, data_dir=data_dir, **{**values, **extra})


@pytest.fixture(scope="module")
def site(provider: OpenIDProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    archive = Archive.open(_settings(provider, tmp_path_factory.mktemp("oidc") / "data"))
    for project in ("neuro-mri", "lung-screening"):
        create_project(archive, project)
    server = Server(archive)
    provider.allow_redirect_uris(f"{server.url}/login/callback")
    yield Seeded(archive, server, {"admin": add_token(archive, "admin")})
    server.stop()
    archive.close()


def _get(site: Seeded, path: str, token: str) -> int:
    return httpx.get(f"{site.server.url}{path}", headers={"Authorization": f"Bearer {token}"}).status_code


def test_access_tokens_map_to_roles_and_projects(site: Seeded, provider: OpenIDProvider) -> None:
    admin = provider.password_grant("dwho", "dwho")["access_token"]
    clinician = provider.password_grant("rtyler", "rtyler")["access_token"]
    researcher = provider.password_grant("msmith", "msmith")["access_token"]
    assert _get(site, "/api/tokens", admin) == 200
    assert _get(site, "/dicomweb/studies", clinician) == 200
    assert _get(site, "/api/tokens", clinician) == 403
    assert _get(site, "/projects/neuro-mri/dicomweb/studies", researcher) == 200
    assert _get(site, "/projects/lung-screening/dicomweb/studies", researcher) == 403  # not in their claim
    assert _get(site, "/dicomweb/studies", researcher) == 403
    assert _get(site, "/dicomweb/studies", site.tokens["admin"]) == 200  # API tokens still work beside
    site.server.flush_audit()
    with site.archive.db.read() as s:
        users = {r.user for r in audit.query(s, event=audit.AuditEvent.QUERY)}
    assert {"oidc:rtyler", "oidc:msmith"} <= users


def _forge(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"x") -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return ".".join([part(json.dumps(header).encode()), part(json.dumps(claims).encode()), part(signature)])


def test_tokens_that_must_be_refused(site: Seeded, provider: OpenIDProvider) -> None:
    tokens = provider.password_grant("dwho", "dwho")
    good = tokens["access_token"]
    claims = jwt.decode(good, options={"verify_signature": False})
    kid = jwt.get_unverified_header(good)["kid"]
    header, payload, signature = good.split(".")
    tampered_claims = dict(claims, sub="somebody-else")
    refused = {
        # The ID token is signed by the same key, but for the client, not for this API (audience).
        "id token": tokens["id_token"],
        "bad signature": f"{header}.{payload}.{signature[:-4]}AAAA",
        "changed claims": f"{header}.{_forge({}, tampered_claims).split('.')[1]}.{signature}",
        "alg none": _forge({"alg": "none", "kid": kid}, claims, b""),
        "unknown kid": _forge({"alg": "RS256", "kid": "not-a-key"}, claims),
    }
    # HS256 keyed with the provider's public key: what a resource server confusing algorithms would accept.
    public_pem = jwt.PyJWKClient(provider.discovery()["jwks_uri"]).get_signing_key(kid).key

    pem = public_pem.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header_hs = {"alg": "HS256", "kid": kid, "typ": "JWT"}

    signing_input = _forge(header_hs, claims).rsplit(".", 1)[0]
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    refused["HS256 with the public key"] = (
        signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    )
    for name, token in refused.items():
        assert _get(site, "/dicomweb/studies", token) == 401, name
    assert _get(site, "/dicomweb/studies", good) == 200


def test_unknown_key_ids_refetch_the_jwks_at_most_once_per_interval(
    provider: OpenIDProvider, tmp_path: Path
) -> None:
    fetches: list[str] = []
    client = httpx.Client(timeout=10, event_hooks={"request": [lambda r: fetches.append(r.url.path)]})
    server = ResourceServer(_settings(provider, tmp_path / "d", oidc_jwks_refresh_seconds=60), client)
    good = provider.password_grant("rtyler", "rtyler")["access_token"]
    assert server.verify(good).role == "clinician"
    claims = jwt.decode(good, options={"verify_signature": False})
    for n in range(20):
        with pytest.raises(NotAuthenticated):
            server.verify(_forge({"alg": "RS256", "kid": f"forged-{n}"}, claims))
    jwks_path = urllib.parse.urlsplit(provider.discovery()["jwks_uri"]).path
    assert fetches.count(jwks_path) == 1  # the first key lookup; no refetch for 20 forged key ids
    server.close()


def test_expired_token(provider: OpenIDProvider, tmp_path: Path) -> None:
    require_program(LLNG_FASTCGI_SERVER)
    with OpenIDProvider(access_token_lifetime=2) as short:
        server = ResourceServer(_settings(short, tmp_path / "d", oidc_clock_skew_seconds=0))
        token = short.password_grant("rtyler", "rtyler")["access_token"]
        assert server.verify(token).role == "clinician"
        time.sleep(3.5)
        with pytest.raises(NotAuthenticated, match="expired"):
            server.remembered(token) or server.verify(token)
        server.close()


def test_key_rotation(site: Seeded, provider: OpenIDProvider) -> None:
    before = provider.password_grant("rtyler", "rtyler")["access_token"]
    assert _get(site, "/dicomweb/studies", before) == 200
    provider.rotate_signing_key()
    time.sleep(2.1)  # past the verification cache and the JWKS refresh interval
    after = provider.password_grant("rtyler", "rtyler")["access_token"]
    assert _get(site, "/dicomweb/studies", after) == 200  # the new key is fetched on its unknown kid
    assert _get(site, "/dicomweb/studies", before) == 401  # the old key is no longer published


def _browser_login(site: Seeded, user: str, password: str) -> httpx.Client:
    """Sign in through the archive as a browser does: /login → the provider's form → /login/callback."""
    browser = httpx.Client(timeout=30, follow_redirects=False)
    to_provider = browser.get(f"{site.server.url}/login", params={"next": "/dicomweb/studies"})
    assert to_provider.status_code == 302
    authorize = to_provider.headers["location"]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["response_type"] == ["code"]
    form_page = browser.get(authorize)
    form = _hidden_inputs(form_page.text)
    form.update(user=user, password=password)
    issuer = authorize.split("/", 3)[:3]
    response = browser.post("/".join(issuer) + "/", data=form)
    callback = f"{site.server.url}/login/callback"
    while response.status_code in (301, 302, 303) and not response.headers["location"].startswith(callback):
        response = browser.get(urllib.parse.urljoin(str(response.url), response.headers["location"]))
    assert response.headers["location"].startswith(callback), response.text[:300]
    return browser, browser.get(response.headers["location"])


def test_browser_login_with_pkce_sets_a_session_cookie(site: Seeded) -> None:
    browser, landed = _browser_login(site, "rtyler", "rtyler")
    assert landed.status_code == 303 and landed.headers["location"] == "/dicomweb/studies"
    cookie = landed.headers["set-cookie"]
    assert cookie.startswith("imaging_session=") and "HttpOnly" in cookie
    assert "token" not in landed.headers["location"]
    assert browser.get(f"{site.server.url}/dicomweb/studies").status_code == 200
    assert browser.get(f"{site.server.url}/api/tokens").status_code == 403  # a clinician
    # A code replayed (or a forged state) is refused, and audited.
    assert (
        browser.get(f"{site.server.url}/login/callback", params={"state": "forged", "code": "x"}).status_code
        == 401
    )
    browser.close()
    site.server.flush_audit()
    with site.archive.db.read() as s:
        logins = audit.query(s, event=audit.AuditEvent.USER_AUTHENTICATION)
    assert ("oidc:rtyler", "0", "110122") in {(r.user, r.outcome, r.event_type) for r in logins}
    assert any(r.outcome != "0" and "login refused" in r.detail for r in logins)
