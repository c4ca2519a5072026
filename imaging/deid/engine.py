"""The de-identification engine: Table E.1-1 actions at every depth, keyed pseudonyms, pixels, markers.

Idempotence is by a keyed seal, not by fixed points: the output carries PatientIdentityRemoved=YES and
a DeidentificationMethod holding our method name, the profile signature and an HMAC seal over the
output's own SOPInstanceUID and PatientID. Input carrying a valid seal for this key and profile is
returned unchanged; a forged marker without the key does not verify, so it cannot bypass the engine.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from imaging.deid import graphics
from imaging.deid.actions import compile_profile
from imaging.deid.options import BASIC_PROFILE_CODE, OPTION_CODE, DeidOption, DeidProfile
from imaging.deid.pixels import DEVICE_MASKS, DeviceMask, PixelCleaner, PixelOutcome, burned_in_risk
from imaging.deid.pseudonyms import Pseudonymizer
from imaging.deid.table import EDITION
from imaging.deid.walk import Walk, phi_values, values_of

METHOD = f"imaging-archive PS3.15 E.1-1 {EDITION}"
IMPLEMENTATION_VERSION_NAME = "IMAGING_DEID_1"

PixelData = 0x7FE00010


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
        method = [str(v) for v in values_of(ds.get("DeidentificationMethod"))]
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
