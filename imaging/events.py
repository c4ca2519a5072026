"""Events: typed change kinds written to the index's change log, and in-transaction domain events.

* ChangeKind — what the change log records (durable; the job runner's consumers read it after commit).
* Domain events (e.g. PatientOptedOut) — published by a low layer inside the caller's transaction, so that
  a feature reacts atomically without the low layer importing it: the outbox cancels queued deliveries
  because it subscribed to consent at the composition root (imaging.app), not because consent imports it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy.orm import Session


class ChangeKind(StrEnum):
    INSTANCE_STORED = "InstanceStored"
    INSTANCE_OVERWRITTEN = "InstanceOverwritten"
    INSTANCE_DELETED = "InstanceDeleted"
    SERIES_STABLE = "SeriesStable"
    STUDY_STABLE = "StudyStable"
    STUDY_PRIORITY = "StudyPriority"


@dataclass(frozen=True)
class PatientOptedOut:
    """A patient opted out of secondary use: no new publication or delivery, queued ones cancelled."""

    PatientID: str
    IssuerOfPatientID: str
    user: str


@dataclass(frozen=True)
class InstancesRemoved:
    """Instances of one study left the index (deleted, rejected, purged by a retention rule, erased): no
    feature may use or send them any more (the sharing outbox cancels their queued deliveries)."""

    partition: str
    StudyInstanceUID: str
    SOPInstanceUIDs: tuple[str, ...]
    reason: str
    user: str


@dataclass(frozen=True)
class ConsentWithdrawn:
    """A patient withdrew consent and asked for erasure (GDPR Art. 17), beyond an opt-out: the copies
    already made for secondary use go too — de-identified copies in research projects and cohorts, and
    what peers received. The clinical record itself stays (it is not a secondary-use copy)."""

    PatientID: str
    IssuerOfPatientID: str
    user: str
    request_pk: int  # imaging.consent.ErasureRequest: the durable record of the request and its outcome


E = TypeVar("E")
Handler = Callable[[Session, Any], None]
_handlers: defaultdict[type, list[Handler]] = defaultdict(list)


def subscribe(event_type: type[E], handler: Callable[[Session, E], None]) -> None:
    """Call `handler(session, event)` for every `event_type` published (once, however often subscribed)."""
    if handler not in _handlers[event_type]:
        _handlers[event_type].append(handler)


def publish(session: Session, event: object) -> None:
    """Run the subscribers inside the publisher's transaction: they commit or roll back with it."""
    for handler in _handlers.get(type(event), ()):
        handler(session, event)
