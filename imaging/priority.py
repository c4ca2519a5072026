"""Triage priority of a study: Scheduled Procedure Step Priority (0074,1200) values, ordered.

The index keeps it per study (empty: not triaged); triage sets it, the worklist sorts by it, cohorts and
sharing policies select on it."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from imaging.errors import InvalidRequest


class Priority(StrEnum):
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"

    @property
    def rank(self) -> int:
        return RANK[self.value]


# Higher is more urgent; "" (not triaged) ranks below LOW.
RANK: dict[str, int] = {"": 0, Priority.LOW: 1, Priority.MEDIUM: 2, Priority.HIGH: 3}
VALUES = tuple(p.value for p in Priority)


def rank(value: str) -> int:
    return RANK.get(value, 0)


def parse_priorities(values: Iterable[str]) -> list[Priority]:
    """Priority names in any case ("high", "HIGH"); InvalidRequest names the allowed values."""
    out = []
    for value in values:
        text = value.strip().upper()
        if text not in VALUES:
            raise InvalidRequest(f"priority must be one of {', '.join(VALUES)}")
        out.append(Priority(text))
    return out
