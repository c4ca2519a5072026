"""Triage priority of a series from its findings.

Rule (after the Fleischner size thresholds for solid nodules, which decide follow-up at 6 and 8 mm):
- HIGH: any finding of at least 8 mm;
- MEDIUM: any finding of at least 6 mm;
- LOW: otherwise (no findings, or only findings under 6 mm).
Findings reach this rule only when their score passed the bundle's `min_score`. The values map to
Scheduled Procedure Step Priority (0074,1200) HIGH / MEDIUM / LOW.
"""

from __future__ import annotations

from collections.abc import Iterable

from imaging.priority import Priority
from triage.findings import Finding

__all__ = ["HIGH_DIAMETER_MM", "MEDIUM_DIAMETER_MM", "Priority", "priority_of"]

HIGH_DIAMETER_MM = 8.0
MEDIUM_DIAMETER_MM = 6.0


def priority_of(
    findings: Iterable[Finding], *, high_mm: float = HIGH_DIAMETER_MM, medium_mm: float = MEDIUM_DIAMETER_MM
) -> Priority:
    largest = max((f.diameter_mm for f in findings), default=0.0)
    if largest >= high_mm:
        return Priority.HIGH
    if largest >= medium_mm:
        return Priority.MEDIUM
    return Priority.LOW
