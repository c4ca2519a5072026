"""This site's signing key (Ed25519) and the checks that tie a request to a research project's key.

The private key lives in `<keys_path>/federation/site-ed25519.pem` (0600, made on first use), apart from
the data like the project keys; its public half is what peer sites register for us (`imaging federation
site`). A project's key is never sent anywhere: a request carries `key_check`, an HMAC of a fixed label
under the key, which a site holding the same key reproduces and nobody else can.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from imaging.config import Settings
from imaging.errors import InvalidRequest
from imaging.ingest.partitions import read_key

KEY_FILE = "site-ed25519.pem"
_KEY_CHECK_LABEL = b"imaging-federation key check v1"


def key_path(settings: Settings) -> Path:
    return settings.keys_path / "federation" / KEY_FILE


def site_key(settings: Settings) -> Ed25519PrivateKey:
    """The site's private key, created (once, race-free) when missing."""
    path = key_path(settings)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it meanwhile: use theirs
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidRequest(f"{KEY_FILE} does not hold an Ed25519 private key")
    return key


def public_key_pem(settings: Settings) -> str:
    return (
        site_key(settings)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def load_public_key(pem: str) -> Ed25519PublicKey:
    """A peer's public key from PEM; InvalidRequest unless it is an Ed25519 public key."""
    try:
        key = serialization.load_pem_public_key(pem.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError, TypeError):
        raise InvalidRequest("the public key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidRequest("the public key must be Ed25519 (EdDSA)")
    return key


def key_check(settings: Settings, project: str) -> str:
    """HMAC-SHA-256 of a fixed label under the project's key (hex): equal at two sites iff the keys are."""
    key = read_key(settings.keys_path, project)
    return hmac.new(key, _KEY_CHECK_LABEL, hashlib.sha256).hexdigest()
