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
from urllib.parse import urlsplit

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


class StorageBackend(StrEnum):
    FILESYSTEM = "filesystem"
    S3 = "s3"


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
    # Bundle config overrides, as `monai.bundle run --key value` (e.g. {"whether_raw_luna16": true} for the
    # Model Zoo lung nodule detector on DICOM series); part of what triage results are idempotent on.
    triage_bundle_overrides: dict[str, Any] = Field(default_factory=dict)
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
    # Data lifecycle (issue 14): rejection notes, deletion, retention, erasure, storage commitment.
    # Days after an IOCM rejection before the rejected instances (hidden at once) are deleted, per
    # document title code (CID 7011); a title not listed keeps them until an administrator deletes them.
    rejection_delete_after_days: dict[str, float] = Field(
        default_factory=lambda: {"113001": 30.0, "113037": 30.0, "113038": 30.0, "113039": 0.0}
    )
    # How often the purge job looks for objects whose deletion is due (while any wait).
    retention_purge_interval_seconds: float = Field(default=300.0, gt=0)
    # Retention rules are evaluated once a day, at this UTC hour.
    retention_run_hour: int = Field(default=2, ge=0, le=23)
    # Storage commitment: how long to keep trying to deliver an N-EVENT-REPORT on a new association.
    commitment_report_attempts: int = Field(default=5, ge=1)
    commitment_report_retry_seconds: float = Field(default=10.0, gt=0)
    # Federated cohort discovery and access requests (issue 17, imaging.federation). Peer sites, their
    # public keys and discovery switches live in the index; this site's signing key in keys_path.
    # This site's id in the network (the `iss` of the tokens it signs, the `aud` it accepts); empty:
    # federation is off (the peer API answers 404 and nothing is asked).
    federation_site_id: str = Field(default="", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})?$")
    federation_min_count: int = Field(default=5, ge=1)  # counts below this are suppressed, not sent
    federation_count_rounding: int = Field(default=1, ge=1)  # released counts rounded to a multiple
    # Differencing: a count whose study set differs from one released in this window by fewer than
    # federation_min_count patients is suppressed (0: no check).
    federation_difference_hours: float = Field(default=24.0, ge=0)
    federation_token_seconds: int = Field(default=60, ge=5, le=600)  # lifetime of the tokens we sign
    federation_token_max_seconds: int = Field(default=300, ge=5, le=3600)  # longest lifetime we accept
    federation_clock_skew_seconds: int = Field(default=30, ge=0, le=300)
    federation_timeout: float = Field(default=10.0, gt=0)  # seconds per call to a peer site

    # --- Issue 12, HTTP side: HTTPS, proxies, hospital identity (OIDC), audit export --------------------
    # HTTPS on the HTTP listener (PEM files); both empty: plain HTTP (behind a TLS-terminating proxy).
    http_tls_certfile: Path | None = None
    http_tls_keyfile: Path | None = None
    # Reverse proxies (CIDRs) whose Forwarded / X-Forwarded-* headers are believed; others' are ignored.
    trusted_proxies: list[str] = Field(default_factory=list)
    # STOW-RS: a body that sends nothing for this long is abandoned (408); seconds.
    http_body_timeout: float = Field(default=30.0, gt=0, le=3600)
    # Dev mode binds HTTP to loopback; another address is refused unless this is set too.
    dev_mode_allow_remote: bool = False
    # OpenID Connect (imaging.access.oidc). Empty issuer: API tokens only.
    oidc_issuer: str = ""
    oidc_audience: str = ""  # the `aud` access tokens must carry for this API
    oidc_client_id: str = ""  # browser login (authorization code + PKCE) as a confidential client
    oidc_client_secret: str = ""
    oidc_scopes: str = "openid profile email"
    oidc_role_claim: str = "roles"  # dotted path, e.g. realm_access.roles
    oidc_role_map: dict[str, str] = Field(default_factory=dict)  # claim value -> role; empty: role names
    oidc_project_claim: str = "projects"
    oidc_project_map: dict[str, str] = Field(default_factory=dict)  # claim value -> project; empty: names
    oidc_clock_skew_seconds: int = Field(default=60, ge=0, le=600)
    oidc_jwks_refresh_seconds: float = Field(default=60.0, ge=0)  # at most one JWKS refetch per interval
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256"])
    # Audit export as RFC 5424 syslog: udp://host:514 (RFC 5426) or tls://host:6514 (RFC 5425); empty: none.
    audit_syslog_url: str = ""
    audit_syslog_ca_file: Path | None = None  # CA that signs the collector's certificate (tls://)
    audit_syslog_client_certfile: Path | None = None  # client certificate, when the collector asks for one
    audit_syslog_client_keyfile: Path | None = None
    audit_source_id: str = "imaging-archive"  # AuditSourceIdentification/@AuditSourceID

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

    # Issue 15: object storage, observability, deployment.
    # Where objects live: "filesystem" (<data_dir>/objects) or "s3" (any S3-compatible object store), so
    # archive processes and workers on several machines share one store without a shared file system.
    storage_backend: StorageBackend = StorageBackend.FILESYSTEM
    s3_bucket: str = ""
    s3_endpoint_url: str = ""  # empty: AWS; e.g. http://radosgw:7480, http://minio:9000
    s3_region: str = ""
    s3_access_key_id: str = ""  # empty (with the secret): boto3's own chain (environment, instance role)
    s3_secret_access_key: str = ""
    s3_prefix: str = ""  # keys go under this prefix in the bucket ("archive/")
    s3_addressing_style: str = Field(default="auto", pattern="^(auto|path|virtual)$")
    s3_part_size: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024)  # multipart upload part
    # `imaging worker`: serve its Prometheus metrics on this port (0: off). `imaging serve` serves them at
    # /metrics on the HTTP port.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # Readiness: a worker is alive while its heartbeat (every few seconds, in the index) is younger than this.
    worker_heartbeat_seconds: float = Field(default=30.0, gt=0)

    # --- Issue 17, the web interface at /ui ----------------------------------------------------------------
    # How often an open worklist asks whether anything changed (a 204 costs three indexed lookups).
    ui_poll_seconds: float = Field(default=5.0, ge=1.0, le=300.0)

    @field_validator("ae_title")
    @classmethod
    def _valid_ae(cls, v: str) -> str:
        return _valid_ae_title(v)

    @model_validator(mode="after")
    def _refuse_insecure(self) -> Settings:
        if not self.dev_mode and self.log_phi:
            raise ValueError("log_phi is only allowed with dev_mode")
        if bool(self.http_tls_certfile) != bool(self.http_tls_keyfile):
            raise ValueError("HTTPS needs both http_tls_certfile and http_tls_keyfile")
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError("oidc_issuer needs oidc_audience (the aud this API's access tokens carry)")
        for cidr in self.trusted_proxies:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad entry
        for algorithm in self.oidc_algorithms:
            if algorithm.upper().startswith("HS") or algorithm.lower() == "none":
                raise ValueError("oidc_algorithms: asymmetric algorithms only (RS*, PS*, ES*)")
        if self.audit_syslog_url and urlsplit(self.audit_syslog_url).scheme not in ("udp", "tls"):
            raise ValueError("audit_syslog_url: udp://host:port or tls://host:port")
        self._refuse_open_gateway()
        if self.storage_backend is StorageBackend.S3 and not self.s3_bucket:
            raise ValueError("storage_backend s3 needs s3_bucket")
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

    def http_bind_host(self) -> str:
        """Where the HTTP listener binds. Dev mode (every request is admin, no token) binds loopback unless
        http_host was set explicitly, and refuses any other address unless dev_mode_allow_remote is set."""
        if not self.dev_mode or is_loopback(self.http_host):
            return self.http_host
        if "http_host" not in self.model_fields_set:
            return "127.0.0.1"
        if not self.dev_mode_allow_remote:
            raise ValueError(
                f"dev_mode opens HTTP to anyone without a token: refusing to bind {self.http_host}; "
                "use 127.0.0.1 (or set dev_mode_allow_remote as well, knowingly)"
            )
        return self.http_host

    def remote_ae(self, ae_title: str) -> RemoteAE | None:
        return next((r for r in self.remote_aes if r.ae_title == ae_title.strip()), None)

    def calling_ae(self, ae_title: str) -> CallingAE | None:
        return next((c for c in self.calling_aes if c.ae_title == ae_title.strip()), None)


def is_loopback(host: str) -> bool:
    """Whether a bind address reaches this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
