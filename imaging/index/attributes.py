"""Which attributes the index keeps per level (PS3.4 C.6 and PS3.18 Table 10.6.1-5), as DICOM keywords.

These become columns (same names) and are the keys C-FIND and QIDO can match on. Everything else a
client asks to have returned comes from the per-instance metadata cache.
"""

from __future__ import annotations

from enum import StrEnum


class Level(StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


PATIENT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "StudyDescription",
)
# Computed from the study's series and instances; stored so queries on them stay cheap.
STUDY_COMPUTED = (
    "ModalitiesInStudy",
    "SOPClassesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
PATIENT_COMPUTED = (
    "NumberOfPatientRelatedStudies",
    "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances",
)
SERIES_KEYS = (
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "SeriesDate",
    "SeriesTime",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
)
SERIES_COMPUTED = ("NumberOfSeriesRelatedInstances",)
INSTANCE_KEYS = (
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "ContentDate",
    "ContentTime",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)

# The unique key of each level.
UNIQUE_KEY = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}
LEVEL_KEYS: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: PATIENT_KEYS + PATIENT_COMPUTED,
    Level.STUDY: STUDY_KEYS + STUDY_COMPUTED,
    Level.SERIES: SERIES_KEYS + SERIES_COMPUTED,
    Level.IMAGE: INSTANCE_KEYS,
}
