"""Tables of federated discovery: peer sites (id, public key, switches), used token ids (replay
protection), the log of answered count queries (differencing checks), and access requests on both sides.

The sharing feature's `sharing_peer` stays the delivery endpoint (a project STOW root, a DIMSE node); a
federation peer is the site behind it, known by its site id and the public key its tokens verify with.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from imaging.orm import Base, utcnow


class FederationPeer(Base):
    """A peer site: who it is (site id, public key), where its federation API is, and what it may do here."""

    __tablename__ = "federation_peer"
    peer_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[str] = mapped_column(String(128), unique=True)
    url: Mapped[str] = mapped_column(String(512), default="")  # its base URL (…/federation/v1 below it)
    public_key: Mapped[str] = mapped_column(Text)  # PEM, Ed25519: verifies the tokens it signs
    discovery: Mapped[bool] = mapped_column(Boolean, default=True)  # answer its count queries
    requests: Mapped[bool] = mapped_column(Boolean, default=True)  # accept its access requests
    ask: Mapped[bool] = mapped_column(Boolean, default=True)  # include it when we ask our peers
    # The sharing peer (imaging.sharing) an approved request of this site is delivered to by default.
    delivery_peer: Mapped[str] = mapped_column(String(64), default="")
    ca_file: Mapped[str] = mapped_column(String(512), default="")  # CA bundle for its https URL
    description: Mapped[str] = mapped_column(String(256), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class TokenUse(Base):
    """A token id (jti) seen from a peer, kept until the token expires: a second use is a replay."""

    __tablename__ = "federation_token_use"
    use_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    site_id: Mapped[str] = mapped_column(String(128))
    jti: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    __table_args__ = (UniqueConstraint("site_id", "jti", name="uq_federation_jti"),)


class QueryOutcome(StrEnum):
    ANSWERED = "answered"  # counts released
    SUPPRESSED = "suppressed"  # small cell or differencing: no number released
    REFUSED = "refused"  # discovery off for the peer, or an invalid definition


class QueryLog(Base):
    """One count query answered here (by a peer or a local user). `members` (answered ones only) holds the
    (study_pk, patient_pk) pairs the released count covered (int64 pairs, zlib-compressed), kept so that a
    later query differing by a small cell is recognised; it never leaves the site."""

    __tablename__ = "federation_query"
    query_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    requester: Mapped[str] = mapped_column(String(160))  # site:<id> | local:<user>
    definition: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    outcome: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(256), default="")
    studies: Mapped[int] = mapped_column(Integer, default=0)  # exact, kept here
    patients: Mapped[int] = mapped_column(Integer, default=0)
    members: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (Index("ix_federation_query_released", "outcome", "created_at", "patients"),)


class RequestStatus(StrEnum):
    UNSENT = "unsent"  # requester side: not yet accepted by the holding site (retried on refresh)
    PENDING = "pending"  # waiting for the holding site's decision
    APPROVED = "approved"  # the cohort is being (or was) delivered
    REJECTED = "rejected"


class IncomingRequest(Base):
    """An access request (a data permit) a peer site sent for one of its research projects."""

    __tablename__ = "federation_incoming"
    incoming_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_uid: Mapped[str] = mapped_column(String(64), unique=True)  # the requester's UUID
    site_id: Mapped[str] = mapped_column(String(128), index=True)
    peer: Mapped[str] = mapped_column(String(64))  # our name for the requesting site
    project: Mapped[str] = mapped_column(String(64))  # the requester's project
    definition: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    purpose: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(128), default="")  # as the requester names its user
    key_check: Mapped[str] = mapped_column(String(64))  # proves the project key without revealing it
    profile: Mapped[str] = mapped_column(String(128))  # the project's de-identification signature
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.PENDING.value)
    reason: Mapped[str] = mapped_column(String(512), default="")  # a rejection's reason, for the requester
    decided_by: Mapped[str] = mapped_column(String(128), default="")
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    local_project: Mapped[str] = mapped_column(String(64), default="")  # de-identified with its key
    deliver_to: Mapped[str] = mapped_column(String(64), default="")  # a sharing peer
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class RequestStudy(Base):
    """A clinical study an approved request delivers (the cohort as it matched when approved)."""

    __tablename__ = "federation_request_study"
    request_study_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    incoming_pk: Mapped[int] = mapped_column(Integer, index=True)
    StudyInstanceUID: Mapped[str] = mapped_column(String(64))
    __table_args__ = (UniqueConstraint("incoming_pk", "StudyInstanceUID", name="uq_federation_study"),)


class OutgoingRequest(Base):
    """An access request this site sent, with the last status the holding site gave."""

    __tablename__ = "federation_outgoing"
    outgoing_pk: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_uid: Mapped[str] = mapped_column(String(64), unique=True)
    peer: Mapped[str] = mapped_column(String(64))
    project: Mapped[str] = mapped_column(String(64), index=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    purpose: Mapped[str] = mapped_column(Text, default="")
    requested_by: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(16), default=RequestStatus.UNSENT.value)
    reason: Mapped[str] = mapped_column(String(512), default="")
    # What the holding site last said about delivery: {"studies": n, "instances": {status: count}, ...}.
    delivery: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    last_error: Mapped[str] = mapped_column(String(512), default="")  # the last failed call, if any
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
