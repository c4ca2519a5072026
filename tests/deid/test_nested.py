"""The leak classes of issue 16 at several depths and under several option sets.

- items of code sequences whose action is X, Z or D (and the C and U sequence cases): nothing of the
  item survives, a dummied sequence holds only the dummy code, a zeroed one is empty;
- TimezoneOffsetFromUTC gets its action at every depth;
- SR TIME content items are never kept verbatim next to shifted dates; every date at every depth (SR
  content, functional groups, PET) is shifted by the patient's one offset, or gone.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage

from imaging.deid import Deidentifier, DeidOption, DeidProfile
from imaging.deid.codes import DUMMY_CODE
from imaging.deid.dates import shift_da, shift_dt
from tests.deid.checker import file_bytes
from tests.deid.conftest import KEY
from tests.deid.corpus import Corpus
from tests.deid.test_leaks import PROFILES

Opt = DeidOption
# Containers the lead's corpus used (kept, unlisted, or U sequences), outermost first.
CONTAINERS = {
    "procedure": ("ProcedureCodeSequence",),
    "references": ("ReferencedSeriesSequence", "ReferencedInstanceSequence"),
    "purpose": ("ReferencedImageSequence", "PurposeOfReferenceCodeSequence"),
    "deep": (
        "ReferencedSeriesSequence",
        "ReferencedInstanceSequence",
        "DerivationImageSequence",
        "SourceImageSequence",
    ),
}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _identifying_code(token: str) -> Dataset:
    """A local code naming a person, with a nested modifier and an equivalent code naming them too."""
    item = _code(f"{token}V", "99HOSP", f"DR {token}M")
    item.ModifierCodeSequence = Sequence([_code(f"{token}N", "99HOSP", f"{token}O")])
    item.EquivalentCodeSequence = Sequence([_code(f"{token}E", "L", f"{token}F")])
    return item


def _nest(ds: Dataset, containers: tuple[str, ...]) -> Dataset:
    """The innermost item of a chain of one-item sequences (code items where the keyword says so)."""
    holder = ds
    for keyword in containers:
        item = _code("121311", "DCM", "Localizer") if keyword.endswith("CodeSequence") else Dataset()
        if keyword in ("ReferencedImageSequence", "SourceImageSequence", "ReferencedInstanceSequence"):
            item.ReferencedSOPClassUID = CTImageStorage
            item.ReferencedSOPInstanceUID = "1.2.826.0.1.3680043.10.543.90.1"
        setattr(holder, keyword, Sequence([item]))
        holder = item
    return holder


def _walk(ds: Dataset, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], pydicom.DataElement]]:
    for elem in ds:
        yield path, elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk(item, (*path, elem.keyword))


CODE_SEQUENCES = {
    # keyword: action in the Basic Profile
    "PersonIdentificationCodeSequence": "D",
    "InstitutionCodeSequence": "X/Z/D",
    "InstitutionalDepartmentTypeCodeSequence": "X",
    "VerifyingObserverIdentificationCodeSequence": "Z",
    "AdmittingDiagnosesCodeSequence": "X",  # C under Clean Descriptors
    "ReasonForVisitCodeSequence": "X",
}


@pytest.mark.parametrize("containers", sorted(CONTAINERS), ids=str)
@pytest.mark.parametrize("name", ["basic", "default", "cleaning"])
def test_code_sequences_keep_no_identifying_text_at_any_depth(
    corpus: Corpus, containers: str, name: str
) -> None:
    ds = copy.deepcopy(corpus.datasets["ct"])
    tokens = []
    for keyword in CODE_SEQUENCES:
        token = "ZQXC" + "".join(ch for ch in keyword if ch.isupper())[:6]
        setattr(ds, keyword, Sequence([_identifying_code(token + "T")]))  # top level
        inner = _nest(ds, CONTAINERS[containers])
        setattr(inner, keyword, Sequence([_identifying_code(token + "N")]))  # nested 1-4 deep
        tokens += [token + "T", token + "N"]
    out = Deidentifier(key=KEY, profile=PROFILES[name]).deidentify(ds).dataset
    assert out is not None
    data = file_bytes(out)
    assert not [t for t in tokens if t.encode() in data]
    for path, elem in _walk(out):
        if elem.keyword in CODE_SEQUENCES and elem.value:
            items = [(i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning) for i in elem.value]
            assert items == [DUMMY_CODE], (path, elem.keyword, items)  # dummied: only the dummy code
            assert all(len(item) == 3 for item in elem.value)  # no nested code left in it
        if elem.keyword == "VerifyingObserverIdentificationCodeSequence":
            assert elem.value == [], path  # Z: empty
    # The containers' own public codes survive with their canonical meaning (the walk kept them).
    if containers == "purpose":
        purpose = out.ReferencedImageSequence[0].PurposeOfReferenceCodeSequence[0]
        assert (purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning) == (
            "121311",
            "DCM",
            "Localizer",
        )


def test_a_public_code_keeps_its_canonical_meaning_and_a_planted_meaning_goes(corpus: Corpus) -> None:
    ds = copy.deepcopy(corpus.datasets["ct"])
    ds.ReferencedImageSequence[0].PurposeOfReferenceCodeSequence = Sequence(
        [_code("121311", "DCM", "ZQXPLANTEDMEANING")]
    )
    ds.AdmittingDiagnosesCodeSequence = Sequence(
        [_code("59282003", "SCT", "ZQXDIAGNOSIS"), _code("ZQXLOCAL1", "99HOSP", "ZQXLOCALMEANING")]
    )
    profile = DeidProfile(options=frozenset({Opt.CLEAN_DESCRIPTORS}))
    out = Deidentifier(key=KEY, profile=profile).deidentify(ds).dataset
    assert out is not None
    purpose = out.ReferencedImageSequence[0].PurposeOfReferenceCodeSequence[0]
    assert purpose.CodeMeaning == "Localizer"
    # C on a code sequence: the SNOMED code stays (canonical meaning), the local one is dummied.
    diagnoses = [(i.CodeValue, i.CodingSchemeDesignator) for i in out.AdmittingDiagnosesCodeSequence]
    assert diagnoses == [("59282003", "SCT"), DUMMY_CODE[:2]]
    assert out.AdmittingDiagnosesCodeSequence[0].CodeMeaning == "Pulmonary embolism"
    data = file_bytes(out)
    assert not [t for t in ("ZQXPLANTEDMEANING", "ZQXDIAGNOSIS", "ZQXLOCAL1") if t.encode() in data]


@pytest.mark.parametrize("depth", range(5))
@pytest.mark.parametrize("name", sorted(PROFILES))
def test_timezone_offset_gets_its_action_at_every_depth(corpus: Corpus, depth: int, name: str) -> None:
    ds = copy.deepcopy(corpus.datasets["ct"])
    holder = _nest(ds, CONTAINERS["deep"][:depth])
    holder.TimezoneOffsetFromUTC = "+1045"  # a planted zone (Lord Howe Island's daylight offset)
    profile = PROFILES[name]
    out = Deidentifier(key=KEY, profile=profile).deidentify(ds).dataset
    assert out is not None
    found = [elem.value for _path, elem in _walk(out) if elem.keyword == "TimezoneOffsetFromUTC"]
    if profile.has(Opt.RETAIN_LONGITUDINAL_FULL_DATES):
        assert found == ["+1045"]  # K
    else:
        assert "+1045" not in found and b"+1045" not in file_bytes(out)  # X (Basic), C (Modified Dates)


def _content(value_type: str, value: str | None = None) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([_code("111526", "DCM", "DateTime Started")])
    if value_type == "TIME":
        item.Time = value
    elif value_type == "DATE":
        item.Date = value
    elif value_type == "DATETIME":
        item.DateTime = value
    return item


def _sr_with_times(corpus: Corpus, depth: int) -> Dataset:
    """The corpus SR with a DATE, TIME and DATETIME triple nested `depth` containers deep."""
    sr = copy.deepcopy(corpus.datasets["sr"])
    holder = sr
    for _ in range(depth - 1):
        container = _content("CONTAINER")
        container.ContinuityOfContent = "SEPARATE"
        holder.ContentSequence.append(container)
        container.ContentSequence = Sequence()
        holder = container
    holder.ContentSequence.extend(
        [_content("DATE", "20240611"), _content("TIME", "142317.25"), _content("DATETIME", "20240611142317")]
    )
    return sr


@pytest.mark.parametrize("depth", range(1, 5))
@pytest.mark.parametrize("name", sorted(PROFILES))
def test_sr_time_items_are_never_kept_next_to_shifted_dates(corpus: Corpus, depth: int, name: str) -> None:
    profile = PROFILES[name]
    result = Deidentifier(key=KEY, profile=profile).deidentify(_sr_with_times(corpus, depth))
    out = result.dataset
    assert out is not None, result.reasons
    values = {elem.keyword: elem.value for _path, elem in _walk(out) if elem.keyword in ("Date", "Time")}
    datetimes = [e.value for _p, e in _walk(out) if e.keyword == "DateTime" and str(e.value).startswith("20")]
    if profile.has(Opt.RETAIN_LONGITUDINAL_FULL_DATES):
        assert values == {"Date": "20240611", "Time": "142317.25"}
        assert "20240611142317" in datetimes
        return
    assert values["Time"] != "142317.25" and b"142317.25" not in file_bytes(out)
    if profile.has(Opt.RETAIN_LONGITUDINAL_MODIFIED_DATES):
        offset = result.date_offset_days
        assert offset is not None
        assert values["Date"] == shift_da("20240611", offset)  # shifted with the patient's offset
        assert shift_dt("20240611142317", offset) in datetimes
    else:
        assert values["Date"] != "20240611" and "20240611142317" not in datetimes


def _dates(ds: Dataset) -> dict[tuple[tuple[str, ...], str, int], tuple[str, str]]:
    """Every DA/DT value by (sequence path, keyword, index among same-named values): (VR, value)."""
    found: dict[tuple[tuple[str, ...], str, int], tuple[str, str]] = {}
    for path, elem in _walk(ds):
        if elem.VR in ("DA", "DT") and elem.value and not elem.tag.is_private:
            values = elem.value if isinstance(elem.value, pydicom.multival.MultiValue) else [elem.value]
            for value in values:
                key = (path, elem.keyword, sum(1 for k in found if k[:2] == (path, elem.keyword)))
                found[key] = (elem.VR, str(value))
    return found


@pytest.mark.parametrize("kind", ["ct", "enhanced", "pet", "sr"])
def test_every_date_at_every_depth_is_shifted_by_the_one_offset(corpus: Corpus, kind: str) -> None:
    """Modified Dates: functional groups, PET, SR content and nested references all move together."""
    source = corpus.datasets[kind]
    result = Deidentifier(key=KEY).deidentify(source)
    assert result.dataset is not None and result.date_offset_days is not None
    before, after = _dates(source), _dates(result.dataset)
    assert before, kind
    for key, (vr, value) in before.items():
        shifted = (shift_da if vr == "DA" else shift_dt)(value, result.date_offset_days)
        now = after.get(key)
        assert now in (None, (vr, shifted)), (key, value, now)
    assert any(key[0] for key in after), "no nested date was kept at all"
