"""The walk over every element at every depth: Table E.1-1 actions, by the Type of each attribute.

Each dataset level is walked with its sequence path (for the attribute's Type in the IOD) and a mode
(actions.KEEP, CLEAN, DUMMY) set by the actions of the enclosing sequences:
- a sequence whose action is D holds only dummy content: a code sequence exactly one dummy code item,
  any other sequence its items walked in DUMMY mode (values that can carry identity become dummies or
  go; structure, UIDs (mapped) and dates (as the dates options say) stay);
- a sequence whose action is Z is empty, X removes it; C walks its items in CLEAN mode; K and U walk
  them with the table;
- code items anywhere: a public code keeps its canonical meaning; any other code is dummied in CLEAN
  and DUMMY mode (see codes.py).
Validity: a removal (X) or an emptying (Z) of an attribute that the IOD requires at exactly that path is
turned into an empty value (Type 2) or a dummy (Type 1), and conditional attributes whose condition the
removal broke are pruned (conditions.py), so the output is no less valid than its input.

Times under the dates options: Full Dates keeps them. Modified Dates shifts dates by whole days, so a
time of day that sits with the date it belongs to (StudyDate/StudyTime, a DT value) is kept as shifted.
A TIME content item (0040,A122) has no date of its own to be shifted with: it is removed (a dummy, the
item's value being Type 1) rather than left verbatim next to shifted dates. Timezone offsets
(TimezoneOffsetFromUTC, C under Modified Dates) say where the patient was: removed, or dummied by Type.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from imaging.deid import codes, conditions, graphics
from imaging.deid import raw as raw_values
from imaging.deid.actions import CLEAN, DUMMY, KEEP, CompiledProfile
from imaging.deid.dates import shift_da, shift_dt
from imaging.deid.iod import attribute_type, declared_type
from imaging.deid.options import DeidOption
from imaging.deid.pixels import bitmap_has_text, tesseract_available
from imaging.deid.private import is_safe_private
from imaging.deid.text import clean_text, is_clean, phi_words

if TYPE_CHECKING:
    from imaging.deid.engine import Deidentifier

PatientID = BaseTag(0x00100020)
PatientName = BaseTag(0x00100010)
IssuerOfPatientID = 0x00100021
TextValue = 0x0040A160
ValueType = 0x0040A040
Time = 0x0040A122
SOPClassUID = 0x00080016
TimezoneOffsetFromUTC = 0x00080201
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT"})
DUMMY_VALUES: dict[str, str] = {
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "AS": "000Y",
    "DS": "0",
    "IS": "0",
    "UR": "urn:anonymized",
}
DUMMY_TEXT = "ANONYMIZED"
# PHI-bearing header values whose words are removed from cleaned text and looked for in pixels.
PHI_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "OtherPatientNames",
    "PatientMotherBirthName",
    "PatientAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "NameOfPhysiciansReadingStudy",
    "InstitutionName",
    "StudyID",
    "IssuerOfPatientID",
    "PatientTelephoneNumbers",
    "MilitaryRank",
    "RequestingPhysician",
    "PhysiciansOfRecord",
)


def values_of(value: object) -> list[object]:
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [] if value is None else [value]


def phi_values(ds: Dataset) -> list[str]:
    values: list[str] = []
    for keyword in PHI_KEYWORDS:
        elem = ds.get(keyword)
        if elem is not None:
            values.extend(str(v) for v in values_of(elem))
    return values


_PATIENT = frozenset({PatientID, PatientName})
_NOT_SHARED = frozenset({"SQ", "UN", None})
_DUMMY_TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})
_SLOW = object()  # fast() cannot do it: apply() will


def _copy(elem: DataElement) -> DataElement:
    """A copy that shares immutable values and copies lists, so the source is never mutated."""
    if isinstance(elem.value, MultiValue | list):
        return copy.deepcopy(elem)
    return copy.copy(elem)


class Walk:
    """State of one deidentify() call: the walk over every element at every depth."""

    def __init__(self, engine: Deidentifier, src: Dataset, pseudonym: str, offset: int | None) -> None:
        self.engine = engine
        self.compiled: CompiledProfile = engine.compiled
        self.sop_class = raw_values.text(src, SOPClassUID)
        self.pseudonym = pseudonym
        self.offset = offset
        self.uid_map: dict[str, str] = {}
        self.src = src
        self._phi: frozenset[str] | None = None
        self.keep_dates = engine.profile.has(DeidOption.RETAIN_LONGITUDINAL_FULL_DATES)

    @property
    def phi(self) -> frozenset[str]:
        """Words of the source's PHI values, computed only when some text is cleaned."""
        if self._phi is None:
            self._phi = phi_words(phi_values(self.src))
        return self._phi

    # --- values -------------------------------------------------------------------------------------

    def uid(self, value: str) -> str:
        new = self.engine.uid_for(value)
        if new != value:
            self.uid_map[value.strip("\x00 ")] = new
        return new

    def _each(self, value: object, fn: Callable[[str], str | None]) -> object | None:
        """Apply fn to each value of a (multi-)valued string element; None if any value fails."""
        if isinstance(value, MultiValue | list | tuple):
            out = [fn(str(v)) for v in value]
            return None if any(v is None for v in out) else out
        return fn(str(value)) if value is not None else None

    def shift(self, vr: str, value: object) -> object | None:
        assert self.offset is not None
        days = self.offset
        return self._each(
            value, (lambda v: shift_da(v, days)) if vr == "DA" else (lambda v: shift_dt(v, days))
        )

    # --- actions ------------------------------------------------------------------------------------

    def dummy(self, elem: DataElement, path: tuple[str, ...]) -> DataElement | None:
        vr = elem.VR
        if vr == "SQ":
            return self.dummy_sequence(elem, path)
        if vr == "UI":
            return self.replace_uid(elem)
        if vr in BINARY_VRS:
            length = len(elem.value or b"")
            return DataElement(elem.tag, vr, b"\x00" * (length + length % 2))
        if vr in NUMBER_VRS:
            return DataElement(elem.tag, vr, 0)
        return DataElement(elem.tag, vr, DUMMY_VALUES.get(vr, DUMMY_TEXT))

    def dummy_sequence(self, elem: DataElement, path: tuple[str, ...]) -> DataElement:
        """D on a sequence: only dummy content (an empty sequence stays empty)."""
        items = list(elem.value or [])
        keyword = keyword_for_tag(elem.tag)
        if items and codes.is_code_sequence(keyword, items):
            return DataElement(elem.tag, "SQ", Sequence([codes.dummy_code_item()]))
        return self.sequence(elem, path, DUMMY)

    def replace_uid(self, elem: DataElement) -> DataElement | None:
        if elem.VR != "UI":
            return None
        value = self._each(elem.value, self.uid) if elem.value else elem.value
        return DataElement(elem.tag, "UI", value)

    def by_type(self, code: str, tag: int, path: tuple[str, ...]) -> str:
        """X/Z/D-style codes -> the least destructive action that keeps the IOD conformant."""
        if code == "X/Z/U*":
            return "U"  # keep references (their UIDs mapped consistently) so they still resolve
        kind = attribute_type(self.sop_class, path, keyword_for_tag(tag))
        choices = code.split("/")
        if kind == 3:
            return "X" if "X" in choices else ("Z" if "Z" in choices else "D")
        if kind == 2 and "Z" in choices:
            return "Z"
        return "D"

    def clean(self, elem: DataElement, path: tuple[str, ...], mode: int, item: Dataset) -> DataElement | None:
        """The 'C' action, by VR: shift dates, clean text, hash AE titles, recurse into sequences."""
        vr, tag = elem.VR, elem.tag
        if vr == "SQ":
            return self.sequence(elem, path, max(mode, CLEAN))
        if tag == TimezoneOffsetFromUTC:
            return self.apply("X", elem, path, mode, item)  # where the patient was: not kept
        if vr in ("DA", "DT"):
            return self.date(elem, path, mode, item)
        if vr == "TM":
            return self.time(elem, path, mode, item)
        if vr == "UI":
            return self.replace_uid(elem)
        if vr == "AE":
            value = self._each(elem.value, lambda v: "AE" + self.engine.pseudonyms.short_code("ae", v, 14))
            return DataElement(tag, vr, value)
        if vr in TEXT_VRS:
            return DataElement(tag, vr, self._each(elem.value, lambda v: clean_text(v, self.phi)))
        if vr == "PN":
            return self.dummy(elem, path)
        if vr == "CS" and all(is_clean(str(v), self.phi) for v in values_of(elem.value)):
            return _copy(elem)
        if vr in NUMBER_VRS or vr in ("DS", "IS", "AS", "US or SS"):
            return _copy(elem)
        # Binary and coded values cannot be cleaned: fall back to the Basic Profile action.
        basic = self.compiled.basic.get(tag, "X")
        return self.apply(basic if basic != "C" else "X", elem, path, mode, item)

    def date(self, elem: DataElement, path: tuple[str, ...], mode: int, item: Dataset) -> DataElement | None:
        if self.keep_dates:
            return _copy(elem)
        if self.offset is None or not elem.value:
            return self.apply("X/Z/D", elem, path, mode, item)
        shifted = self.shift(elem.VR, elem.value)
        if shifted is None:  # unparseable date: never pass it through
            return self.apply("X/Z/D", elem, path, mode, item)
        return DataElement(elem.tag, elem.VR, shifted)

    def time(self, elem: DataElement, path: tuple[str, ...], mode: int, item: Dataset) -> DataElement | None:
        if self.keep_dates:
            return _copy(elem)
        if self.offset is None or elem.tag == Time or not elem.value:
            return self.apply("X/Z/D", elem, path, mode, item)
        return _copy(elem)  # a whole-day shift leaves the time of day of a dated event as it was

    def apply(
        self, code: str, elem: DataElement, path: tuple[str, ...], mode: int, item: Dataset
    ) -> DataElement | None:
        if "/" in code:
            code = self.by_type(code, elem.tag, path)
        if code == "X" or code == "Z":
            # The table assumes X/Z attributes are optional; where this IOD requires one here, an
            # empty value (Type 2) or a dummy (Type 1) keeps the object as valid as it came.
            required = declared_type(self.sop_class, path, keyword_for_tag(elem.tag))
            if required == 1:
                code = "D"
            elif required == 2:
                code = "Z"
        if code == "K" or code == "U":
            if elem.VR == "SQ":
                return self.sequence(elem, path, mode)
            return _copy(elem) if code == "K" else self.replace_uid(elem)
        if code == "X":
            return None
        if code == "Z":
            return DataElement(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else None)
        if code == "D":
            return self.dummy(elem, path)
        if code == "C":
            return self.clean(elem, path, mode, item)
        if code == "DATE":
            return self.date(elem, path, mode, item)
        if code == "TIME":
            return self.time(elem, path, mode, item)
        if code == "DESC":
            if self.engine.profile.has(DeidOption.CLEAN_DESCRIPTORS):
                return self.clean(elem, path, mode, item)
            return self.apply("X/Z/D", elem, path, mode, item)
        raise ValueError(f"no handler for action {code!r}")

    def fast(self, code: str, raw: RawDataElement, path: tuple[str, ...], mode: int) -> object:
        """apply() for the common cases of a raw ASCII string element, without parsing it: the new
        raw element, None (removed), or _SLOW when apply() must do it."""
        vr, tag = raw.VR, raw.tag
        assert vr is not None
        if "/" in code:
            if code == "X/Z/U*":
                return _SLOW
            code = self.by_type(code, tag, path)
        if code in ("X", "Z"):
            required = declared_type(self.sop_class, path, keyword_for_tag(tag))
            code = "D" if required == 1 else ("Z" if required == 2 else code)
        if code == "X":
            return None
        if code == "Z":
            return raw_values.make(tag, vr, [])
        if code == "D":
            if vr in DUMMY_VALUES or vr in _DUMMY_TEXT_VRS:
                return raw_values.make(tag, vr, [DUMMY_VALUES.get(vr, DUMMY_TEXT)])
            return _SLOW
        if code not in ("U", "C", "DATE", "TIME"):
            return _SLOW
        items = raw_values.values(raw)
        if not items:
            return _SLOW
        if vr == "UI" and code in ("U", "C"):
            return raw_values.make(tag, vr, [self.uid(v) for v in items])
        if vr in ("DA", "DT") and code in ("C", "DATE") and self.offset is not None and not self.keep_dates:
            shift = shift_da if vr == "DA" else shift_dt
            shifted = [shift(v, self.offset) for v in items]
            if any(v is None for v in shifted):
                return _SLOW  # unparseable: apply() removes it by Type
            return raw_values.make(tag, vr, [v for v in shifted if v is not None])
        dated_time = vr == "TM" and tag not in (Time, TimezoneOffsetFromUTC)
        if dated_time and code in ("C", "TIME") and (self.keep_dates or self.offset is not None):
            return raw  # a whole-day shift leaves the time of day of a dated event as it was
        return _SLOW

    # --- datasets -----------------------------------------------------------------------------------

    def sequence(self, elem: DataElement, path: tuple[str, ...], mode: int) -> DataElement:
        inner = (*path, keyword_for_tag(elem.tag))
        items = [self.item(item, inner, mode) for item in (elem.value or [])]
        return DataElement(elem.tag, "SQ", Sequence(items))

    def item(self, src: Dataset, path: tuple[str, ...], mode: int) -> Dataset:
        if codes.is_code_item(src):
            known = codes.known_code(src)
            if known is None and mode != KEEP:
                return codes.dummy_code_item()  # a local code cannot be shown to be harmless
            out = self.dataset(src, path, mode)
            if known is not None:  # the code itself, as the standard's tables hold it
                codes.set_code(out, *known)
            return out
        return self.dataset(src, path, mode)

    def dataset(self, src: Dataset, path: tuple[str, ...], mode: int = KEEP) -> Dataset:
        """De-identified copy of one dataset level."""
        out = Dataset()
        implicit, little = src.original_encoding
        if implicit is not None and little is not None:
            # Unchanged raw elements are shared with the source; declaring the source's encoding lets
            # pydicom write their bytes as they are instead of parsing and re-encoding each one.
            out.set_original_encoding(implicit, little, src.original_character_set)
        compiled = self.compiled
        actions = compiled.modes[mode]
        sq_tags = compiled.sq_tags
        content_item = ValueType in src
        graphic_groups: set[int] = set()
        private_kept: list[int] = []
        out_dict = out._dict
        raw_ok = implicit is False and little is True  # raw values are Explicit VR Little Endian
        for tag, found in list(src._dict.items()):
            code = actions.get(tag)
            raw = found if type(found) is RawDataElement else None
            if code == "K" and raw is not None and raw.VR not in _NOT_SHARED and tag not in sq_tags:
                # Hot path: an unchanged raw element is immutable, so it is shared unparsed
                # (straight into the dict: a public, non-sequence element needs no bookkeeping).
                out_dict[tag] = raw
                continue
            group = tag >> 16
            if group & 1:
                if compiled.private_action == "C" and tag & 0xFFFF >= 0x1000:
                    elem = src[tag]
                    if is_safe_private(src, tag, elem.VR):
                        out[tag] = copy.deepcopy(elem)
                        private_kept.append(tag)
                continue
            if code is None:
                if graphics.is_overlay(group) or graphics.is_curve(group):
                    graphic_groups.add(group)
                continue  # else unknown public tag, group length, retired repeating group: removed
            if tag in _PATIENT:
                if not path:
                    continue  # set to the pseudonym below
                elem = src[tag]
                if tag == PatientID and elem.value:
                    # Another patient's id in a nested item (e.g. a source patient): its own pseudonym.
                    issuer_elem = src.get(IssuerOfPatientID)
                    issuer = str(issuer_elem.value or "") if issuer_elem is not None else ""
                    out[tag] = DataElement(tag, "LO", self.engine.pseudonym_for(str(elem.value), issuer))
                    continue
            if content_item and tag == TextValue:
                code = "C" if mode == CLEAN else "D"
            if raw_ok and raw is not None and raw.VR in raw_values.STRING_VRS:
                made = self.fast(code, raw, path, mode)
                if isinstance(made, RawDataElement):
                    out_dict[tag] = made
                if made is not _SLOW:
                    continue
            new = self.apply(code, src[tag], path, mode, src)
            if new is not None:
                out[tag] = new
        for kept in private_kept:  # keep the Private Creator of each block that kept an element
            creator = (kept & 0xFFFF0000) | ((kept & 0xFF00) >> 8)
            if creator in src:
                out[creator] = copy.deepcopy(src[creator])
        if graphic_groups:
            self.graphics(src, out, graphic_groups)
        conditions.restore_and_prune(src, out)
        if not path:  # the patient is the pseudonym, whatever the source held (even nothing)
            out_dict[PatientName] = raw_values.make(PatientName, "PN", [self.pseudonym])  # ASCII
            out_dict[PatientID] = raw_values.make(PatientID, "LO", [self.pseudonym])
        return out

    def graphics(self, src: Dataset, out: Dataset, groups: set[int]) -> None:
        """Overlays and curves: removed, unless Clean Graphics keeps them after cleaning."""
        compiled = self.compiled
        for group in sorted(groups):
            overlay = graphics.is_overlay(group)
            if (compiled.overlay_action if overlay else compiled.curve_action) != "C":
                continue
            texts = graphics.OVERLAY_TEXT_ELEMENTS if overlay else graphics.CURVE_TEXT_ELEMENTS
            if overlay:
                bitmap = graphics.overlay_bitmap(src, group)
                # No OverlayData: the plane lives in PixelData high bits, which are always cleared.
                if bitmap is None or not tesseract_available() or bitmap_has_text(bitmap):
                    continue
            for tag in list(src.keys()):
                if tag >> 16 == group and tag & 0xFFFF:
                    elem = src[tag]
                    if tag & 0xFFFF in texts:
                        out[tag] = DataElement(
                            tag, elem.VR, self._each(elem.value, lambda v: clean_text(v, self.phi))
                        )
                    else:
                        out[tag] = copy.deepcopy(elem)
