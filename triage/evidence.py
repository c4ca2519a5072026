"""The source instances as highdicom reads them when building SR and SEG.

highdicom copies the patient and study attributes from the first source instance and reads the Type 2
ones (PatientBirthDate, PatientSex, StudyID, ReferringPhysicianName, ...) as attributes, which raises on
series that leave them out, and parses their values, which raises on malformed ones. Many exports,
modalities and de-identified series do leave them out. The results are strict instead: each such attribute
is copied when valid and written empty otherwise, as the IODs allow for Type 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydicom.dataset import Dataset
from pydicom.valuerep import DA, TM, PersonName


def _valid_date(value: str) -> bool:
    return len(value) == 8 and DA(value) is not None


def _valid_time(value: str) -> bool:
    return TM(value) is not None


# Type 2 attributes of the Patient and General Study modules that highdicom reads, with a validity check.
TYPE2: dict[str, Callable[[str], bool]] = {
    "PatientName": lambda v: PersonName(v) is not None,
    "PatientID": lambda v: len(v) <= 64,
    "PatientBirthDate": _valid_date,
    "PatientSex": lambda v: v in {"M", "F", "O"},
    "StudyDate": _valid_date,
    "StudyTime": _valid_time,
    "ReferringPhysicianName": lambda v: PersonName(v) is not None,
    "StudyID": lambda v: len(v) <= 16,
    "AccessionNumber": lambda v: len(v) <= 16,
}


def evidence(datasets: Sequence[Dataset]) -> list[Dataset]:
    """Shallow copies of `datasets` (pixel data shared, never decoded) with every TYPE2 attribute present:
    its value when valid, else empty. The originals are not modified."""
    return [_complete(ds) for ds in datasets]


def _complete(ds: Dataset) -> Dataset:
    copy = Dataset()
    if hasattr(ds, "file_meta"):
        copy.file_meta = ds.file_meta
    for element in ds.elements():  # raw elements stay raw: nothing is decoded
        copy[element.tag] = element
    for keyword, valid in TYPE2.items():
        value = ds.get(keyword)
        text = "" if value is None else str(value)
        try:
            ok = text == "" or valid(text)
        except ValueError:
            ok = False
        setattr(copy, keyword, text if ok else "")
    return copy
