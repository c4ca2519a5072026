"""The de-identification engine: Table E.1-1 actions at every depth, keyed pseudonyms, pixels, markers.

Idempotence is by a keyed seal, not by fixed points: the output carries PatientIdentityRemoved=YES and
a DeidentificationMethod holding our method name, the profile signature and an HMAC seal over the
output's own SOPInstanceUID and PatientID. Input carrying a valid seal for this key and profile is
returned unchanged; a forged marker without the key does not verify, so it cannot bypass the engine.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom._dicom_dict import DicomDictionary  # the public dictionary (re-exported by datadict)
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from imaging.deid import graphics
from imaging.deid.actions import CompiledProfile, compile_profile
from imaging.deid.dates import shift_da, shift_dt
from imaging.deid.iod import attribute_type
from imaging.deid.options import BASIC_PROFILE_CODE, OPTION_CODE, DeidOption, DeidProfile
from imaging.deid.pixels import (
    DEVICE_MASKS,
    DeviceMask,
    PixelCleaner,
    PixelOutcome,
    bitmap_has_text,
    burned_in_risk,
    tesseract_available,
)
from imaging.deid.private import is_safe_private
from imaging.deid.pseudonyms import Pseudonymizer
from imaging.deid.table import EDITION
from imaging.deid.text import clean_text, is_clean, phi_words

METHOD = f"imaging-archive PS3.15 E.1-1 {EDITION}"
IMPLEMENTATION_VERSION_NAME = "IMAGING_DEID_1"

# Tags (by keyword, as pydicom knows them)
PatientID = 0x00100020
PatientName = 0x00100010
TextValue = 0x0040A160
ValueType = 0x0040A040
PixelData = 0x7FE00010
TimezoneOffsetFromUTC = 0x00080201
SQ_TAGS = frozenset(tag for tag, entry in DicomDictionary.items() if entry[0] == "SQ")
TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
BINARY_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT"})
DUMMY: dict[str, str] = {
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


@dataclass
class DeidResult:
    """Outcome of one instance: a de-identified dataset, or a quarantine with reasons (no PHI)."""

    dataset: Dataset | None
    quarantined: bool = False
    reasons: list[str] = field(default_factory=list)
    uid_map: dict[str, str] = field(default_factory=dict)
    patient_pseudonym: str = ""
    date_offset_days: int | None = None
    notes: list[str] = field(default_factory=list)  # what pixel cleaning did (no PHI)


class _Run:
    """State of one deidentify() call: the walk over every element at every depth."""

    def __init__(self, engine: Deidentifier, src: Dataset, pseudonym: str, offset: int | None) -> None:
        self.engine = engine
        self.compiled: CompiledProfile = engine.compiled
        self.sop_class = str(src.get("SOPClassUID", ""))
        self.pseudonym = pseudonym
        self.offset = offset
        self.uid_map: dict[str, str] = {}
        self.src = src
        self._phi: frozenset[str] | None = None
        self.keep_dates = engine.profile.has(DeidOption.RETAIN_LONGITUDINAL_FULL_DATES)
        self.clean_descriptors = engine.profile.has(DeidOption.CLEAN_DESCRIPTORS)

    @property
    def phi(self) -> frozenset[str]:
        """Words of the source's PHI values, computed only when some text is cleaned."""
        if self._phi is None:
            self._phi = phi_words(_phi_values(self.src))
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

    def dummy(self, elem: DataElement, path: tuple[str, ...], content: bool) -> DataElement | None:
        vr = elem.VR
        if vr == "SQ":
            return self.sequence(elem, path, content)
        if vr == "UI":
            return self.replace_uid(elem)
        if vr in BINARY_VRS:
            length = len(elem.value or b"")
            return DataElement(elem.tag, vr, b"\x00" * (length + length % 2))
        if vr in NUMBER_VRS:
            return DataElement(elem.tag, vr, 0)
        return DataElement(elem.tag, vr, DUMMY.get(vr, DUMMY_TEXT))

    def replace_uid(self, elem: DataElement) -> DataElement | None:
        if elem.VR != "UI":
            return None
        value = self._each(elem.value, self.uid) if elem.value else elem.value
        return DataElement(elem.tag, "UI", value)

    def resolve(self, code: str, elem: DataElement, path: tuple[str, ...]) -> str:
        """X/Z/D-style codes -> the least destructive action that keeps the IOD conformant."""
        if code == "X/Z/U*":
            return "U"  # keep references (their UIDs mapped consistently) so they still resolve
        kind = attribute_type(self.sop_class, path, keyword_for_tag(elem.tag))
        choices = code.split("/")
        if kind == 3:
            return "X" if "X" in choices else ("Z" if "Z" in choices else "D")
        if kind == 2 and "Z" in choices:
            return "Z"
        return "D"

    def clean(self, elem: DataElement, path: tuple[str, ...]) -> DataElement | None:
        """The 'C' action, by VR: shift dates, clean text, hash AE titles, recurse into sequences."""
        vr, tag = elem.VR, elem.tag
        if vr == "SQ":
            return self.sequence(elem, path, content=True)
        if vr in ("DA", "DT"):
            return self.date(elem, path)
        if vr == "TM" or tag == TimezoneOffsetFromUTC:
            return _copy(elem)  # a whole-day shift leaves time of day and zone unchanged
        if vr == "UI":
            return self.replace_uid(elem)
        if vr == "AE":
            value = self._each(elem.value, lambda v: "AE" + self.engine.pseudonyms.short_code("ae", v, 14))
            return DataElement(tag, vr, value)
        if vr in TEXT_VRS:
            return DataElement(tag, vr, self._each(elem.value, lambda v: clean_text(v, self.phi)))
        if vr == "PN":
            return self.dummy(elem, path, False)
        if vr == "CS" and all(is_clean(str(v), self.phi) for v in _values(elem.value)):
            return _copy(elem)
        if vr in NUMBER_VRS or vr in ("DS", "IS", "AS", "US or SS"):
            return _copy(elem)
        # Binary and coded values cannot be cleaned: fall back to the Basic Profile action.
        basic = self.compiled.basic.get(tag, "X")
        return self.apply(basic if basic != "C" else "X", elem, path, False)

    def date(self, elem: DataElement, path: tuple[str, ...]) -> DataElement | None:
        if self.keep_dates:
            return _copy(elem)
        if self.offset is None or not elem.value:
            code = self.resolve("X/Z/D", elem, path)
            return self.apply(code, elem, path, False)
        shifted = self.shift(elem.VR, elem.value)
        if shifted is None:  # unparseable date: never pass it through
            return self.apply(self.resolve("X/Z/D", elem, path), elem, path, False)
        return DataElement(elem.tag, elem.VR, shifted)

    def apply(self, code: str, elem: DataElement, path: tuple[str, ...], content: bool) -> DataElement | None:
        if "/" in code:
            code = self.resolve(code, elem, path)
        if code == "K":
            if elem.VR == "SQ":
                return self.sequence(elem, path, content)
            return _copy(elem)
        if code == "X":
            return None
        if code == "Z":
            return DataElement(elem.tag, elem.VR, Sequence() if elem.VR == "SQ" else None)
        if code == "D":
            return self.dummy(elem, path, content)
        if code == "U":
            return self.sequence(elem, path, content) if elem.VR == "SQ" else self.replace_uid(elem)
        if code == "C":
            return self.clean(elem, path)
        if code == "DATE":
            return self.date(elem, path)
        if code == "DESC":
            if self.clean_descriptors:
                return self.clean(elem, path)
            return self.apply(self.resolve("X/Z/D", elem, path), elem, path, content)
        raise ValueError(f"no handler for action {code!r}")

    # --- datasets -----------------------------------------------------------------------------------

    def sequence(self, elem: DataElement, path: tuple[str, ...], content: bool) -> DataElement:
        inner = (*path, keyword_for_tag(elem.tag))
        items = [self.dataset(item, inner, content) for item in (elem.value or [])]
        return DataElement(elem.tag, "SQ", Sequence(items))

    def dataset(self, src: Dataset, path: tuple[str, ...], content: bool) -> Dataset:
        """De-identified copy of one dataset level (content: inside a 'C' sequence)."""
        out = Dataset()
        implicit, little = src.original_encoding
        if implicit is not None and little is not None:
            # Unchanged raw elements are shared with the source; declaring the source's encoding lets
            # pydicom write their bytes as they are instead of parsing and re-encoding each one.
            out.set_original_encoding(implicit, little, src.original_character_set)
        actions = self.compiled.actions
        content_item = ValueType in src
        graphic_groups: set[int] = set()
        private_kept: list[int] = []
        for tag in list(src.keys()):
            group = tag >> 16
            if group & 1:
                if self.compiled.private_action == "C" and tag & 0xFFFF >= 0x1000:
                    elem = src[tag]
                    if is_safe_private(src, tag, elem.VR):
                        out[tag] = copy.deepcopy(elem)
                        private_kept.append(tag)
                continue
            if graphics.is_overlay(group) or graphics.is_curve(group):
                graphic_groups.add(group)
                continue
            code = actions.get(tag)
            if code is None:
                continue  # unknown public tag, group length, retired repeating group: removed
            if code == "K" and tag not in SQ_TAGS:
                raw = src.get_item(tag)
                if isinstance(raw, RawDataElement) and raw.VR not in ("SQ", "UN", None):
                    # Hot path: an unchanged raw element is immutable, so it is shared unparsed
                    # (straight into the dict: a public, non-sequence element needs no bookkeeping).
                    out._dict[tag] = raw
                    continue
            elem = src[tag]
            if tag in (PatientID, PatientName) and not path:
                continue  # set to the pseudonym below
            if tag == PatientID and elem.value:
                # Another patient's id in a nested item (e.g. a source patient): its own pseudonym.
                issuer = str(src.get("IssuerOfPatientID", "") or "")
                out[tag] = DataElement(tag, "LO", self.engine.pseudonym_for(str(elem.value), issuer))
                continue
            if content_item and tag == TextValue:
                code = "C" if content else "D"
            new = self.apply(code, elem, path, content)
            if new is not None:
                out[tag] = new
        for kept in private_kept:  # keep the Private Creator of each block that kept an element
            creator = (kept & 0xFFFF0000) | ((kept & 0xFF00) >> 8)
            if creator in src:
                out[creator] = copy.deepcopy(src[creator])
        if graphic_groups:
            self.graphics(src, out, graphic_groups)
        if not path:  # the patient is the pseudonym, whatever the source held (even nothing)
            out[PatientName] = DataElement(PatientName, "PN", self.pseudonym)
            out[PatientID] = DataElement(PatientID, "LO", self.pseudonym)
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


def _copy(elem: DataElement) -> DataElement:
    """A copy that shares immutable values and copies lists, so the source is never mutated."""
    if isinstance(elem.value, MultiValue | list):
        return copy.deepcopy(elem)
    return copy.copy(elem)


def _values(value: object) -> list[object]:
    if isinstance(value, MultiValue | list | tuple):
        return list(value)
    return [] if value is None else [value]


def _phi_values(ds: Dataset) -> list[str]:
    values: list[str] = []
    for keyword in PHI_KEYWORDS:
        elem = ds.get(keyword)
        if elem is not None:
            values.extend(str(v) for v in _values(elem))
    return values


class Deidentifier:
    """De-identify datasets under one project key and profile (thread-safe: no shared mutable state
    beyond caches of pure functions)."""

    def __init__(
        self,
        key: bytes,
        profile: DeidProfile | None = None,
        *,
        device_masks: tuple[DeviceMask, ...] = DEVICE_MASKS,
    ) -> None:
        self.profile = profile or DeidProfile()
        self.pseudonyms = Pseudonymizer(key)
        self.compiled = compile_profile(self.profile)
        self.pixel_cleaner = PixelCleaner(device_masks)

    # --- public helpers -----------------------------------------------------------------------------

    def pseudonym_for(self, patient_id: str, issuer: str = "") -> str:
        return self.pseudonyms.pseudonym_for(patient_id, issuer)

    def uid_for(self, uid: str) -> str:
        if self.profile.has(DeidOption.RETAIN_UIDS):
            return uid
        return self.pseudonyms.uid_for(uid)

    def date_offset_days(self, patient_id: str, issuer: str = "") -> int:
        return self.pseudonyms.date_offset_days(patient_id, issuer)

    # --- the engine ---------------------------------------------------------------------------------

    def seal(self, sop_instance_uid: str, patient_id: str) -> str:
        return self.pseudonyms.short_code(
            "seal", f"{self.profile.signature}|{sop_instance_uid}|{patient_id}", 20
        )

    def is_sealed(self, ds: Dataset) -> bool:
        """Whether `ds` is our own output for this key and profile."""
        if str(ds.get("PatientIdentityRemoved", "")).upper() != "YES":
            return False
        method = [str(v) for v in _values(ds.get("DeidentificationMethod"))]
        expected = self.seal(str(ds.get("SOPInstanceUID", "")), str(ds.get("PatientID", "")))
        return METHOD in method and f"seal {expected}" in method

    def deidentify(self, ds: Dataset) -> DeidResult:
        """De-identify one instance (with file_meta); `ds` is not modified."""
        try:
            return self._deidentify(ds)
        except Exception as exc:  # fail closed: never return a half-cleaned dataset
            return DeidResult(None, True, [f"de-identification failed ({type(exc).__name__})"])

    def _deidentify(self, ds: Dataset) -> DeidResult:
        if self.is_sealed(ds):
            return DeidResult(copy.deepcopy(ds), patient_pseudonym=str(ds.get("PatientID", "")))
        patient_id, issuer = _patient_identity(ds)
        pseudonym = self.pseudonym_for(patient_id, issuer)
        modified_dates = self.profile.has(DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES)
        offset = self.date_offset_days(patient_id, issuer) if modified_dates else None

        pixels = PixelOutcome()
        risk = burned_in_risk(ds)
        if risk:
            if not self.profile.has(DeidOption.CLEAN_PIXEL_DATA):
                reasons = [f"burned-in text risk ({'; '.join(risk)}) and Clean Pixel Data is not selected"]
                return DeidResult(None, True, reasons, patient_pseudonym=pseudonym)
            pixels = self.pixel_cleaner.clean(ds, _phi_values(ds))
            if not pixels.passed:
                return DeidResult(None, True, pixels.reasons, patient_pseudonym=pseudonym)

        run = _Run(self, ds, pseudonym, offset)
        out = run.dataset(ds, (), False)
        transfer_syntax = _transfer_syntax(ds)
        if pixels.pixel_data is not None:
            out.PixelData = pixels.pixel_data
            attributes = dict(pixels.attributes)
            transfer_syntax = UID(attributes.pop("TransferSyntaxUID", transfer_syntax))
            for keyword, value in attributes.items():
                setattr(out, keyword, value)
            out["PixelData"].VR = "OB" if int(out.get("BitsAllocated", 16)) <= 8 else "OW"
        elif PixelData in out and not transfer_syntax.is_compressed:
            raw = out[PixelData].value
            cleared = graphics.clear_unused_high_bits(out, raw)
            if cleared is not raw:
                out.PixelData = cleared
        if pixels.ran:
            out.BurnedInAnnotation = "NO"
        self._mark(out, pixels.ran and pixels.passed)
        out.file_meta = _file_meta(out, transfer_syntax)
        return DeidResult(out, False, [], run.uid_map, pseudonym, offset, notes=pixels.reasons)

    def _mark(self, out: Dataset, pixels_cleaned: bool) -> None:
        profile = self.profile
        out.PatientIdentityRemoved = "YES"
        applied: list[DeidOption] = [
            o for o in OPTION_CODE if o in profile.options and o is not DeidOption.CLEAN_PIXEL_DATA
        ]
        if pixels_cleaned:
            applied.insert(0, DeidOption.CLEAN_PIXEL_DATA)
        items = []
        for value, meaning in [BASIC_PROFILE_CODE, *(OPTION_CODE[o] for o in applied)]:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        out.DeidentificationMethodCodeSequence = Sequence(items)
        if profile.has(DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES):
            out.LongitudinalTemporalInformationModified = "MODIFIED"
        elif profile.has(DeidOption.RETAIN_LONGITUDINAL_FULL_DATES):
            out.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            out.LongitudinalTemporalInformationModified = "REMOVED"
        seal = self.seal(str(out.get("SOPInstanceUID", "")), str(out.get("PatientID", "")))
        out.DeidentificationMethod = [METHOD, f"profile {profile.signature}", f"seal {seal}"]


def _patient_identity(ds: Dataset) -> tuple[str, str]:
    """(identifier, issuer) the pseudonym and date offset derive from.

    PatientID with its issuer; without a PatientID, name + birth date (still one value per person);
    without either, the study (each study becomes its own pseudonymous patient).
    """
    patient_id = str(ds.get("PatientID", "") or "").strip()
    issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
    if patient_id:
        return patient_id, issuer
    name = str(ds.get("PatientName", "") or "").strip()
    if name:
        return f"name:{name}|{ds.get('PatientBirthDate', '')}", issuer
    return f"study:{ds.get('StudyInstanceUID', '')}", issuer


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return UID(meta.TransferSyntaxUID)
    return ExplicitVRLittleEndian


def _file_meta(out: Dataset, transfer_syntax: UID) -> FileMetaDataset:
    """File meta rebuilt from the de-identified dataset: nothing of the source's meta survives
    (source AE titles, private meta), and MediaStorageSOPInstanceUID follows SOPInstanceUID."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = out.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = out.get("SOPInstanceUID", "")
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta
