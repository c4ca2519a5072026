"""Tables of cross-site sharing: peers, policies, the delivery outbox and share links.

Peers and policies are configuration kept in the index (so the admin API and CLI can change them while
the server runs); a peer's secret (password or bearer token) is kept apart, in `Settings.keys_path`.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from sqlalchemy import JSON, Boolean, DateTime, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imaging.index.schema import CLINICAL, Base, utcnow


class PeerKind(StrEnum):
    DICOMWEB = "dicomweb"  # STOW-RS to <url>/studies, verified with QIDO-RS
    DIMSE = "dimse"  # C-STORE to ae_title@host:port, verified with C-FIND
    ORTHANC = "orthanc"  # Orthanc REST API (POST /instances), verified with /tools/find


class PeerAuth(StrEnum):
    NONE = "none"
    BASIC = "basic"  # username + secret
    BEARER = "bearer"  # secret is the token


class Peer(Base):
    __tablename__ = "sharing_peer"
    peer_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(256), default="")
    url: Mapped[str] = mapped_column(String(512), default="")  # DICOMweb root / Orthanc root
    ae_title: Mapped[str] = mapped_column(String(16), default="")  # called AE title (DIMSE)
    host: Mapped[str] = mapped_column(String(255), default="")
    port: Mapped[int] = mapped_column(Integer, default=0)
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")  # default: our own AE title
    auth: Mapped[str] = mapped_column(String(16), default=PeerAuth.NONE.value)
    username: Mapped[str] = mapped_column(String(128), default="")
    tls_verify: Mapped[bool] = mapped_column(Boolean, default=True)
    ca_file: Mapped[str] = mapped_column(String(512), default="")  # CA bundle to verify the peer (PEM)
    client_cert: Mapped[str] = mapped_column(String(512), default="")  # our certificate (PEM), mutual TLS
    client_key: Mapped[str] = mapped_column(String(512), default="")
    tls: Mapped[bool] = mapped_column(Boolean, default=False)  # DIMSE over TLS (HTTP peers: by URL scheme)
    timeout: Mapped[float] = mapped_column(Float, default=30.0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class SharingPolicy(Base):
    """Which stable clinical studies go to which peers, de-identified with which project's profile and key.

    Every non-empty rule must hold (AND); inside a rule any listed value matches (OR)."""

    __tablename__ = "sharing_policy"
    policy_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(256), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    modalities: Mapped[list[str]] = mapped_column(JSON, default=list)  # any of ModalitiesInStudy
    body_parts: Mapped[list[str]] = mapped_column(JSON, default=list)  # BodyPartExamined of any series
    description_regex: Mapped[str] = mapped_column(String(256), default="")  # searched in StudyDescription
    priorities: Mapped[list[str]] = mapped_column(JSON, default=list)  # triage priority, e.g. ["HIGH"]
    peers: Mapped[list[str]] = mapped_column(JSON, default=list)
    project: Mapped[str] = mapped_column(String(64), default="")  # de-identification profile + key
    identified: Mapped[bool] = mapped_column(Boolean, default=False)  # explicit: send without de-identifying
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class OutboxStatus(StrEnum):
    PENDING = "pending"  # to send (again); the job's backoff decides when
    SENT = "sent"  # the peer acknowledged it, not yet seen there
    VERIFIED = "verified"  # seen at the peer by a query after sending
    FAILED = "failed"  # gave up after share_max_attempts; `retry` re-arms it
    CANCELLED = "cancelled"  # the patient opted out (or an admin cancelled), or the instance was deleted
    QUARANTINED = "quarantined"  # de-identification could not show it clean: never sent
    ERASED = "erased"  # delivered, then deleted at the peer on a withdrawal of consent (peer confirmed)


OPEN_STATUSES = (OutboxStatus.PENDING.value,)
DONE_STATUSES = (OutboxStatus.SENT.value, OutboxStatus.VERIFIED.value)


class OutboxRow(Base):
    """One instance x peer x project to deliver. Identifiers: `SOPInstanceUID` etc. are the clinical
    (source) UIDs; `peer_*` are what the peer holds (the de-identified UIDs when a project is set)."""

    __tablename__ = "sharing_outbox"
    outbox_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    peer: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(64), default="")  # "" = identified
    origin: Mapped[str] = mapped_column(String(128), default="")  # policy:<name> | manual:<user>
    partition: Mapped[str] = mapped_column(String(64), default=CLINICAL)
    patient_pk: Mapped[int] = mapped_column(Integer, index=True)
    # The clinical patient, kept here too: an erasure must find what a peer received even after the
    # clinical study itself was deleted (and its patient row with it).
    PatientID: Mapped[str] = mapped_column(String(64), default="")
    IssuerOfPatientID: Mapped[str] = mapped_column(String(64), default="")
    StudyInstanceUID: Mapped[str] = mapped_column(String(64))
    SeriesInstanceUID: Mapped[str] = mapped_column(String(64))
    SOPInstanceUID: Mapped[str] = mapped_column(String(64))
    object_key: Mapped[str] = mapped_column(String(160))
    peer_StudyInstanceUID: Mapped[str] = mapped_column(String(64))
    peer_SOPInstanceUID: Mapped[str] = mapped_column(String(64))
    patient_ref: Mapped[str] = mapped_column(String(128), default="")  # pseudonym once de-identified
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    verified_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    __table_args__ = (
        UniqueConstraint("peer", "project", "partition", "SOPInstanceUID", name="uq_outbox_instance"),
        Index("ix_outbox_group", "peer", "project", "StudyInstanceUID", "status"),
        Index("ix_outbox_status", "status"),
    )


class ErasureStatus(StrEnum):
    PENDING = "pending"  # the delete request is still to be made or confirmed
    CONFIRMED = "confirmed"  # asked, and the peer no longer holds any of the instances
    FAILED = "failed"  # gave up after share_max_attempts (an admin can retry)


class PeerErasure(Base):
    """One delete request to a peer on a withdrawal of consent: what the peer received of one study (as the
    peer knows it: de-identified UIDs when it got a project's copy), and what the peer confirmed."""

    __tablename__ = "sharing_erasure"
    erasure_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_pk: Mapped[int] = mapped_column(Integer, index=True)  # imaging.consent.ErasureRequest
    peer: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(64), default="")
    peer_StudyInstanceUID: Mapped[str] = mapped_column(String(64))
    instances: Mapped[list[list[str]]] = mapped_column(JSON, default=list)  # [peer series UID, peer SOP UID]
    status: Mapped[str] = mapped_column(String(16), default=ErasureStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    remaining: Mapped[int] = mapped_column(Integer, default=0)  # instances still at the peer when last asked
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    __table_args__ = (
        UniqueConstraint("request_pk", "peer", "project", "peer_StudyInstanceUID", name="uq_sharing_erasure"),
    )


class ShareLink(Base):
    """A read-only DICOMweb root for one study or a fixed set of studies (a cohort snapshot), like a
    Kheops album token: expiring, revocable, stored as a SHA-256 hash only."""

    __tablename__ = "share_link"
    link_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    partition: Mapped[str] = mapped_column(String(64), default=CLINICAL)
    study_uids: Mapped[list[str]] = mapped_column(JSON, default=list)
    cohort: Mapped[str] = mapped_column(String(64), default="")  # where the study set came from, if any
    description: Mapped[str] = mapped_column(String(256), default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
