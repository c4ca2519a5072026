"""What a count may say: the statistical disclosure control between `criteria.matching_studies` and
anyone outside the index — a peer site, or a local user who may not read the clinical partition.

1. Small cells: fewer than `federation_min_count` studies or patients → suppressed (the answer says
   "suppressed", never a number), so a count cannot single out a patient.
2. Differencing: two released counts whose study sets differ by a few patients would reveal those
   patients as well as a small cell does (ask "CT" and "CT, not born on 1 March 1961"). Each released
   count keeps the (study, patient) keys it covered, inside the index; a new count whose set differs from
   one released in the last `federation_difference_hours` by 1 to `federation_min_count` - 1 patients is
   suppressed. The check is across every requester, so peers cannot pool their answers either, and it
   also catches the same question asked before and after a few studies arrived.
3. Rounding (`federation_count_rounding`, off by default): released counts are rounded to a multiple.

Every answer is audited (PS3.15 Query, 110112; the requester as the user, the definition and outcome as
the detail, no patient identifier) and logged (`federation_query`), refusals included.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import zlib
from array import array
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging import audit
from imaging.archive import Archive
from imaging.federation.criteria import CohortDefinition, Member, matching_studies
from imaging.federation.models import QueryLog, QueryOutcome
from imaging.orm import utcnow

SMALL_CELL = "small cell"
DIFFERENCING = "differs from a recently released count by a small cell"


@dataclass(frozen=True)
class CountAnswer:
    """A site's answer: counts only, and only when releasable."""

    site: str
    status: str  # answered | suppressed | refused
    studies: int | None = None
    patients: int | None = None
    threshold: int = 0
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _pack(members: list[Member]) -> bytes:
    """(study_pk, patient_pk) pairs as little-endian int64, zlib-compressed (fast to read back)."""
    pairs = array("q", [key for m in members for key in (m.study_pk, m.patient_pk)])
    if sys.byteorder != "little":
        pairs.byteswap()
    return zlib.compress(pairs.tobytes(), 6)


def _unpack(data: bytes) -> dict[int, int]:
    pairs = array("q")
    pairs.frombytes(zlib.decompress(data) if data else b"")
    if sys.byteorder != "little":
        pairs.byteswap()
    return dict(zip(pairs[0::2], pairs[1::2], strict=True))


def _round(value: int, step: int) -> int:
    return value if step <= 1 else int((value + step // 2) // step * step)


def _differs_by_small_cell(
    session: Session, archive: Archive, members: dict[int, int], patients: int
) -> bool:
    """Whether a count released recently covered a set that differs from `members` by 1..k-1 patients."""
    settings = archive.settings
    if settings.federation_difference_hours <= 0:
        return False
    k = settings.federation_min_count
    since = utcnow() - dt.timedelta(hours=settings.federation_difference_hours)
    # Two sets whose patient counts differ by k or more differ by at least k patients: skip them unread.
    candidates = session.scalars(
        select(QueryLog.members).where(
            QueryLog.outcome == QueryOutcome.ANSWERED.value,
            QueryLog.created_at >= since,
            QueryLog.patients > patients - k,
            QueryLog.patients < patients + k,
        )
    )
    for packed in candidates:
        released = _unpack(packed)
        changed = members.keys() ^ released.keys()
        if not changed:
            continue
        differing = {members.get(s, released.get(s)) for s in changed}
        if len(differing) < k:
            return True
    return False


def answer(
    archive: Archive, cohort: CohortDefinition, *, requester: str, user: str, source: str
) -> CountAnswer:
    """Count `cohort` here and release what may be released. `requester` keys the log (site:<id> or
    local:<user>); `user`/`source` go to the audit record."""
    settings = archive.settings
    k = settings.federation_min_count
    site = settings.federation_site_id or "local"
    with archive.db.read() as session:
        members = matching_studies(session, cohort)
    studies, patients = len(members), len({m.patient_pk for m in members})

    def work(session: Session) -> CountAnswer:
        keyed = {m.study_pk: m.patient_pk for m in members}
        if studies < k or patients < k:
            result = CountAnswer(site, QueryOutcome.SUPPRESSED.value, threshold=k, reason=SMALL_CELL)
        elif _differs_by_small_cell(session, archive, keyed, patients):
            result = CountAnswer(site, QueryOutcome.SUPPRESSED.value, threshold=k, reason=DIFFERENCING)
        else:
            step = settings.federation_count_rounding
            result = CountAnswer(
                site, QueryOutcome.ANSWERED.value, _round(studies, step), _round(patients, step), k
            )
        released = result.status == QueryOutcome.ANSWERED.value
        session.add(
            QueryLog(
                requester=requester[:160],
                definition=json.loads(cohort.canonical()),
                outcome=result.status,
                reason=result.reason,
                studies=studies,
                patients=patients,
                members=_pack(members) if released else b"",
            )
        )
        said = f"{result.studies} studies, {result.patients} patients" if released else result.reason
        _audit(session, user, source, cohort, f"{result.status} ({said})")
        return result

    return archive.db.transaction(work, attempts=3)


def refuse(
    archive: Archive,
    cohort: CohortDefinition | None,
    *,
    requester: str,
    user: str,
    source: str,
    reason: str,
) -> CountAnswer:
    """Log and audit a refused count query (discovery off for the peer), then say so."""
    site = archive.settings.federation_site_id or "local"

    def work(session: Session) -> None:
        session.add(
            QueryLog(
                requester=requester[:160],
                definition=json.loads(cohort.canonical()) if cohort else {},
                outcome=QueryOutcome.REFUSED.value,
                reason=reason[:256],
            )
        )
        _audit(session, user, source, cohort, f"refused ({reason})", outcome=audit.Outcome.MINOR_FAILURE)

    archive.db.transaction(work)
    return CountAnswer(site, QueryOutcome.REFUSED.value, reason=reason)


def _audit(
    session: Session,
    user: str,
    source: str,
    cohort: CohortDefinition | None,
    said: str,
    *,
    outcome: audit.Outcome = audit.Outcome.SUCCESS,
) -> None:
    audit.record(
        session,
        audit.AuditEvent.QUERY,
        user=user[:128],
        action="E",
        outcome=outcome,
        source=source[:128],
        detail=f"federated count {cohort.canonical() if cohort else '{}'}: {said}",
    )
