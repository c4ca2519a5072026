"""Self-test of the LemonLDAP::NG OpenID Provider fixture: discovery, tokens for two users by the password
grant and by the authorization code flow with PKCE, their RS256 signatures checked against the published
JWKS with PyJWT, the claims as configured, and a signing key rotated at run time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import require_program
from tests.infra.oidc_provider import (
    DEMO_USERS,
    LLNG_FASTCGI_SERVER,
    NGINX,
    OpenIDProvider,
    TokenError,
)

pytestmark = pytest.mark.oidc

REDIRECT_URI = "http://127.0.0.1:8042/oidc/callback"


@pytest.fixture(scope="module")
def provider() -> Iterator[OpenIDProvider]:
    require_program(LLNG_FASTCGI_SERVER)
    require_program(NGINX)
    with OpenIDProvider(redirect_uris=[REDIRECT_URI]) as op:
        yield op


def verify(provider: OpenIDProvider, token: str, audience: str) -> dict[str, Any]:
    """Verify as a resource server does: the key by `kid` from the discovery document's jwks_uri."""
    jwks = jwt.PyJWKClient(provider.discovery()["jwks_uri"], cache_keys=False)
    key = jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=audience,
        issuer=provider.issuer,
        options={"require": ["iss", "aud", "exp", "iat", "sub"]},
    )
    return claims


def test_discovery_document(provider: OpenIDProvider) -> None:
    document = provider.discovery()
    assert document["issuer"] == provider.issuer
    assert document["jwks_uri"].startswith(provider.issuer + "/")
    assert "RS256" in document["id_token_signing_alg_values_supported"]
    assert "S256" in document["code_challenge_methods_supported"]
    keys = httpx.get(document["jwks_uri"]).json()["keys"]
    assert [(k["kty"], k["use"], k["kid"]) for k in keys] == [("RSA", "sig", provider.key_id)]


@pytest.mark.parametrize("uid", ["dwho", "rtyler"])
def test_password_grant_access_token_is_a_signed_jwt(provider: OpenIDProvider, uid: str) -> None:
    user = DEMO_USERS[uid]
    before = int(time.time())
    tokens = provider.password_grant(user.uid, user.password)
    assert tokens["token_type"] == "Bearer"
    claims = verify(provider, tokens["access_token"], provider.audience)
    assert claims["sub"] == uid
    assert claims["client_id"] == provider.client_id
    assert set(claims["aud"]) == {provider.client_id, provider.audience}
    assert before - 5 <= claims["iat"] <= time.time() + 5
    assert claims["exp"] - claims["iat"] == provider.access_token_lifetime
    assert set(claims["groups"]) == user.groups
    assert claims["roles"] == list(user.roles)
    assert claims["projects"] == list(user.projects)
    assert claims["email"] == user.email
    id_claims = verify(provider, tokens["id_token"], provider.client_id)
    assert id_claims["sub"] == uid and set(id_claims["roles"]) == set(user.roles)


def test_tokens_differ_between_users(provider: OpenIDProvider) -> None:
    dwho = verify(provider, provider.password_grant("dwho", "dwho")["access_token"], provider.audience)
    msmith = verify(provider, provider.password_grant("msmith", "msmith")["access_token"], provider.audience)
    assert "archive-admin" in dwho["roles"] and "archive-admin" not in msmith["roles"]
    assert msmith["projects"] == ["neuro-mri"]


def test_wrong_password_is_refused(provider: OpenIDProvider) -> None:
    with pytest.raises(TokenError) as refused:
        provider.password_grant("dwho", "not-the-password")
    assert refused.value.status in (400, 401)


def test_a_token_fails_verification_for_another_audience(provider: OpenIDProvider) -> None:
    token = provider.password_grant("dwho", "dwho")["access_token"]
    with pytest.raises(jwt.InvalidAudienceError):
        verify(provider, token, "some-other-service")


@pytest.mark.parametrize("uid", ["rtyler", "msmith"])
def test_authorization_code_flow_with_pkce(provider: OpenIDProvider, uid: str) -> None:
    user = DEMO_USERS[uid]
    tokens = provider.authorization_code_flow(user.uid, user.password, REDIRECT_URI)
    id_claims = verify(provider, tokens["id_token"], provider.client_id)
    assert id_claims["sub"] == uid and id_claims["nonce"] == tokens["nonce"]
    claims = verify(provider, tokens["access_token"], provider.audience)
    assert set(claims["groups"]) == user.groups


def test_key_rotation(provider: OpenIDProvider) -> None:
    old_token = provider.password_grant("dwho", "dwho")["access_token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    new_kid = provider.rotate_signing_key()
    assert new_kid != old_kid
    new_token = provider.password_grant("dwho", "dwho")["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert verify(provider, new_token, provider.audience)["sub"] == "dwho"
    # LemonLDAP::NG publishes only the current key: a token signed with the old one no longer verifies.
    with pytest.raises(jwt.PyJWKClientError):
        verify(provider, old_token, provider.audience)


def test_redirect_uri_added_at_run_time(provider: OpenIDProvider) -> None:
    late = "http://127.0.0.1:8043/late/callback"
    with pytest.raises(TokenError):
        provider.authorization_code_flow("dwho", "dwho", late)
    provider.allow_redirect_uris(late)
    tokens = provider.authorization_code_flow("dwho", "dwho", late)
    assert verify(provider, tokens["access_token"], provider.audience)["sub"] == "dwho"
    # The URIs registered at the start still work.
    assert provider.authorization_code_flow("rtyler", "rtyler", REDIRECT_URI)["access_token"]
