"""Sharing policies: which stable clinical studies go to which peers, de-identified how.

A policy's rules look at the study (ModalitiesInStudy, StudyDescription, the triage priority) and its
series (BodyPartExamined). Every non-empty rule must hold; within a rule any listed value is enough.
Policies are evaluated on StudyStable and on StudyPriority (triage raised the priority) — in both cases
only for a study that is stable, and never for a patient who opted out. Re-evaluation is harmless: the
outbox holds each instance once per peer and project, so only instances added since (e.g. the AI's SR
and SEG) are queued.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging import audit
from imaging.archive import Archive
from imaging.errors import ArchiveError, InvalidRequest, NotFound
from imaging.index.schema import Series, Study
from imaging.ingest.partitions import get_project
from imaging.partition import CLINICAL
from imaging.priority import parse_priorities
from imaging.sharing.models import Peer, SharingPolicy
from imaging.sharing.outbox import Job, enqueue_study, job_for

log = logging.getLogger(__name__)
POLICY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
POLICY_FIELDS = (
    "description", "enabled", "modalities", "body_parts", "description_regex", "priorities", "peers",
    "project", "identified",
)  # fmt: skip


def _upper(values: Any) -> list[str]:
    return [str(v).strip().upper() for v in values or [] if str(v).strip()]


def add_policy(archive: Archive, name: str, *, user: str = "system", **fields: Any) -> SharingPolicy:
    """Create or replace a policy (validated: peers and project exist, the regex compiles; audited)."""
    if not POLICY_NAME.match(name):
        raise InvalidRequest("policy names are 1-64 letters, digits, '.', '-' or '_'")
    unknown = set(fields) - set(POLICY_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown policy settings: {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {
        "description": "", "enabled": True, "modalities": [], "body_parts": [], "description_regex": "",
        "priorities": [], "peers": [], "project": "", "identified": False,
    }  # fmt: skip
    values.update({k: v for k, v in fields.items() if v is not None})
    values["modalities"] = _upper(values["modalities"])
    values["body_parts"] = _upper(values["body_parts"])
    values["priorities"] = [p.value for p in parse_priorities(values["priorities"])]
    values["peers"] = [str(p) for p in values["peers"]]
    if values["description_regex"]:
        try:
            re.compile(values["description_regex"])
        except re.error as exc:
            raise InvalidRequest(f"description_regex: {exc}") from exc
    if not values["peers"]:
        raise InvalidRequest("a policy needs at least one peer")
    if bool(values["project"]) == bool(values["identified"]):
        raise InvalidRequest(
            "a policy names a research project to de-identify with, or is explicitly identified"
        )
    with archive.db.write() as session:
        for peer in values["peers"]:
            if session.scalar(select(Peer.peer_pk).where(Peer.name == peer)) is None:
                raise NotFound(f"no such peer: {peer}")
        if values["project"]:
            get_project(session, values["project"])
        policy = session.scalar(select(SharingPolicy).where(SharingPolicy.name == name))
        if policy is None:
            policy = SharingPolicy(name=name)
            session.add(policy)
        for key, value in values.items():
            setattr(policy, key, value)
        _audit_change(session, name, user, "set")
    return policy


def remove_policy(archive: Archive, name: str, *, user: str = "system") -> None:
    with archive.db.write() as session:
        policy = session.scalar(select(SharingPolicy).where(SharingPolicy.name == name))
        if policy is None:
            raise NotFound("no such policy")
        session.delete(policy)
        _audit_change(session, name, user, "removed")


def _audit_change(session: Session, name: str, user: str, what: str) -> None:
    """PS3.15 A.5.3.11 Security Alert, type 110135 Object Security Attributes Changed: what may leave."""
    audit.record(
        session,
        audit.AuditEvent.SECURITY_ALERT,
        user=user,
        action="U",
        source=f"policy:{name}",
        detail=f"110135 Object Security Attributes Changed: sharing policy {name} {what}",
    )


def list_policies(session: Session) -> list[SharingPolicy]:
    return list(session.scalars(select(SharingPolicy).order_by(SharingPolicy.name)))


def policy_info(policy: SharingPolicy) -> dict[str, Any]:
    return {"name": policy.name, **{key: getattr(policy, key) for key in POLICY_FIELDS}}


def matches(session: Session, policy: SharingPolicy, study: Study) -> bool:
    if policy.modalities:
        in_study = {m.strip().upper() for m in study.ModalitiesInStudy.split("\\") if m.strip()}
        if not in_study & set(policy.modalities):
            return False
    if policy.priorities and study.priority.upper() not in policy.priorities:
        return False
    if policy.description_regex and not re.search(
        policy.description_regex, study.StudyDescription or "", re.IGNORECASE
    ):
        return False
    if policy.body_parts:
        parts = {
            (p or "").strip().upper()
            for p in session.scalars(select(Series.BodyPartExamined).where(Series.study_pk == study.study_pk))
        }
        if not parts & set(policy.body_parts):
            return False
    return True


def jobs_for_study(archive: Archive, session: Session, study_uid: str, *, trigger: str) -> list[Job]:
    """Queue a stable clinical study for every matching policy; the delivery jobs to enqueue."""
    study = session.scalar(
        select(Study).where(Study.partition == CLINICAL, Study.StudyInstanceUID == study_uid)
    )
    if study is None or not study.stable:
        return []
    jobs: list[Job] = []
    seen: set[tuple[str, str]] = set()
    for policy in session.scalars(select(SharingPolicy).where(SharingPolicy.enabled.is_(True))):
        if not matches(session, policy, study):
            continue
        project = "" if policy.identified else policy.project
        for peer in policy.peers:
            if (peer, project) in seen:
                continue
            seen.add((peer, project))
            try:
                with session.begin_nested():
                    added = enqueue_study(
                        archive, session, study, peer, project, origin=f"policy:{policy.name}"
                    )
            except (ArchiveError, OSError, ValueError) as exc:
                # A broken policy (project or key gone) must not block the change-log consumer.
                log.error("sharing policy %s not applied: %s", policy.name, type(exc).__name__)
                continue
            if added:
                jobs.append(job_for(peer, project, study_uid, trigger))
    return jobs
