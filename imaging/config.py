"""Settings: one class, read from environment variables (IMAGING_*), an optional TOML file and CLI flags.

Insecure combinations are refused unless `dev_mode` is on: PHI in logs (`log_phi`), and a DICOM gateway
reachable from other machines that admits any calling AE (`dicom_host` / `dicom_tls_host` beyond the loopback
interface without `calling_aes`). Out of the box the gateway listens on localhost only; HTTP needs a token on
every route but /health outside dev mode.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# dimse_processes=0 takes one gateway process per core, up to this many (each holds its own index connection
# pool and ~100 MB of interpreter).
MAX_AUTO_DIMSE_PROCESSES = 8


class OverwritePolicy(StrEnum):
    """What to do when a different object arrives under a SOP Instance UID already stored."""

    REJECT = "reject"
    OVERWRITE = "overwrite"


class EmptyQidoStatus(StrEnum):
    """PS3.18 says 204 for an empty QIDO result; CP-2473 moves to 200 with []."""

    NO_CONTENT = "204"
    EMPTY_ARRAY = "200"


class RemoteAE(BaseSettings):
    """A DICOM node the archive may send to (C-MOVE destination, peer)."""

    model_config = SettingsConfigDict(extra="forbid")

    ae_title: str
    host: str
    port: int


class DimseService(StrEnum):
    """What an admitted calling AE may ask the gateway for (C-ECHO is always answered)."""

    STORE = "store"  # C-STORE into the archive
    FIND = "find"  # C-FIND
    GET = "get"  # C-GET (the instances come back on the caller's own association)
    MOVE = "move"  # C-MOVE (to a destination in remote_aes only)


def _valid_ae_title(value: str) -> str:
    value = value.strip()
    if not 0 < len(value) <= 16 or "\\" in value or not value.isascii():
        raise ValueError("AE title must be 1-16 ASCII characters without backslash")
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, or "" / "0.0.0.0": every interface


class CallingAE(BaseSettings):
    """A calling AE title the gateway admits: from which hosts, for which services, with which certificate."""

    model_config = SettingsConfigDict(extra="forbid")

    ae_title: str
    # IP addresses or networks (CIDR) it connects from; a connection from any other host is closed at once.
    hosts: list[str]
    permissions: list[DimseService]
    # Names its TLS client certificate must carry (subject CN or DNS subject alternative name); when set,
    # the AE is admitted only over DICOM TLS with a certificate that bears one of them.
    tls_names: list[str] = Field(default_factory=list)

    @field_validator("ae_title")
    @classmethod
    def _valid_ae(cls, v: str) -> str:
        return _valid_ae_title(v)

    @field_validator("hosts")
    @classmethod
    def _valid_hosts(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("a calling AE needs the hosts it connects from")
        for host in v:
            ipaddress.ip_network(host, strict=False)  # ValueError names the bad one
        return v

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(h, strict=False) for h in self.hosts]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGING_", extra="ignore", env_nested_delimiter="__")

    data_dir: Path = Path("./data")
    database_url: str = ""  # empty: SQLite in data_dir
    ae_title: str = "IMAGING"
    dicom_host: str = "127.0.0.1"  # localhost only, out of the box (issue 12); see calling_aes
    dicom_port: int = 11112
    http_host: str = "0.0.0.0"
    http_port: int = 8042
    # Replaced by calling_aes (hosts and permissions per AE); a configuration still naming it is refused.
    allowed_calling_aets: list[str] = Field(default_factory=list)
    # C-MOVE / C-GET destinations: AE title -> address.
    remote_aes: list[RemoteAE] = Field(default_factory=list)
    max_associations: int = 32
    # DIMSE gateway processes: the server process accepts and hands each connection to the least-loaded one,
    # spreading C-STORE work over cores. 0: one per CPU core available, at most MAX_AUTO_DIMSE_PROCESSES.
    dimse_processes: int = Field(default=0, ge=0, le=64)
    # Storage SOP classes beyond those pynetdicom knows (private classes), accepted in any transfer syntax.
    extra_sop_classes: list[str] = Field(default_factory=list)
    network_timeout: float = 60.0
    overwrite_policy: OverwritePolicy = OverwritePolicy.REJECT
    # Quiet period before a series counts as stable.
    stability_seconds: float = 60.0
    # Free space below which C-STORE answers 0xA700 instead of writing.
    min_free_bytes: int = 64 * 1024 * 1024
    max_upload_bytes: int = 4 * 1024**3
    qido_max_results: int = 1000
    empty_qido_status: EmptyQidoStatus = EmptyQidoStatus.EMPTY_ARRAY
    cors_origins: list[str] = Field(default_factory=list)
    public_url: str = ""  # base for RetrieveURL behind a proxy; empty: from the request
    # Where `imaging viewer fetch` unpacks the OHIF viewer (served at /viewer); default <data_dir>/viewer.
    viewer_dir: Path | None = None
    dev_mode: bool = False  # opens HTTP without tokens and DIMSE to any AE; never in production
    log_phi: bool = False  # PHI never reaches logs unless explicitly allowed for debugging
    workers: bool = True  # run background jobs (stability, triage, ...) in the server process
    # Scale-out: jobs go through Dramatiq on RabbitMQ (amqp://...) or Redis (redis://...) to
    # `imaging worker` processes; empty runs them in the server process.
    broker_url: str = ""
    broker_namespace: str = "imaging"
    # AI triage: a MONAI bundle directory installed by an administrator, pinned by SHA-256.
    triage_enabled: bool = True
    triage_bundle: Path | None = None  # default: the reference bundle shipped in triage/bundles
    triage_bundle_sha256: str = ""  # empty: accept the bundle's own manifest (reference bundle only)
    triage_device: str = ""  # "", "cpu", "cuda", "cuda:1"
    # Project keys and the re-identification table live here, apart from the data (GDPR Art. 4(5)).
    keys_dir: Path | None = None  # default: <data_dir>/../<data_dir name>-keys
    # Called AE titles bound to research projects: what arrives there is de-identified on receive and
    # no identified copy is kept.
    project_ae_titles: dict[str, str] = Field(default_factory=dict)
    # Cross-site sharing (imaging.sharing). Peers and policies live in the index (admin API / CLI).
    share_concurrency: int = Field(default=4, ge=1, le=64)  # delivery threads per batch
    share_max_attempts: int = Field(default=16, ge=1)  # per instance; then `failed` (retry by admin)
    share_retry_base_seconds: float = Field(default=5.0, gt=0)  # doubles per attempt, with jitter
    share_link_max_days: int = Field(default=90, ge=1)  # share links always expire, at most this late

    # --- Issue 12 (DIMSE): who may use the DICOM gateway, DICOM TLS, protocol limits -----------------------
    # Calling AEs admitted, each from its hosts, with its services. Empty: any calling AE with every service,
    # which is refused (outside dev mode) unless every DIMSE listener is on the loopback interface.
    calling_aes: list[CallingAE] = Field(default_factory=list)
    # Largest P-DATA-TF PDU the gateway receives, announced at association (PS3.8 D.1): what one connection
    # may make it hold while a PDU arrives. A longer PDU is answered with an A-ABORT.
    dicom_max_pdu_size: int = Field(default=1 << 20, ge=16384, le=16 << 20)
    # DICOM TLS (PS3.15 B.9, BCP 195: TLS 1.2+) on its own port (2762 is registered); None: no TLS listener.
    dicom_tls_port: int | None = Field(default=None, ge=0, le=65535)
    dicom_tls_host: str = ""  # empty: dicom_host
    dicom_tls_cert: Path | None = None  # PEM certificate chain of the gateway
    dicom_tls_key: Path | None = None  # PEM private key of the gateway
    # Mutual TLS: the CA certificates (PEM) that sign the peers' client certificates. Without it the gateway
    # asks for none; with it, a peer without a valid certificate is refused unless the next setting is off.
    dicom_tls_client_ca: Path | None = None
    dicom_tls_require_client_cert: bool = True

    @field_validator("ae_title")
    @classmethod
    def _valid_ae(cls, v: str) -> str:
        return _valid_ae_title(v)

    @model_validator(mode="after")
    def _refuse_insecure(self) -> Settings:
        if not self.dev_mode and self.log_phi:
            raise ValueError("log_phi is only allowed with dev_mode")
        self._refuse_open_gateway()
        return self

    def _refuse_open_gateway(self) -> None:
        """Issue 12: a gateway reachable from other machines admits listed calling AEs only."""
        if self.allowed_calling_aets:
            raise ValueError("allowed_calling_aets is replaced by calling_aes (AE title, hosts, permissions)")
        if not self.dev_mode and not self.calling_aes and not self.dimse_on_loopback_only():
            raise ValueError(
                "the DICOM gateway listens beyond localhost (dicom_host / dicom_tls_host): set calling_aes"
            )
        if self.dicom_tls_port is not None and (self.dicom_tls_cert is None or self.dicom_tls_key is None):
            raise ValueError("dicom_tls_port needs dicom_tls_cert and dicom_tls_key")
        if any(ae.tls_names for ae in self.calling_aes) and self.dicom_tls_client_ca is None:
            raise ValueError("calling_aes with tls_names need dicom_tls_client_ca (client certificates)")
        titles = [ae.ae_title for ae in self.calling_aes]
        if len(set(titles)) != len(titles):
            raise ValueError("each calling AE title is listed once")

    def dimse_on_loopback_only(self) -> bool:
        hosts = [self.dicom_host] + ([self.tls_host] if self.dicom_tls_port is not None else [])
        return all(_is_loopback(h) for h in hosts)

    @property
    def tls_host(self) -> str:
        return self.dicom_tls_host or self.dicom_host

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def keys_path(self) -> Path:
        if self.keys_dir is not None:
            return self.keys_dir
        data = self.data_dir.resolve()
        return data.parent / f"{data.name}-keys"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    def gateway_processes(self) -> int:
        """How many DIMSE gateway processes to run (`dimse_processes`, 0 = one per available core)."""
        if self.dimse_processes:
            return self.dimse_processes
        return max(1, min(len(os.sched_getaffinity(0)), MAX_AUTO_DIMSE_PROCESSES))

    def remote_ae(self, ae_title: str) -> RemoteAE | None:
        return next((r for r in self.remote_aes if r.ae_title == ae_title.strip()), None)

    def calling_ae(self, ae_title: str) -> CallingAE | None:
        return next((c for c in self.calling_aes if c.ae_title == ae_title.strip()), None)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Settings from (lowest first) defaults, a TOML file, the environment, explicit overrides."""
    file_values: dict[str, Any] = {}
    path = config_file or (Path(os.environ["IMAGING_CONFIG"]) if os.environ.get("IMAGING_CONFIG") else None)
    if path is not None:
        with path.open("rb") as f:
            file_values = tomllib.load(f)
    env_set = {k for k in Settings.model_fields if f"IMAGING_{k.upper()}" in os.environ}
    base = Settings()  # defaults + environment
    values = {**file_values, **{k: getattr(base, k) for k in env_set}}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values) if values else base
