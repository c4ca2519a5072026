"""Peer authentication: every call to a peer's federation API carries a short-lived JWT (RFC 7519) signed
with the calling site's Ed25519 key (EdDSA, PyJWT), whose public key the called site registered for it.

Claims: `iss` the caller's site id (which peer, which key), `aud` the called site's id (a token for one
site is refused by every other), `iat`/`exp` (at most `federation_token_max_seconds` apart, with
`federation_clock_skew_seconds` of leeway), `jti` (a random id: each token is accepted once; used ids are
kept until the token expires), and the request it was made for — `htm` the method, `htu` the resource
below `/federation/v1` (what a proxy rewriting the path prefix leaves unchanged), `bdy` the SHA-256 of the
body — so a token captured in transit opens nothing else. Signed tokens pass through TLS-terminating
proxies, which mutual TLS does not.

Every refusal is audited (Security Alert, 110126 Node Authentication) and answered 401 with the reason;
nothing of the token is logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from typing import Any, NoReturn

import jwt
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from imaging import audit
from imaging.archive import Archive
from imaging.errors import NotAuthenticated, NotFound
from imaging.federation.keys import load_public_key, site_key
from imaging.federation.models import FederationPeer, TokenUse
from imaging.federation.peers import peer_by_site
from imaging.orm import utcnow

ALGORITHM = "EdDSA"
REQUIRED = ["iss", "aud", "iat", "exp", "jti", "htm", "htu", "bdy"]


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def sign(archive: Archive, *, audience: str, method: str, resource: str, body: bytes = b"") -> str:
    """A token for one call to the site `audience`."""
    settings = archive.settings
    now = int(time.time())
    claims = {
        "iss": settings.federation_site_id,
        "aud": audience,
        "iat": now,
        "exp": now + settings.federation_token_seconds,
        "jti": secrets.token_urlsafe(24),
        "htm": method.upper(),
        "htu": resource,
        "bdy": body_digest(body),
    }
    return jwt.encode(claims, site_key(settings), algorithm=ALGORITHM)


def verify(archive: Archive, token: str | None, *, method: str, resource: str, body: bytes) -> FederationPeer:
    """The registered peer that signed `token` for exactly this call; NotAuthenticated (audited) otherwise."""
    settings = archive.settings
    if not settings.federation_site_id:
        raise NotFound("federation is not enabled at this site")
    if not token:
        _refuse(archive, "", "a signed peer token is required")
    try:
        header = jwt.get_unverified_header(token)
        claimed = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        _refuse(archive, "", "malformed token")
    if header.get("alg") != ALGORITHM:
        _refuse(archive, "", "tokens must be signed with EdDSA")
    issuer = str(claimed.get("iss", ""))[:128]
    with archive.db.read() as session:
        peer = peer_by_site(session, issuer) if issuer else None
    if peer is None:
        _refuse(archive, issuer, "unknown peer site")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            load_public_key(peer.public_key),
            algorithms=[ALGORITHM],
            audience=settings.federation_site_id,
            issuer=peer.site_id,
            leeway=settings.federation_clock_skew_seconds,
            options={"require": REQUIRED},
        )
    except jwt.ExpiredSignatureError:
        _refuse(archive, issuer, "token expired")
    except jwt.InvalidAudienceError:
        _refuse(archive, issuer, "token made for another site")
    except jwt.ImmatureSignatureError:
        _refuse(archive, issuer, "token not valid yet")
    except jwt.InvalidSignatureError:
        _refuse(archive, issuer, "bad signature")
    except jwt.PyJWTError as exc:
        _refuse(archive, issuer, f"invalid token ({type(exc).__name__})")
    issued, expires = int(claims["iat"]), int(claims["exp"])
    if issued > time.time() + settings.federation_clock_skew_seconds:
        _refuse(archive, issuer, "token issued in the future")
    if expires - issued > settings.federation_token_max_seconds:
        _refuse(archive, issuer, "token lifetime too long")
    if (claims["htm"], claims["htu"], claims["bdy"]) != (method.upper(), resource, body_digest(body)):
        _refuse(archive, issuer, "token made for another request")
    _remember(archive, peer, str(claims["jti"])[:128], expires)
    return peer


def _remember(archive: Archive, peer: FederationPeer, jti: str, expires: int) -> None:
    """Record the token id; a second use is a replay. Ids of expired tokens are dropped on the way (an
    expired token is refused by its `exp` anyway)."""
    skew = archive.settings.federation_clock_skew_seconds
    until = dt.datetime.fromtimestamp(expires + skew, dt.UTC).replace(tzinfo=None)
    try:
        with archive.db.write() as session:
            session.execute(delete(TokenUse).where(TokenUse.expires_at < utcnow()))
            session.add(TokenUse(site_id=peer.site_id, jti=jti, expires_at=until))
    except IntegrityError:
        _refuse(archive, peer.site_id, "token replayed")


def _refuse(archive: Archive, issuer: str, reason: str) -> NoReturn:
    """Audit the refusal (PS3.15 Security Alert, 110126 Node Authentication) and raise NotAuthenticated."""
    with archive.db.write() as session:
        audit.record(
            session,
            audit.AuditEvent.SECURITY_ALERT,
            user=f"site:{issuer[:120]}" if issuer else "unknown",
            action="E",
            outcome=audit.Outcome.SERIOUS_FAILURE,
            source="federation",
            detail=f"110126 Node Authentication: peer request refused: {reason}",
        )
    raise NotAuthenticated(f"peer authentication failed: {reason}")
