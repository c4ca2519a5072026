"""Typed change events, written to the index's change log in the same transaction as the change."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum


class ChangeKind(StrEnum):
    INSTANCE_STORED = "InstanceStored"
    INSTANCE_OVERWRITTEN = "InstanceOverwritten"
    INSTANCE_DELETED = "InstanceDeleted"
    SERIES_STABLE = "SeriesStable"
    STUDY_STABLE = "StudyStable"
    STUDY_PRIORITY = "StudyPriority"


@dataclass(frozen=True)
class ChangeEvent:
    seq: int
    kind: ChangeKind
    partition: str
    StudyInstanceUID: str
    SeriesInstanceUID: str
    SOPInstanceUID: str
    created_at: dt.datetime
