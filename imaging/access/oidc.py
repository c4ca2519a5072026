"""OpenID Connect: the archive as a resource server for the hospital's OpenID Provider, and as a confidential
client for browser logins (authorization code with PKCE).

Resource server: a bearer token that is a JWT is validated against the provider found by discovery
(`<issuer>/.well-known/openid-configuration`, whose `issuer` must be the configured one): signature by the
key its `kid` names in the provider's JWKS, `iss`, `aud`, `exp`, `nbf`, `iat` with `oidc_clock_skew_seconds`
of leeway. Only asymmetric algorithms are accepted (RS*, PS*, ES*; never `none` or HS*, which would let a
public key act as a shared secret). Keys are cached by `kid`; an unknown `kid` (the provider rotated its key)
refetches the JWKS, at most once per `oidc_jwks_refresh_seconds`, so forged `kid`s cannot make the archive
hammer the provider. Cryptography is PyJWT's.

Claims map to a role and projects: the values of `oidc_role_claim` (a dotted path, e.g. `realm_access.roles`
for Keycloak) through `oidc_role_map` (when it is empty, values that are role names are those roles; when
set, only the values it names count); with several roles, the most privileged wins
(principal.ROLE_PRECEDENCE). `oidc_project_claim` lists a researcher's projects, likewise through
`oidc_project_map`. A token that maps to no role is refused.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from imaging.access.principal import ROLE_PRECEDENCE, Principal, Role, Via
from imaging.config import Settings
from imaging.errors import InvalidRequest, NotAuthenticated, ProcessingFailure
from imaging.partition import is_project_name

# Asymmetric JWS algorithms only (RFC 7518): never "none", never HS* (a public key as an HMAC secret).
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
FETCH_TIMEOUT = 10.0
DISCOVERY_TTL = 3600.0  # the discovery document is refetched this often (endpoints rarely change)
MAX_TOKEN_LENGTH = 16 * 1024
TOKEN_CACHE_SECONDS = 2.0  # as for API tokens (imaging.access.tokens)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def looks_like_jwt(token: str) -> bool:
    """A compact JWS (header.payload.signature) rather than an opaque API token (which has no dots)."""
    return token.count(".") == 2 and token.startswith("eyJ")


def _claim(claims: Mapping[str, Any], path: str) -> list[str]:
    """The string values at a dotted claim path (a string or a list of strings), [] when absent."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return []
        value = value[part]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


@dataclass(frozen=True)
class Pending:
    """A browser login under way: what the callback must find again (kept server-side, by `state`)."""

    verifier: str
    nonce: str
    next_path: str
    created: float


class OpenIDProvider:
    """The configured provider: discovery, JWKS, token validation, and the confidential client's calls."""

    def __init__(self, settings: Settings, client: httpx.Client | None = None) -> None:
        if not settings.oidc_issuer:
            raise ValueError("oidc_issuer is not configured")
        self.settings = settings
        self.issuer = settings.oidc_issuer.rstrip("/")
        self._client = client or httpx.Client(timeout=FETCH_TIMEOUT, follow_redirects=False)
        self._lock = threading.Lock()
        self._discovery: dict[str, Any] | None = None
        self._discovered_at = 0.0
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_fetched_at = -float("inf")
        self._pending: dict[str, Pending] = {}
        # Access tokens validated moments ago: digest -> (monotonic time, principal, exp).
        self._verified: dict[str, tuple[float, Principal, float]] = {}

    # -- discovery and keys -------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        """The discovery document (cached for DISCOVERY_TTL)."""
        with self._lock:
            if self._discovery is None or time.monotonic() - self._discovered_at > DISCOVERY_TTL:
                document = self._get_json(f"{self.issuer}/.well-known/openid-configuration")
                if str(document.get("issuer", "")).rstrip("/") != self.issuer:
                    raise ProcessingFailure("the OpenID Provider's discovery document names another issuer")
                if not isinstance(document.get("jwks_uri"), str):
                    raise ProcessingFailure("the OpenID Provider publishes no jwks_uri")
                self._discovery, self._discovered_at = document, time.monotonic()
            return self._discovery

    def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = self._client.get(url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProcessingFailure(f"OpenID Provider unreachable: {type(exc).__name__}") from None
        if not isinstance(document, dict):
            raise ProcessingFailure("OpenID Provider answered with something else than a JSON object")
        return document

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """The provider's key `kid`; an unknown kid refetches the JWKS, at most once per refresh interval."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        jwks_uri = self.metadata()["jwks_uri"]
        with self._lock:
            key = self._keys.get(kid)
            if (
                key is None
                and time.monotonic() - self._keys_fetched_at >= self.settings.oidc_jwks_refresh_seconds
            ):
                self._keys_fetched_at = time.monotonic()
                try:
                    keyset = jwt.PyJWKSet.from_dict(self._get_json(jwks_uri))
                except jwt.PyJWKSetError:
                    raise ProcessingFailure("the OpenID Provider's JWKS holds no usable key") from None
                self._keys = {
                    k.key_id: k for k in keyset.keys if k.key_id and k.public_key_use in (None, "sig")
                }
                key = self._keys.get(kid)
        if key is None:
            raise NotAuthenticated("token signed with an unknown key")
        return key

    # -- tokens ---------------------------------------------------------------------------------------

    def decode(self, token: str, *, audience: str, nonce: str | None = None) -> dict[str, Any]:
        """The verified claims of a JWT from this provider for `audience`; NotAuthenticated otherwise."""
        if len(token) > MAX_TOKEN_LENGTH:
            raise NotAuthenticated("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise NotAuthenticated("malformed token") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        allowed = ASYMMETRIC.intersection(self.settings.oidc_algorithms)
        if algorithm not in allowed:
            raise NotAuthenticated("token signed with an algorithm this server does not accept")
        if not isinstance(kid, str) or not kid:
            raise NotAuthenticated("token without a key id")
        key = self.signing_key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=audience,
                issuer=self.issuer,
                leeway=self.settings.oidc_clock_skew_seconds,
                options={"require": ["iss", "aud", "exp", "iat", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("token expired") from None
        except jwt.PyJWTError as exc:
            raise NotAuthenticated(f"token refused: {type(exc).__name__}") from None
        if nonce is not None and claims.get("nonce") != nonce:
            raise NotAuthenticated("ID token nonce does not match the login")
        return claims

    def principal(self, token: str) -> tuple[Principal, float]:
        """The principal an access token stands for, and its expiry (epoch seconds). An ID token is not an
        access token, even when its audience matches: it carries at_hash / c_hash (OIDC Core 3.1.3.6), or a
        `typ` other than JWT / at+jwt (RFC 9068)."""
        claims = self.decode(token, audience=self.settings.oidc_audience)
        typ = str(jwt.get_unverified_header(token).get("typ", "JWT")).lower()
        if "at_hash" in claims or "c_hash" in claims or typ not in ("jwt", "at+jwt", "application/at+jwt"):
            raise NotAuthenticated("an ID token is not an access token")
        return principal_from_claims(self.settings, claims), float(claims["exp"])

    def remembered(self, token: str) -> Principal | None:
        """The principal of an access token validated less than TOKEN_CACHE_SECONDS ago (no I/O, no
        signature check: callable on an event loop); None otherwise. Expiry is checked every time."""
        entry = self._verified.get(_digest(token))
        if entry is None or time.monotonic() - entry[0] > TOKEN_CACHE_SECONDS:
            return None
        if entry[2] + self.settings.oidc_clock_skew_seconds <= time.time():
            raise NotAuthenticated("token expired")
        return entry[1]

    def verify(self, token: str) -> Principal:
        """The principal of a valid access token (see `decode`); NotAuthenticated otherwise."""
        principal, expires = self.principal(token)
        if len(self._verified) >= 1024:
            self._verified.clear()
        self._verified[_digest(token)] = (time.monotonic(), principal, expires)
        return principal

    # -- browser login (authorization code with PKCE, RFC 7636) ---------------------------------------

    def login_url(self, redirect_uri: str, next_path: str) -> str:
        """The authorization request to send the browser to; its state is remembered for the callback."""
        if not (self.settings.oidc_client_id and self.settings.oidc_client_secret):
            raise InvalidRequest("browser login through the OpenID Provider is not configured")
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            # Forget logins never completed (10 minutes), and never hold more than a bounded number.
            for key in [k for k, p in self._pending.items() if now - p.created > 600]:
                del self._pending[key]
            if len(self._pending) >= 10000:
                self._pending.pop(next(iter(self._pending)))
            self._pending[state] = Pending(verifier, nonce, next_path, now)
        query = {
            "response_type": "code",
            "client_id": self.settings.oidc_client_id,
            "redirect_uri": redirect_uri,
            "scope": self.settings.oidc_scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
        }
        endpoint = str(self.metadata()["authorization_endpoint"])
        separator = "&" if "?" in endpoint else "?"
        return endpoint + separator + urllib.parse.urlencode(query)

    def complete_login(self, state: str, code: str, redirect_uri: str) -> tuple[str, Principal, float, str]:
        """Exchange the callback's code (with the PKCE verifier) and validate what comes back: the access
        token, its principal, its expiry and the path to return to."""
        with self._lock:
            pending = self._pending.pop(state, None)
        if pending is None or time.monotonic() - pending.created > 600:
            raise NotAuthenticated("unknown or expired login request")
        try:
            response = self._client.post(
                str(self.metadata()["token_endpoint"]),
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "redirect_uri": redirect_uri,
                    "code_verifier": pending.verifier,
                },
                auth=(self.settings.oidc_client_id, self.settings.oidc_client_secret),
            )
        except httpx.HTTPError as exc:
            raise ProcessingFailure(f"OpenID Provider unreachable: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise NotAuthenticated("the OpenID Provider refused the authorization code")
        tokens = response.json()
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(id_token, str) or not isinstance(access_token, str):
            raise NotAuthenticated("the OpenID Provider returned no ID token or access token")
        self.decode(id_token, audience=self.settings.oidc_client_id, nonce=pending.nonce)
        principal, expires = self.principal(access_token)
        return access_token, principal, expires, pending.next_path

    def close(self) -> None:
        self._client.close()


def principal_from_claims(settings: Settings, claims: Mapping[str, Any]) -> Principal:
    """The role and projects the claims map to (see the module docstring); NotAuthenticated for none."""
    roles = set(_mapped(_claim(claims, settings.oidc_role_claim), settings.oidc_role_map))
    role = next((r for r in ROLE_PRECEDENCE if r.value in roles), None)
    if role is None:
        raise NotAuthenticated("the identity holds no role in this archive")
    projects: frozenset[str] = frozenset()
    if role is Role.RESEARCHER:
        names = _mapped(_claim(claims, settings.oidc_project_claim), settings.oidc_project_map)
        projects = frozenset(n for n in names if is_project_name(n))
    return Principal(role.value, projects, None, Via.OIDC, str(claims["sub"])[:96])


def _mapped(values: Iterable[str], mapping: Mapping[str, str]) -> list[str]:
    """Values through a mapping: with one configured, only the values it names count."""
    return [mapping[v] for v in values if v in mapping] if mapping else list(values)
