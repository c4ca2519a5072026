"""A real OpenID Provider for the tests: Debian's LemonLDAP::NG portal (llng-fastcgi-server) behind nginx,
on free loopback ports, with its whole configuration and state in a temporary directory.

LemonLDAP::NG reads its `lemonldap-ng.ini` from $LLNG_DEFAULTCONFFILE and its configuration
(`lmConf-N.json`) and sessions from the directories that file and the configuration name, so nothing under
/etc or /var/lib is used or changed. The provider:

* issues RS256-signed ID tokens and JWT access tokens (`iss`, `aud` = client id + `audience`, `exp`, `iat`,
  `jti`, `scope`, plus the user's claims), its public key published at the discovery document's `jwks_uri`;
* has one confidential relying party (`client_id`/`client_secret`, the given redirect URIs, PKCE accepted,
  consent skipped, the resource owner password grant allowed);
* authenticates LemonLDAP::NG's demo users (DEMO_USERS: dwho/dwho, rtyler/rtyler, msmith/msmith), whose
  `groups`, `roles` and `projects` claims are set from DEMO_USERS;
* changes at run time by writing the next configuration, which the portal takes up within about 2 s:
  `rotate_signing_key()` (LemonLDAP::NG 2.16 publishes only the current key, so tokens signed with the
  old one stop verifying) and `allow_redirect_uris(uri)` (say, the archive's callback once its port is known).

Usage:

    with OpenIDProvider(redirect_uris=["http://127.0.0.1:8042/callback"]) as op:
        tokens = op.password_grant("dwho", "dwho")        # {"access_token": <JWT>, "id_token": ..., ...}
        tokens = op.authorization_code_flow("rtyler", "rtyler", "http://127.0.0.1:8042/callback")
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import require_program
from tests.infra.llng_config import (
    CHECK_TIME,
    DEMO_USERS,
    RP_KEY,
    DemoUser,
    RelyingParty,
    ini_file,
    new_signing_key,
    nginx_conf,
    portal_config,
)
from tests.infra.process import ServerProcess, chown_to_unprivileged, free_port, tcp_port_open, wait_until

LLNG_FASTCGI_SERVER = "/usr/sbin/llng-fastcgi-server"
NGINX = "/usr/sbin/nginx"
TOKEN_SCOPE = "openid profile email"
__all__ = ["DEMO_USERS", "DemoUser", "OpenIDProvider", "TokenError", "openid_provider"]


class OpenIDProvider:
    """LemonLDAP::NG as an OpenID Provider on 127.0.0.1; a context manager."""

    def __init__(
        self,
        redirect_uris: Sequence[str] = ("http://127.0.0.1/callback",),
        client_id: str = "imaging-archive",
        client_secret: str | None = None,
        audience: str = "imaging-archive-api",
        access_token_lifetime: int = 600,
        workers: int = 1,
    ) -> None:
        self.redirect_uris = list(redirect_uris)
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(24)
        self.audience = audience
        self.access_token_lifetime = access_token_lifetime
        self.workers = workers
        self.port = 0
        self.root: Path | None = None
        self.key_id = ""
        self._config_number = 0
        self._config: dict[str, Any] = {}
        self._processes: list[ServerProcess] = []

    @property
    def relying_party(self) -> RelyingParty:
        return RelyingParty(
            self.client_id, self.client_secret, self.redirect_uris, self.audience, self.access_token_lifetime
        )

    # -- addresses ------------------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def discovery(self) -> dict[str, Any]:
        response = httpx.get(self.discovery_url, timeout=10)
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    # -- lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> OpenIDProvider:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="llng-"))
        # mkdtemp's 0700 would keep the unprivileged portal out when the tests run as root.
        self.root.chmod(0o755)
        self.port = free_port()
        fastcgi_socket = self.root / "llng-fastcgi.sock"
        for sub in ("conf", "sessions/lock", "psessions/lock", "cache", "notifications", "nginx"):
            (self.root / sub).mkdir(parents=True)
        (self.root / "lemonldap-ng.ini").write_text(ini_file(self.root))
        (self.root / "nginx.conf").write_text(nginx_conf(self.root, self.port, fastcgi_socket))
        key = new_signing_key()
        self.key_id = key.key_id
        self._config = portal_config(self.root, self.issuer, self.relying_party, key)
        self._save_config()
        chown_to_unprivileged(self.root)

        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LLNG_DEFAULTCONFFILE": str(self.root / "lemonldap-ng.ini"),
            "LLNG_DEFAULTLOGGER": "Lemonldap::NG::Common::Logger::Std",
        }
        portal = ServerProcess(
            "llng-fastcgi-server",
            [
                LLNG_FASTCGI_SERVER,
                "--foreground",
                "--proc",
                str(self.workers),
                "--pid",
                str(self.root / "llng-fastcgi.pid"),
                "--socket",
                str(fastcgi_socket),
            ],
            self.root / "llng-fastcgi.log",
            env=env,
            unprivileged=True,
        )
        nginx = ServerProcess(
            "nginx",
            [NGINX, "-p", str(self.root / "nginx"), "-c", str(self.root / "nginx.conf"), "-e", "stderr"],
            self.root / "nginx.log",
            unprivileged=True,
        )
        self._processes = [portal, nginx]
        try:
            portal.start()
            wait_until(fastcgi_socket.exists, 30, "llng-fastcgi-server socket", [portal])
            nginx.start()
            wait_until(lambda: tcp_port_open(self.port), 10, "nginx", self._processes)
            # Each FastCGI worker compiles the portal on its first request: warm them all up.
            for _ in range(self.workers * 2):
                wait_until(self._discovery_ready, 30, "OpenID discovery", self._processes)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop()
        self._processes = []
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def _discovery_ready(self) -> bool:
        try:
            return httpx.get(self.discovery_url, timeout=10).status_code == 200
        except httpx.HTTPError:
            return False

    # -- configuration --------------------------------------------------------------------------------

    def _save_config(self) -> None:
        assert self.root is not None
        self._config_number += 1
        self._config["cfgNum"] = self._config_number
        self._config["cfgDate"] = str(int(time.time()))
        path = self.root / "conf" / f"lmConf-{self._config_number}.json"
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(self._config, indent=1))
        chown_to_unprivileged(staging)
        # The portal polls for the highest lmConf-N.json: it must never see a half-written one.
        staging.rename(path)

    def _apply_config(self, **changes: Any) -> None:
        """Write the next configuration with `changes` and make sure the portal runs on it."""
        self._config.update(changes)
        self._save_config()
        # A worker rereads the configuration on its first request once more than checkTime whole
        # seconds have passed since its last look (Perl's integer time()): wait that out, then ask.
        time.sleep(CHECK_TIME + 1.1)
        for _ in range(self.workers * 4):
            self.discovery()

    def rotate_signing_key(self) -> str:
        """Sign with a new RSA key from now on (a new configuration, as LemonLDAP::NG's rotateOidcKeys
        does); return its key id, which the JWKS now publishes instead of the old one."""
        key = new_signing_key()
        self._apply_config(
            oidcServicePrivateKeySig=key.private_pem,
            oidcServicePublicKeySig=key.public_pem,
            oidcServiceKeyIdSig=key.key_id,
        )
        self.key_id = key.key_id
        published = [k.get("kid") for k in httpx.get(self.discovery()["jwks_uri"], timeout=10).json()["keys"]]
        if published != [key.key_id]:
            raise RuntimeError(f"the portal publishes keys {published}, not the new key {key.key_id}")
        return key.key_id

    def allow_redirect_uris(self, *uris: str) -> None:
        """Accept these redirect URIs too (say, the archive's callback once its port is known)."""
        self.redirect_uris = [*self.redirect_uris, *(u for u in uris if u not in self.redirect_uris)]
        options = self._config["oidcRPMetaDataOptions"][RP_KEY]
        options["oidcRPMetaDataOptionsRedirectUris"] = " ".join(self.redirect_uris)
        self._apply_config()

    # -- tokens ---------------------------------------------------------------------------------------

    def password_grant(self, username: str, password: str, scope: str = TOKEN_SCOPE) -> dict[str, Any]:
        """Tokens for `username` by the resource owner password credentials grant (RFC 6749 §4.3)."""
        response = httpx.post(
            self.discovery()["token_endpoint"],
            data={"grant_type": "password", "username": username, "password": password, "scope": scope},
            auth=(self.client_id, self.client_secret),
            timeout=20,
        )
        if response.status_code != 200:
            raise TokenError(response.status_code, response.text)
        tokens: dict[str, Any] = response.json()
        return tokens

    def authorization_code_flow(
        self, username: str, password: str, redirect_uri: str | None = None, scope: str = TOKEN_SCOPE
    ) -> dict[str, Any]:
        """Tokens for `username` by the authorization code flow with PKCE (S256), driven over HTTP as a
        browser would: authorization request, login form, redirect to `redirect_uri`, code exchange."""
        redirect_uri = redirect_uri or self.redirect_uris[0]
        metadata = self.discovery()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        request = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        with httpx.Client(timeout=20, follow_redirects=False) as browser:
            location = browser.get(metadata["authorization_endpoint"], params=request)
            if location.status_code != 200:
                raise TokenError(location.status_code, "authorization request: " + location.text[:500])
            # The portal answers with its login form; the hidden `url` field carries the authorization request.
            form = _hidden_inputs(location.text)
            form.update(user=username, password=password)
            response = browser.post(f"{self.issuer}/", data=form)
            while response.status_code in (301, 302, 303) and not response.headers["location"].startswith(
                redirect_uri
            ):
                response = browser.get(urllib.parse.urljoin(str(response.url), response.headers["location"]))
            if response.status_code not in (301, 302, 303):
                raise TokenError(
                    response.status_code, "login did not redirect to the client: " + response.text[:500]
                )
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(response.headers["location"]).query)
            if query.get("state") != [state] or "code" not in query:
                raise TokenError(response.status_code, f"bad authorization response: {sorted(query)}")
        # The token endpoint refuses a request carrying the portal's session cookie: the client calls it.
        exchange = httpx.post(
            metadata["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": redirect_uri,
                "code_verifier": verifier,
            },
            auth=(self.client_id, self.client_secret),
        )
        if exchange.status_code != 200:
            raise TokenError(exchange.status_code, exchange.text)
        tokens: dict[str, Any] = exchange.json()
        tokens["nonce"] = nonce
        return tokens


class TokenError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"token request failed ({status}): {body}")
        self.status = status
        self.body = body


def _hidden_inputs(html: str) -> dict[str, str]:
    """The hidden fields of the portal's login form (LemonLDAP::NG keeps the pending request in them)."""
    fields: dict[str, str] = {}

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            attributes = dict(attrs)
            if tag == "input" and attributes.get("type") == "hidden" and attributes.get("name"):
                fields[str(attributes["name"])] = attributes.get("value") or ""

    Parser().feed(html)
    return fields


@pytest.fixture(scope="session")
def openid_provider() -> Iterator[OpenIDProvider]:
    """One LemonLDAP::NG provider for the session; its relying party accepts http://127.0.0.1/callback."""
    require_program(LLNG_FASTCGI_SERVER)
    require_program(NGINX)
    with OpenIDProvider() as provider:
        yield provider
