"""Peer authentication on loopback: site B's peer API accepts a token site A signed for exactly that call,
once; wrong, expired, replayed, misdirected, tampered and unsigned tokens are refused (401) and audited
(Security Alert, 110126 Node Authentication), and no count is answered for them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from imaging import audit
from imaging.federation.keys import public_key_pem, site_key
from imaging.federation.models import QueryLog, TokenUse
from imaging.federation.peers import set_peer
from imaging.federation.signing import body_digest, sign
from tests.federation.conftest import Site, federate

BODY = json.dumps({"definition": {"filters": {"Modality": "CT"}}}, separators=(",", ":")).encode()


def claims(issuer: Site, audience: Site, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": issuer.site_id,
        "aud": audience.site_id,
        "iat": now,
        "exp": now + 60,
        "jti": f"jti-{time.monotonic_ns()}",
        "htm": "POST",
        "htu": "/counts",
        "bdy": body_digest(BODY),
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def post(site: Site, token: str | None, body: bytes = BODY, resource: str = "/counts") -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"{site.server.url}/federation/v1{resource}", content=body, headers=headers, timeout=30)


def alerts(site: Site) -> list[str]:
    with site.archive.db.read() as session:
        return [
            r.detail
            for r in audit.query(session, event=audit.AuditEvent.SECURITY_ALERT)
            if "110126" in r.detail
        ]


def test_signed_tokens_wrong_expired_replayed_refused(make_site: Callable[..., Site]) -> None:
    a, b, c = make_site("a"), make_site("b"), make_site("c")
    federate(a, b, c)
    key_a = site_key(a.archive.settings)

    # A good token, made by the client code: accepted once.
    good = sign(a.archive, audience=b.site_id, method="POST", resource="/counts", body=BODY)
    first = post(b, good)
    assert first.status_code == 200, first.text
    assert first.json()["site"] == "site-b"
    replay = post(b, good)
    assert (
        replay.status_code == 401 and replay.json()["detail"] == "peer authentication failed: token replayed"
    )

    impostor = Ed25519PrivateKey.generate()  # claims to be A, signs with a key B never registered
    cases: list[tuple[str | None, bytes, str]] = [
        (None, BODY, "a signed peer token is required"),
        ("not-a-jwt", BODY, "malformed token"),
        (jwt.encode(claims(a, b), impostor, algorithm="EdDSA"), BODY, "bad signature"),
        (jwt.encode(claims(a, c), key_a, algorithm="EdDSA"), BODY, "token made for another site"),
        (
            jwt.encode(
                claims(a, b, iat=int(time.time()) - 400, exp=int(time.time()) - 100), key_a, algorithm="EdDSA"
            ),
            BODY,
            "token expired",
        ),
        (
            jwt.encode(claims(a, b, exp=int(time.time()) + 3600), key_a, algorithm="EdDSA"),
            BODY,
            "token lifetime too long",
        ),
        (
            jwt.encode(
                claims(a, b, iat=int(time.time()) + 600, exp=int(time.time()) + 660), key_a, algorithm="EdDSA"
            ),
            BODY,
            "token not valid yet",
        ),
        (
            jwt.encode(claims(a, b, jti=None), key_a, algorithm="EdDSA"),
            BODY,
            "invalid token (MissingRequiredClaimError)",
        ),
        (jwt.encode(claims(a, b, iss="site-unknown"), key_a, algorithm="EdDSA"), BODY, "unknown peer site"),
        # Signed for another body or resource: a captured token opens nothing else.
        (
            jwt.encode(claims(a, b), key_a, algorithm="EdDSA"),
            BODY.replace(b"CT", b"MR"),
            "token made for another request",
        ),
        (
            jwt.encode(claims(a, b, htu="/ping"), key_a, algorithm="EdDSA"),
            BODY,
            "token made for another request",
        ),
        # Algorithm confusion: an HMAC token keyed with A's public key text.
        (
            jwt.encode(claims(a, b), "a-shared-secret-that-is-long-enough-for-hs256", algorithm="HS256"),
            BODY,
            "tokens must be signed with EdDSA",
        ),
    ]
    for token, body, reason in cases:
        r = post(b, token, body)
        assert r.status_code == 401, (reason, r.text)
        assert r.json()["detail"] == f"peer authentication failed: {reason}"
        assert r.headers["www-authenticate"].startswith("Bearer")
    details = alerts(b)
    assert len(details) == len(cases) + 1  # and the replay
    assert all(d.startswith("110126 Node Authentication: peer request refused: ") for d in details)
    with b.archive.db.read() as session:
        assert session.scalar(select(func.count()).select_from(QueryLog)) == 1  # the good call only
        assert session.scalar(select(func.count()).select_from(TokenUse)) == 1
        users = {
            r.user
            for r in audit.query(session, event=audit.AuditEvent.SECURITY_ALERT)
            if "110126" in r.detail
        }
    assert users == {"site:site-a", "site:site-unknown", "unknown"}

    # A peer that B removed is unknown from then on.
    with b.http() as http:
        assert http.delete("/api/federation/peers/a").status_code == 204
    late = sign(a.archive, audience=b.site_id, method="POST", resource="/counts", body=BODY)
    assert post(b, late).json()["detail"] == "peer authentication failed: unknown peer site"


def test_federation_off_and_archive_tokens_do_not_open_the_peer_api(make_site: Callable[..., Site]) -> None:
    a, b = make_site("a"), make_site("b", federation_site_id="")
    set_peer(
        a.archive, "b", site_id="site-b", url=b.server.url, public_key=public_key_pem(b.archive.settings)
    )
    token = sign(a.archive, audience="site-b", method="POST", resource="/counts", body=BODY)
    assert post(b, token).status_code == 404  # federation is off at B: nothing answers
    c = make_site("c")
    federate(a, c)
    big = post(c, sign(a.archive, audience="site-c", method="POST", resource="/counts"), b"{" * 100_000)
    assert big.status_code == 413  # read no further than a definition could need, before any check
    r = post(c, c.tokens["admin"])  # an archive token is not a peer's signature
    assert r.status_code == 401 and r.json()["detail"] == "peer authentication failed: malformed token"
