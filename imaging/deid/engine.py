"""The de-identification engine: Table E.1-1 actions at every depth, keyed pseudonyms, pixels, markers.

Idempotence is by a keyed seal, not by fixed points: the output carries PatientIdentityRemoved=YES and
a DeidentificationMethod holding our method name, the profile signature and an HMAC seal over the
output's own SOPInstanceUID and PatientID. Input carrying a valid seal for this key and profile is
returned unchanged; a forged marker without the key does not verify, so it cannot bypass the engine.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from imaging.deid import graphics, part10, raw
from imaging.deid.actions import compile_profile
from imaging.deid.codes import set_code
from imaging.deid.options import BASIC_PROFILE_CODE, OPTION_CODE, DeidOption, DeidProfile
from imaging.deid.pixels import DEVICE_MASKS, DeviceMask, PixelCleaner, PixelOutcome, burned_in_risk
from imaging.deid.pseudonyms import Pseudonymizer
from imaging.deid.raw import text
from imaging.deid.table import EDITION
from imaging.deid.walk import Walk, phi_values, values_of

METHOD = f"imaging-archive PS3.15 E.1-1 {EDITION}"
IMPLEMENTATION_VERSION_NAME = "IMAGING_DEID_1"

PixelData = BaseTag(0x7FE00010)
PatientID = BaseTag(0x00100020)
PatientName = BaseTag(0x00100010)
IssuerOfPatientID = BaseTag(0x00100021)
PatientBirthDate = BaseTag(0x00100030)
StudyInstanceUID = BaseTag(0x0020000D)
SOPClassUID = BaseTag(0x00080016)
SOPInstanceUID = BaseTag(0x00080018)
PatientIdentityRemoved = BaseTag(0x00120062)
DeidentificationMethod = BaseTag(0x00120063)
DeidentificationMethodCodeSequence = BaseTag(0x00120064)
LongitudinalTemporalInformationModified = BaseTag(0x00280303)
FileMetaInformationVersion = BaseTag(0x00020001)
MediaStorageSOPClassUID = BaseTag(0x00020002)
MediaStorageSOPInstanceUID = BaseTag(0x00020003)
TransferSyntaxUID = BaseTag(0x00020010)
ImplementationClassUID = BaseTag(0x00020012)
ImplementationVersionName = BaseTag(0x00020013)


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
        # The method codes, encoded once (with and without Clean Pixel Data): each output shares
        # the immutable bytes instead of building its own items.
        self._method_codes = {
            cleaned: part10.raw_sequence(self._method_sequence(cleaned)) for cleaned in (False, True)
        }

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
        if text(ds, PatientIdentityRemoved).upper() != "YES":
            return False
        method = [str(v) for v in values_of(ds.get("DeidentificationMethod"))]
        expected = self.seal(text(ds, SOPInstanceUID), text(ds, PatientID))
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
            pixels = self.pixel_cleaner.clean(ds, phi_values(ds))
            if not pixels.passed:
                return DeidResult(None, True, pixels.reasons, patient_pseudonym=pseudonym)

        run = Walk(self, ds, pseudonym, offset)
        out = run.dataset(ds, ())
        transfer_syntax = _transfer_syntax(ds)
        if pixels.pixel_data is not None:
            out.PixelData = pixels.pixel_data
            attributes = dict(pixels.attributes)
            transfer_syntax = UID(attributes.pop("TransferSyntaxUID", transfer_syntax))
            for keyword, value in attributes.items():
                setattr(out, keyword, value)
            out["PixelData"].VR = "OB" if int(out.get("BitsAllocated", 16)) <= 8 else "OW"
        elif PixelData in out and not transfer_syntax.is_compressed:
            data = out.get_item(PixelData).value
            if isinstance(data, bytes):
                cleared = graphics.clear_unused_high_bits(out, data)
                if cleared is not data:
                    out.PixelData = cleared
        if pixels.ran:
            out.BurnedInAnnotation = "NO"
        self._mark(out, pixels.ran and pixels.passed)
        out.file_meta = _file_meta(out, transfer_syntax)
        return DeidResult(out, False, [], run.uid_map, pseudonym, offset, notes=pixels.reasons)

    def _method_sequence(self, pixels_cleaned: bool) -> DataElement:
        """DeidentificationMethodCodeSequence: exactly the profile and the options applied."""
        applied: list[DeidOption] = [
            o for o in OPTION_CODE if o in self.profile.options and o is not DeidOption.CLEAN_PIXEL_DATA
        ]
        if pixels_cleaned:
            applied.insert(0, DeidOption.CLEAN_PIXEL_DATA)
        items = []
        for value, meaning in [BASIC_PROFILE_CODE, *(OPTION_CODE[o] for o in applied)]:
            item = Dataset()
            set_code(item, value, "DCM", meaning)
            items.append(item)
        return DataElement(DeidentificationMethodCodeSequence, "SQ", Sequence(items))

    def _mark(self, out: Dataset, pixels_cleaned: bool) -> None:
        """PatientIdentityRemoved, the method (with the seal) and its codes, the temporal marker."""
        profile = self.profile
        if profile.has(DeidOption.RETAIN_LONGITUDINAL_MODIFIED_DATES):
            temporal = "MODIFIED"
        elif profile.has(DeidOption.RETAIN_LONGITUDINAL_FULL_DATES):
            temporal = "UNMODIFIED"
        else:
            temporal = "REMOVED"
        seal = self.seal(text(out, SOPInstanceUID), text(out, PatientID))
        method = [METHOD, f"profile {profile.signature}", f"seal {seal}"]
        marks = out._dict
        marks[PatientIdentityRemoved] = raw.make(PatientIdentityRemoved, "CS", ["YES"])
        marks[DeidentificationMethod] = raw.make(DeidentificationMethod, "LO", method)
        if out.original_encoding in ((False, True), (None, None)):
            # Explicit VR Little Endian bytes: right for this output whichever writer writes it
            marks[DeidentificationMethodCodeSequence] = self._method_codes[pixels_cleaned]
        else:  # pydicom would write raw bytes into another encoding as they are: real items
            out[DeidentificationMethodCodeSequence] = self._method_sequence(pixels_cleaned)
        marks[LongitudinalTemporalInformationModified] = raw.make(
            LongitudinalTemporalInformationModified, "CS", [temporal]
        )


def _patient_identity(ds: Dataset) -> tuple[str, str]:
    """(identifier, issuer) the pseudonym and date offset derive from.

    PatientID with its issuer; without a PatientID, name + birth date (still one value per person);
    without either, the study (each study becomes its own pseudonymous patient).
    """
    patient_id = text(ds, PatientID).strip()
    issuer = text(ds, IssuerOfPatientID).strip()
    if patient_id:
        return patient_id, issuer
    name = text(ds, PatientName).strip()
    if name:
        return f"name:{name}|{text(ds, PatientBirthDate)}", issuer
    return f"study:{text(ds, StudyInstanceUID)}", issuer


def _transfer_syntax(ds: Dataset) -> UID:
    meta = ds.__dict__.get("file_meta")
    uid = raw.text(meta, TransferSyntaxUID) if meta is not None else ""
    return UID(uid) if uid else ExplicitVRLittleEndian


def _file_meta(out: Dataset, transfer_syntax: UID) -> FileMetaDataset:
    """File meta rebuilt from the de-identified dataset: nothing of the source's meta survives
    (source AE titles, private meta), and MediaStorageSOPInstanceUID follows SOPInstanceUID."""
    meta = FileMetaDataset()
    elements = meta._dict  # group 2 by construction: FileMetaDataset's checks are not needed
    elements[FileMetaInformationVersion] = DataElement(FileMetaInformationVersion, "OB", b"\x00\x01")
    for tag, value in (
        (MediaStorageSOPClassUID, text(out, SOPClassUID)),
        (MediaStorageSOPInstanceUID, text(out, SOPInstanceUID)),
        (TransferSyntaxUID, str(transfer_syntax)),
        (ImplementationClassUID, PYDICOM_IMPLEMENTATION_UID),
    ):
        elements[tag] = raw.make(tag, "UI", [value])
    elements[ImplementationVersionName] = raw.make(
        ImplementationVersionName, "SH", [IMPLEMENTATION_VERSION_NAME]
    )
    return meta
