"""A cohort definition and the one function that says which studies of this site match it.

What a site counts (for its own users and for its peers alike, through `matching_studies`): the clinical
studies it could share de-identified for secondary use — stable (shared only once complete), whose patient
has not opted out (imaging.consent) — that match the definition:

* `filters`: the local cohorts' DICOM matching keys (imaging.research.cohorts.FILTER_KEYS: Modality,
  BodyPartExamined, StudyDate, SeriesDescription, StudyDescription; wildcards, ranges and lists as in
  C-FIND/QIDO, imaging.index.matching) plus PatientSex. Series-level keys hold on one series together,
  as in a local cohort: "CT of the CHEST" is a study with a CT series of the chest.
* `min_priority`: the AI triage priority of the study (imaging.priority), at least this high.
* `age_min` / `age_max`: the age band, in whole years at the study date (PatientBirthDate, StudyDate); a
  study whose age is unknown does not match a band.
* `min_findings` / `min_diameter_mm`: the AI findings of the study (its series' latest triage outcomes):
  at least that many, and the largest at least that diameter.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from imaging.consent import ConsentOptOut
from imaging.errors import InvalidRequest
from imaging.index.matching import InvalidMatchKey, condition, conditions
from imaging.index.schema import Patient, Series, Study
from imaging.partition import CLINICAL
from imaging.priority import RANK, Priority, rank
from imaging.research.cohorts import FILTER_KEYS as COHORT_FILTER_KEYS
from triage.records import TriageOutcome

FILTER_KEYS = (*COHORT_FILTER_KEYS, "PatientSex")
MAX_AGE = 150
_CHUNK = 500

FilterValue = Annotated[str, Field(max_length=256)]


class CohortDefinition(BaseModel):
    """What a researcher asks for. Immutable, and canonical as JSON (audit, logs, the wire)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    filters: dict[str, FilterValue] = Field(default_factory=dict, max_length=len(FILTER_KEYS))
    min_priority: str = Field(default="", pattern=r"^(|HIGH|MEDIUM|LOW)$")
    age_min: int | None = Field(default=None, ge=0, le=MAX_AGE)
    age_max: int | None = Field(default=None, ge=0, le=MAX_AGE)
    min_findings: int | None = Field(default=None, ge=0, le=10_000)
    min_diameter_mm: float | None = Field(default=None, ge=0, le=1000)

    @field_validator("filters")
    @classmethod
    def _known_keys(cls, filters: dict[str, str]) -> dict[str, str]:
        unknown = set(filters) - set(FILTER_KEYS)
        if unknown:
            raise ValueError(f"unsupported filter: {', '.join(sorted(unknown))}")
        for key, value in filters.items():
            try:
                condition(key, value)
            except InvalidMatchKey as exc:
                raise ValueError(str(exc)) from None
        return {k: v for k, v in sorted(filters.items()) if v.strip(" ") not in ("", "*")}

    @model_validator(mode="after")
    def _band(self) -> CohortDefinition:
        if self.age_min is not None and self.age_max is not None and self.age_min > self.age_max:
            raise ValueError("age_min is above age_max")
        return self

    def canonical(self) -> str:
        """Sorted JSON without defaults: equal definitions give equal text (audit detail, logs)."""
        return json.dumps(self.model_dump(exclude_defaults=True), sort_keys=True, separators=(",", ":"))

    @property
    def needs_findings(self) -> bool:
        return self.min_findings is not None or self.min_diameter_mm is not None


def definition(data: Any) -> CohortDefinition:
    """A CohortDefinition from JSON-like data; InvalidRequest (400) names what is wrong, never a value."""
    if isinstance(data, CohortDefinition):
        return data
    try:
        return CohortDefinition.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'definition'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidRequest(f"invalid cohort definition: {problems}"[:500]) from None


def parse_cli(
    filters: Iterable[str],
    *,
    min_priority: str = "",
    age: str = "",
    sex: str = "",
    min_findings: int | None = None,
    min_diameter_mm: float | None = None,
) -> CohortDefinition:
    """The command line's form: `--filter KEY=VALUE`..., `--age 50-70` (or `50-`, `-40`), `--sex F`."""
    values: dict[str, str] = {}
    for item in filters:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidRequest(f"--filter takes KEY=VALUE, not {key[:40]!r}")
        values[key.strip()] = value
    if sex:
        values["PatientSex"] = sex.upper()
    data: dict[str, Any] = {"filters": values, "min_priority": min_priority.upper()}
    if age:
        low, sep, high = age.partition("-")
        try:
            data["age_min"] = int(low) if low.strip() else None
            data["age_max"] = (int(high) if high.strip() else None) if sep else data["age_min"]
        except ValueError:
            raise InvalidRequest("--age takes a band in years: 50-70, 50- or -40") from None
    data["min_findings"], data["min_diameter_mm"] = min_findings, min_diameter_mm
    return definition(data)


@dataclass(frozen=True)
class Member:
    """One matching study, by internal keys only (they never leave the site)."""

    study_pk: int
    patient_pk: int
    StudyInstanceUID: str


def matching_studies(session: Session, cohort: CohortDefinition) -> list[Member]:
    """The clinical studies this site could share for `cohort` (see the module's docstring)."""
    opted_out = exists(
        select(ConsentOptOut.optout_pk).where(
            ConsentOptOut.PatientID == Patient.PatientID,
            ConsentOptOut.IssuerOfPatientID == Patient.IssuerOfPatientID,
        )
    )
    stmt = (
        select(
            Study.study_pk,
            Study.patient_pk,
            Study.StudyInstanceUID,
            Study.StudyDate,
            Patient.PatientBirthDate,
        )
        .select_from(Series)
        .join(Study, Study.study_pk == Series.study_pk)
        .join(Patient, Patient.patient_pk == Study.patient_pk)
        .where(
            Study.partition == CLINICAL,
            Study.stable.is_(True),
            ~opted_out,
            conditions(dict(cohort.filters)),
        )
        .distinct()
    )
    if cohort.min_priority:
        floor = rank(cohort.min_priority)
        stmt = stmt.where(Study.priority.in_([p.value for p in Priority if RANK[p.value] >= floor]))
    members = []
    for study_pk, patient_pk, study_uid, study_date, birth_date in session.execute(stmt):
        if (cohort.age_min is not None or cohort.age_max is not None) and not _in_band(
            age_at(birth_date, study_date), cohort.age_min, cohort.age_max
        ):
            continue
        members.append(Member(study_pk, patient_pk, study_uid))
    if cohort.needs_findings:
        summary = findings_summary(session, [m.StudyInstanceUID for m in members])
        members = [m for m in members if _findings_match(cohort, *summary.get(m.StudyInstanceUID, (0, 0.0)))]
    return sorted(members, key=lambda m: m.study_pk)


def age_at(birth_date: str, study_date: str) -> int | None:
    """Whole years between two DA values (YYYYMMDD), or None when either is missing or malformed."""
    try:
        born = dt.datetime.strptime(birth_date.strip(), "%Y%m%d").date()
        seen = dt.datetime.strptime(study_date.strip(), "%Y%m%d").date()
    except ValueError:
        return None
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    return years if years >= 0 else None


def _in_band(age: int | None, low: int | None, high: int | None) -> bool:
    if age is None:
        return False
    return (low is None or age >= low) and (high is None or age <= high)


def findings_summary(session: Session, study_uids: list[str]) -> dict[str, tuple[int, float]]:
    """StudyInstanceUID → (number of AI findings, largest diameter in mm) over the study's series, each
    series by its latest triage outcome (a newer bundle's result replaces an older one's)."""
    latest: dict[tuple[str, str], TriageOutcome] = {}
    for start in range(0, len(study_uids), _CHUNK):
        for outcome in session.scalars(
            select(TriageOutcome)
            .where(
                TriageOutcome.partition == CLINICAL,
                TriageOutcome.StudyInstanceUID.in_(study_uids[start : start + _CHUNK]),
            )
            .order_by(TriageOutcome.outcome_pk)
        ):
            latest[(outcome.StudyInstanceUID, outcome.SeriesInstanceUID)] = outcome
    counts: dict[str, int] = defaultdict(int)
    largest: dict[str, float] = defaultdict(float)
    for (study_uid, _), outcome in latest.items():
        for finding in outcome.findings or []:
            counts[study_uid] += 1
            diameter = finding.get("diameter_mm")
            if isinstance(diameter, int | float):
                largest[study_uid] = max(largest[study_uid], float(diameter))
    return {uid: (counts[uid], largest[uid]) for uid in counts}


def _findings_match(cohort: CohortDefinition, count: int, largest: float) -> bool:
    if cohort.min_findings is not None and count < cohort.min_findings:
        return False
    return cohort.min_diameter_mm is None or (count > 0 and largest >= cohort.min_diameter_mm)
