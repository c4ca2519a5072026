"""DICOM TLS (PS3.15 B.9, BCP 195 TLS Secure Transport Connection Profile): the gateway's server context and
what a peer's client certificate says.

TLS 1.2 or later only; for TLS 1.2 the forward-secret AEAD suites RFC 9325 recommends (ECDHE with AES-GCM or
ChaCha20-Poly1305), for TLS 1.3 OpenSSL's own set (all AEAD). No compression, no renegotiation. With client CA
certificates configured the gateway asks every peer for a certificate (mutual TLS) and, by default, refuses
one without; `calling_aes[].tls_names` binds an AE title to the names its certificate must bear.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from imaging.config import Settings

# TLS 1.2 suites (OpenSSL names): ECDHE key exchange, AEAD ciphers only (RFC 9325 4.2, BCP 195).
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL"


def server_context(settings: Settings) -> ssl.SSLContext:
    """The SSL context of the DICOM TLS listener."""
    if settings.dicom_tls_cert is None or settings.dicom_tls_key is None:
        raise ValueError("DICOM TLS needs dicom_tls_cert and dicom_tls_key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
    if settings.dicom_tls_client_ca is not None:
        context.load_verify_locations(cafile=settings.dicom_tls_client_ca)
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.dicom_tls_require_client_cert else ssl.CERT_OPTIONAL
        )
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class PeerCertificate:
    """A verified client certificate: its subject (for the audit trail) and the names an AE may be bound to."""

    subject: str  # e.g. "CN=ct01.example.org,O=Hospital"
    names: tuple[str, ...]  # subject common names and DNS subject alternative names

    def bears(self, names: list[str]) -> bool:
        wanted = {n.lower() for n in names}
        return any(n.lower() in wanted for n in self.names)


def peer_certificate(sock: Any) -> PeerCertificate | None:
    """The verified client certificate of a TLS connection, None for plain TCP or a peer without one."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    cert: dict[str, Any] | None = sock.getpeercert()  # only one the context verified (CERT_OPTIONAL/REQUIRED)
    if not cert:
        return None
    subject: list[tuple[str, str]] = [(str(k), str(v)) for rdn in cert.get("subject", ()) for k, v in rdn]
    common_names = [value for key, value in subject if key == "commonName"]
    dns = [str(value) for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]
    text = ",".join(f"{_SHORT.get(key, key)}={value}" for key, value in reversed(subject))
    return PeerCertificate(subject=text, names=tuple(common_names + dns))


_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
}
