"""LemonLDAP::NG's configuration for tests/infra/oidc_provider.py: lemonldap-ng.ini, the nginx site, and
the portal's configuration (what the Manager would write as lmConf-N.json), all pointing into one directory."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

LLNG_PORTAL_HTDOCS = Path("/usr/share/lemonldap-ng/portal/htdocs")
LLNG_PORTAL_TEMPLATES = Path("/usr/share/lemonldap-ng/portal/templates")
CHECK_TIME = 1  # seconds between a portal worker's looks for a newer configuration
RP_KEY = "archive"  # the relying party's key in LemonLDAP::NG's configuration


@dataclass(frozen=True)
class DemoUser:
    """A user of LemonLDAP::NG's demo backend (its password is its uid) and the claims the provider
    releases for it: `groups` (the demo backend's groups plus `roles`), `roles` and `projects`."""

    uid: str
    name: str
    email: str
    demo_groups: tuple[str, ...]
    roles: tuple[str, ...]
    projects: tuple[str, ...]

    @property
    def password(self) -> str:
        return self.uid

    @property
    def groups(self) -> frozenset[str]:
        return frozenset(self.demo_groups) | frozenset(self.roles)


# The demo backend's accounts and groups are fixed in Lemonldap::NG::Portal::UserDB::Demo; roles and
# projects are this fixture's, given to the users by configuration rules.
DEMO_USERS: dict[str, DemoUser] = {
    "dwho": DemoUser(
        "dwho",
        "Doctor Who",
        "dwho@badwolf.org",
        ("timelords", "users"),
        ("archive-admin",),
        ("lung-screening", "neuro-mri"),
    ),
    "rtyler": DemoUser(
        "rtyler",
        "Rose Tyler",
        "rtyler@badwolf.org",
        ("earthlings", "users"),
        ("radiologist",),
        ("lung-screening",),
    ),
    "msmith": DemoUser(
        "msmith",
        "Mickey Smith",
        "msmith@badwolf.org",
        ("earthlings", "users"),
        ("researcher",),
        ("neuro-mri",),
    ),
}


@dataclass(frozen=True)
class SigningKey:
    private_pem: str
    public_pem: str
    key_id: str


@dataclass(frozen=True)
class RelyingParty:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    audience: str  # an audience besides the client id (the archive's API)
    access_token_lifetime: int


def new_signing_key() -> SigningKey:
    """A fresh RSA key for RS256, with a random key id."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return SigningKey(private, public, secrets.token_hex(8))


def _perl_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("@", "\\@") + '"'


def _per_user_macro(values: dict[str, tuple[str, ...]], separator: str) -> str:
    """A LemonLDAP::NG macro (a Perl expression over the session's attributes) that gives each uid its
    values as one multi-valued attribute."""
    expression = '""'
    for uid, items in values.items():
        expression = f"$uid eq {_perl_string(uid)} ? {_perl_string(separator.join(items))} : ({expression})"
    return expression


def ini_file(root: Path) -> str:
    """lemonldap-ng.ini: the configuration is a File backend in `root`/conf; warnings and errors are logged."""
    return f"""[all]
logLevel = warn
checkTime = {CHECK_TIME}

[configuration]
type = File
dirName = {root / "conf"}
prettyPrint = 1
# No localStorage (configuration cache): without one, each worker rereads the newest lmConf-N.json every
# checkTime seconds, so a new configuration (a rotated key) takes effect at once.

[portal]
staticPrefix = /static
templateDir = {LLNG_PORTAL_TEMPLATES}
languages = en

[handler]
status = 0
"""


def nginx_conf(root: Path, port: int, fastcgi_socket: Path) -> str:
    """nginx before the portal as Debian's portal-nginx.conf has it, on 127.0.0.1:`port`, in the foreground."""
    return f"""daemon off;
worker_processes 1;
pid {root / "nginx" / "nginx.pid"};
error_log stderr warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {root / "nginx"}/body;
  fastcgi_temp_path {root / "nginx"}/fastcgi;
  proxy_temp_path {root / "nginx"}/proxy;
  uwsgi_temp_path {root / "nginx"}/uwsgi;
  scgi_temp_path {root / "nginx"}/scgi;
  include /etc/nginx/mime.types;
  upstream llng_portal {{ server unix:{fastcgi_socket}; }}
  server {{
    listen 127.0.0.1:{port};
    server_name 127.0.0.1;
    root {LLNG_PORTAL_HTDOCS}/;
    if ($uri !~ ^/((static|javascript|favicon).*|.*\\.psgi)) {{
      rewrite ^/(.*)$ /index.psgi/$1 break;
    }}
    location ~ ^(?<sc>/.*\\.psgi)(?:$|/) {{
      include /etc/nginx/fastcgi_params;
      fastcgi_pass llng_portal;
      fastcgi_param HTTP_HOST $http_host;
      fastcgi_param LLTYPE psgi;
      fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
      fastcgi_split_path_info ^(.*\\.psgi)(/.*)$;
      fastcgi_param PATH_INFO $fastcgi_path_info;
    }}
    location /static/ {{ alias {LLNG_PORTAL_HTDOCS}/static/; }}
    location /javascript/ {{ alias /usr/share/javascript/; }}
  }}
}}
"""


def portal_config(root: Path, issuer: str, rp: RelyingParty, key: SigningKey) -> dict[str, Any]:
    """The portal's configuration (lmConf-N.json): demo users, the OpenID Connect issuer, one RP."""
    separator = "; "
    roles = {uid: user.roles for uid, user in DEMO_USERS.items()}
    role_names = sorted({role for user in DEMO_USERS.values() for role in user.roles})
    sessions = {
        "Directory": str(root / "sessions"),
        "LockDirectory": str(root / "sessions/lock"),
        "generateModule": "Lemonldap::NG::Common::Apache::Session::Generate::SHA256",
    }
    return {
        "cfgNum": 1,
        "cfgAuthor": "tests.infra.oidc_provider",
        "cfgDate": str(int(time.time())),
        "cfgVersion": "2.16.1",
        "authentication": "Demo",
        "userDB": "Same",
        "passwordDB": "Demo",
        "registerDB": "Null",
        "portal": f"{issuer}/",
        "domain": "127.0.0.1",
        "cookieName": "lemonldap",
        "securedCookie": 0,
        "timeout": 72000,
        # How often each portal worker looks for a newer configuration (key rotation), in seconds.
        "checkTime": CHECK_TIME,
        "multiValuesSeparator": separator,
        "whatToTrace": "uid",
        "demoExportedVars": {"cn": "cn", "mail": "mail", "uid": "uid"},
        "globalStorage": "Apache::Session::File",
        "globalStorageOptions": sessions,
        "persistentStorage": "Apache::Session::File",
        "persistentStorageOptions": {
            "Directory": str(root / "psessions"),
            "LockDirectory": str(root / "psessions/lock"),
        },
        "localSessionStorage": "Cache::FileCache",
        "localSessionStorageOptions": {
            "cache_depth": 3,
            "cache_root": str(root / "cache"),
            "default_expires_in": 600,
            "directory_umask": "007",
            "namespace": "lemonldap-ng-sessions",
        },
        "notification": 0,
        "notificationStorage": "File",
        "notificationStorageOptions": {"dirName": str(root / "notifications")},
        "loginHistoryEnabled": 0,
        "locationRules": {"127.0.0.1": {"default": "accept"}},
        # Each archive role is a LemonLDAP::NG group, so it appears in `groups` as well as `roles`.
        "groups": {
            role: " or ".join(
                f"$uid eq {_perl_string(uid)}" for uid, user in DEMO_USERS.items() if role in user.roles
            )
            for role in role_names
        },
        "macros": {
            "archive_roles": _per_user_macro(roles, separator),
            "archive_projects": _per_user_macro(
                {uid: user.projects for uid, user in DEMO_USERS.items()}, separator
            ),
        },
        "issuerDBOpenIDConnectActivation": 1,
        "oidcServiceMetaDataIssuer": issuer,
        "oidcServicePrivateKeySig": key.private_pem,
        "oidcServicePublicKeySig": key.public_pem,
        "oidcServiceKeyIdSig": key.key_id,
        "oidcServiceAllowAuthorizationCodeFlow": 1,
        "oidcServiceAllowImplicitFlow": 0,
        "oidcServiceAllowHybridFlow": 0,
        "oidcServiceAllowDynamicRegistration": 0,
        "oidcServiceIgnoreScopeForClaims": 1,
        "oidcServiceAccessTokenExpiration": rp.access_token_lifetime,
        "oidcRPMetaDataExportedVars": {
            RP_KEY: {
                "name": "cn",
                "email": "mail",
                "preferred_username": "uid",
                "groups": "groups;string;always",
                "roles": "archive_roles;string;always",
                "projects": "archive_projects;string;always",
            }
        },
        "oidcRPMetaDataOptions": {
            RP_KEY: {
                "oidcRPMetaDataOptionsClientID": rp.client_id,
                "oidcRPMetaDataOptionsClientSecret": rp.client_secret,
                "oidcRPMetaDataOptionsDisplayName": "Imaging archive",
                "oidcRPMetaDataOptionsRedirectUris": " ".join(rp.redirect_uris),
                "oidcRPMetaDataOptionsPublic": 0,
                "oidcRPMetaDataOptionsRequirePKCE": 0,
                "oidcRPMetaDataOptionsBypassConsent": 1,
                "oidcRPMetaDataOptionsAllowPasswordGrant": 1,
                "oidcRPMetaDataOptionsRefreshToken": 1,
                "oidcRPMetaDataOptionsAccessTokenJWT": 1,
                "oidcRPMetaDataOptionsAccessTokenClaims": 1,
                "oidcRPMetaDataOptionsAccessTokenSignAlg": "RS256",
                "oidcRPMetaDataOptionsIDTokenSignAlg": "RS256",
                "oidcRPMetaDataOptionsIDTokenForceClaims": 1,
                "oidcRPMetaDataOptionsAdditionalAudiences": rp.audience,
                "oidcRPMetaDataOptionsAccessTokenExpiration": rp.access_token_lifetime,
                "oidcRPMetaDataOptionsUserIDAttr": "uid",
            }
        },
    }
