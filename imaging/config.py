"""Settings: one class, read from environment variables (IMAGING_*), an optional TOML file and CLI flags.

Insecure defaults (open HTTP, any calling AE) are refused unless `dev_mode` is on.
"""

from __future__ import annotations

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


class StorageBackend(StrEnum):
    FILESYSTEM = "filesystem"
    S3 = "s3"


class RemoteAE(BaseSettings):
    """A DICOM node the archive may send to (C-MOVE destination, peer)."""

    model_config = SettingsConfigDict(extra="forbid")

    ae_title: str
    host: str
    port: int


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGING_", extra="ignore", env_nested_delimiter="__")

    data_dir: Path = Path("./data")
    database_url: str = ""  # empty: SQLite in data_dir
    ae_title: str = "IMAGING"
    dicom_host: str = "0.0.0.0"
    dicom_port: int = 11112
    http_host: str = "0.0.0.0"
    http_port: int = 8042
    # Calling AE titles allowed to associate; empty means any (allowed only in dev mode).
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

    @field_validator("ae_title")
    @classmethod
    def _valid_ae(cls, v: str) -> str:
        v = v.strip()
        if not 0 < len(v) <= 16 or "\\" in v:
            raise ValueError("AE title must be 1-16 characters without backslash")
        return v

    @model_validator(mode="after")
    def _refuse_insecure(self) -> Settings:
        if not self.dev_mode and self.log_phi:
            raise ValueError("log_phi is only allowed with dev_mode")
        if self.storage_backend is StorageBackend.S3 and not self.s3_bucket:
            raise ValueError("storage_backend s3 needs s3_bucket")
        return self

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
