"""Test corpus with planted synthetic PHI, and its answer key.

Origin: every object is built here in code (the CT base from imaging.synthetic); nothing is real
patient data and nothing is downloaded. Each PHI value is a unique, greppable token ('ZQX...' for text,
distinct dates in a 300-day window of 2024, UIDs whose suffix embeds a date and an MRN-like number), so
a byte scan of the written output finds any survivor. Dates: every de-identified date is shifted by at
least 365 days, so no shifted date can land back in the planted window.

The answer key (`Corpus.tokens`) maps each token to where it was planted; `Corpus.retained_by` says which
option is allowed to keep it (Retain ... options keep some values on purpose).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    ComprehensiveSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
)

from imaging.deid import DeidOption
from imaging.synthetic import SyntheticPatient, SyntheticStudy, ct_slice

ROOT = "1.2.826.0.1.3680043.10.543"  # test-only UID root; suffixes embed planted dates and MRNs
PRIVATE_CREATOR_SAFE = "SIEMENS MR HEADER"


@dataclass
class Corpus:
    tokens: dict[str, str] = field(default_factory=dict)  # token -> where it was planted
    retained_by: dict[str, DeidOption] = field(default_factory=dict)  # token -> option that keeps it
    datasets: dict[str, Dataset] = field(default_factory=dict)

    def plant(self, token: str, where: str, retained_by: DeidOption | None = None) -> str:
        assert token not in self.tokens, token
        self.tokens[token] = where
        if retained_by is not None:
            self.retained_by[token] = retained_by
        return token

    def date(self, day: int, where: str, retained_by: DeidOption | None = None) -> str:
        """A unique planted date: 2024-01-01 + day (day < 300)."""
        import datetime as dt

        value = (dt.date(2024, 1, 1) + dt.timedelta(days=day)).strftime("%Y%m%d")
        return self.plant(value, where, retained_by or DeidOption.RETAIN_LONGITUDINAL_FULL_DATES)

    def uid(self, kind: int, mrn: str, day: int, where: str) -> str:
        """A UID embedding an MRN-like number and a date (both planted tokens)."""
        self.plant(mrn, where + " (MRN in UID)", DeidOption.RETAIN_UIDS)
        date = self.date(day, where + " (date in UID)", DeidOption.RETAIN_UIDS)
        return f"{ROOT}.{kind}.{date}.{mrn}"


def _meta(ds: Dataset, sop_class: str) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = f"{ROOT}.0.1"
    ds.file_meta.SourceApplicationEntityTitle = "ZQXSRCAE"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _phi_level(c: Corpus, item: Dataset, level: int) -> None:
    """PHI at every VR that can carry identity, in one sequence item at nesting `level`."""
    p = f"nested level {level}"
    item.OperatorsName = c.plant(f"ZQXL{level}PN", f"{p} PN OperatorsName")
    item.SecondaryReviewerName = c.plant(f"ZQXL{level}UNLISTEDPN", f"{p} PN unlisted")
    item.InstitutionName = c.plant(f"ZQXL{level}LO", f"{p} LO", DeidOption.RETAIN_INSTITUTION_IDENTITY)
    item.StationName = c.plant(f"ZQXL{level}SH", f"{p} SH", DeidOption.RETAIN_DEVICE_IDENTITY)
    item.AdditionalPatientHistory = c.plant(f"ZQXL{level}LT", f"{p} LT")
    item.InstitutionAddress = c.plant(f"ZQXL{level}ST", f"{p} ST", DeidOption.RETAIN_INSTITUTION_IDENTITY)
    item.PrivateDataElementDescription = c.plant(f"ZQXL{level}UT", f"{p} UT unlisted")
    item.AcquisitionDate = c.date(10 + level, f"{p} DA")
    item.SecondaryReviewDate = c.date(20 + level, f"{p} DA unlisted")
    item.AcquisitionDateTime = c.date(30 + level, f"{p} DT") + "101500.5+0100"
    item.StudyUpdateDateTime = c.date(40 + level, f"{p} DT unlisted") + "0915"
    item.PatientAge = c.plant(f"0{80 + level}Y", f"{p} AS", DeidOption.RETAIN_PATIENT_CHARACTERISTICS)
    item.add_new(0x00290010, "LO", "ZQX VENDOR")
    item.add_new(0x00291001, "LO", c.plant(f"ZQXL{level}PRIVATE", f"{p} private LO"))


def nested_references(c: Corpus, referenced_sop: str) -> Sequence:
    """ReferencedImageSequence > SourceImageSequence > PurposeOfReferenceCodeSequence, PHI at each level."""
    level3 = _code("121311", "DCM", "Localizer")
    _phi_level(c, level3, 3)
    level2 = Dataset()
    level2.ReferencedSOPClassUID = CTImageStorage
    level2.ReferencedSOPInstanceUID = c.uid(22, "55443311", 200, "level 2 ReferencedSOPInstanceUID")
    level2.PurposeOfReferenceCodeSequence = Sequence([level3])
    _phi_level(c, level2, 2)
    level1 = Dataset()
    level1.ReferencedSOPClassUID = CTImageStorage
    level1.ReferencedSOPInstanceUID = referenced_sop
    level1.SourceImageSequence = Sequence([level2])
    _phi_level(c, level1, 1)
    return Sequence([level1])


def patient_module(c: Corpus, ds: Dataset, tag: str = "", birth: str = "19610704") -> None:
    ds.PatientName = (
        c.plant(f"ZQXFAMILY{tag}", "PatientName family")
        + "^"
        + c.plant(f"ZQXGIVEN{tag}", "PatientName given")
    )
    ds.PatientID = c.plant(f"ZQXMRN{tag}001", "PatientID")
    ds.IssuerOfPatientID = c.plant(f"ZQXISSUER{tag}", "IssuerOfPatientID")
    ds.PatientBirthDate = c.plant(birth, "PatientBirthDate")
    ds.PatientSex = "F"
    ds.PatientAddress = c.plant(f"ZQXADDRESS{tag}", "PatientAddress")
    ds.PatientTelephoneNumbers = c.plant(f"ZQXPHONE{tag}", "PatientTelephoneNumbers")
    ds.OtherPatientNames = c.plant(f"ZQXOTHERNAME{tag}", "OtherPatientNames")
    ds.PatientMotherBirthName = c.plant(f"ZQXMOTHER{tag}", "PatientMotherBirthName")
    other = Dataset()
    other.PatientID = c.plant(f"ZQXOTHERID{tag}", "OtherPatientIDsSequence PatientID")
    other.IssuerOfPatientID = c.plant(f"ZQXOTHERISSUER{tag}", "OtherPatientIDsSequence Issuer")
    other.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = Sequence([other])
    alias = Dataset()
    alias.PatientID = c.plant(f"ZQXALIAS{tag}", "ReferencedPatientAliasSequence PatientID")
    ds.ReferencedPatientAliasSequence = Sequence([alias])
    ds.PatientComments = c.plant(f"ZQXPATCOMMENT{tag}", "PatientComments")
    ds.PatientWeight = 71.5


def ct_with_phi(c: Corpus, size: int = 64) -> Dataset:
    """A CT image with PHI at every leak spot of the reference page that a CT can hold."""
    study = SyntheticStudy(patient=SyntheticPatient())
    study.StudyInstanceUID = c.uid(1, "99887766", 100, "StudyInstanceUID")
    series_uid = c.uid(2, "88776655", 101, "SeriesInstanceUID")
    ds = ct_slice(study, series_uid, 1, 0, rows=size, columns=size)
    ds.SOPInstanceUID = c.uid(3, "77665544", 102, "SOPInstanceUID")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.SourceApplicationEntityTitle = "ZQXSRCAE"
    c.plant("ZQXSRCAE", "file meta SourceApplicationEntityTitle")
    ds.FrameOfReferenceUID = c.uid(4, "66554433", 103, "FrameOfReferenceUID")
    patient_module(c, ds)
    ds.StudyDate = c.date(1, "StudyDate")
    ds.SeriesDate = c.date(2, "SeriesDate")
    ds.AcquisitionDate = c.date(3, "AcquisitionDate")
    ds.ContentDate = c.date(4, "ContentDate")
    ds.AcquisitionDateTime = c.date(5, "AcquisitionDateTime (DT with timezone)") + "101500.000000+0530"
    ds.InstanceCreationDate = c.date(6, "InstanceCreationDate")
    ds.DateOfLastCalibration = [c.date(7, "DateOfLastCalibration value 1"), c.date(8, "value 2")]
    ds.AccessionNumber = c.plant("ZQXACC01", "AccessionNumber")
    ds.StudyID = c.plant("ZQXSTUDYID", "StudyID")
    ds.ReferringPhysicianName = c.plant("ZQXREFDOC", "ReferringPhysicianName")
    ds.PerformingPhysicianName = c.plant("ZQXPERFDOC", "PerformingPhysicianName")
    ds.OperatorsName = c.plant("ZQXOPERATOR", "OperatorsName")
    ds.InstitutionName = c.plant("ZQXHOSPITAL", "InstitutionName", DeidOption.RETAIN_INSTITUTION_IDENTITY)
    ds.InstitutionAddress = c.plant(
        "ZQXINSTADDR", "InstitutionAddress", DeidOption.RETAIN_INSTITUTION_IDENTITY
    )
    ds.InstitutionalDepartmentName = c.plant("ZQXDEPT", "Department", DeidOption.RETAIN_INSTITUTION_IDENTITY)
    ds.StationName = c.plant("ZQXSTATION", "StationName", DeidOption.RETAIN_DEVICE_IDENTITY)
    ds.DeviceSerialNumber = c.plant("ZQXSERIAL", "DeviceSerialNumber", DeidOption.RETAIN_DEVICE_IDENTITY)
    ds.StudyDescription = "CT CHEST " + c.plant("ZQXSTUDYDESC", "StudyDescription")
    ds.SeriesDescription = "AXIAL " + c.plant("ZQXSERIESDESC", "SeriesDescription")
    ds.ImageComments = c.plant("ZQXIMGCOMMENT", "ImageComments")
    ds.AdditionalPatientHistory = "FOLLOW UP " + c.plant("ZQXHISTORY", "AdditionalPatientHistory")
    ds.ProtocolName = c.plant("ZQXPROTOCOL", "ProtocolName")
    request = Dataset()
    request.RequestedProcedureDescription = c.plant("ZQXREQDESC", "RequestAttributesSequence description")
    request.RequestedProcedureID = c.plant("ZQXREQID", "RequestAttributesSequence id")
    ds.RequestAttributesSequence = Sequence([request])
    ds.ReferencedImageSequence = nested_references(c, c.uid(21, "55443322", 104, "ReferencedSOPInstanceUID"))
    context = Dataset()
    context.ValueType = "TEXT"
    context.ConceptNameCodeSequence = Sequence([_code("121106", "DCM", "Comment")])
    context.TextValue = c.plant("ZQXACQCONTEXT", "AcquisitionContextSequence TEXT")
    ds.AcquisitionContextSequence = Sequence([context])
    # Private blocks: a safe-dictionary creator (one safe numeric element, one PHI text element), and
    # a different creator using the same element offset, which must not be taken for the safe one.
    ds.add_new(0x00190010, "LO", PRIVATE_CREATOR_SAFE)
    ds.add_new(0x0019100C, "IS", "1000")  # B_value: safe
    ds.add_new(0x00191010, "LO", c.plant("ZQXPRIVNAME", "private LO in a safe creator's block"))
    ds.add_new(0x00190011, "LO", "ZQX OTHER VENDOR")
    ds.add_new(0x0019110C, "IS", c.plant("99887701", "private IS under another creator, safe offset"))
    ds.add_new(0x00290010, "LO", "ACME PACS")
    ds.add_new(0x00291001, "PN", c.plant("ZQXPRIVPN", "private PN"))
    ds.add_new(0x00291002, "DA", c.date(9, "private DA"))
    ds.add_new(0x01010010, "LO", c.plant("ZQXUNKNOWNPUBLIC", "unknown public tag"))
    # Overlay (60xx) with text elements and a bitmap, curve (50xx) with text elements.
    ds.add_new(0x60000010, "US", size)
    ds.add_new(0x60000011, "US", size)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60000022, "LO", c.plant("ZQXOVLDESC", "OverlayDescription"))
    ds.add_new(0x60001500, "LO", c.plant("ZQXOVLLABEL", "OverlayLabel"))
    ds.add_new(0x60004000, "LT", c.plant("ZQXOVLCOMMENT", "OverlayComments"))
    bitmap = np.zeros((size, size), dtype=np.uint8)
    bitmap[8:12, 8:40] = 1  # a bar, not text
    ds.add_new(0x60003000, "OW", np.packbits(bitmap.ravel(), bitorder="little").tobytes())
    ds.add_new(0x50000005, "US", 2)
    ds.add_new(0x50000010, "US", 2)
    ds.add_new(0x50000020, "CS", "TAC")
    ds.add_new(0x50000022, "LO", c.plant("ZQXCURVEDESC", "CurveDescription"))
    ds.add_new(0x50002500, "LO", c.plant("ZQXCURVELABEL", "CurveLabel"))
    ds.add_new(0x50000103, "US", 0)
    ds.add_new(0x50003000, "OW", np.array([0, 1, 2, 3], dtype="<u2").tobytes())
    return ds


def enhanced_ct_with_phi(c: Corpus, study_uid: str) -> Dataset:
    """Enhanced CT, two frames: dates inside the per-frame and shared functional groups."""
    ds = Dataset()
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = c.uid(31, "44332211", 110, "Enhanced CT SOPInstanceUID")
    _meta(ds, EnhancedCTImageStorage)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = c.uid(32, "44332212", 111, "Enhanced CT SeriesInstanceUID")
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.PatientName = "ZQXFAMILY^ZQXGIVEN"
    ds.PatientID = "ZQXMRN001"
    ds.IssuerOfPatientID = "ZQXISSUER"
    ds.ContentDate = c.date(50, "Enhanced CT ContentDate")
    ds.ContentTime = "080000"
    ds.AcquisitionDateTime = c.date(51, "Enhanced CT AcquisitionDateTime") + "075959"
    frames = []
    for frame in range(2):
        content = Dataset()
        content.FrameAcquisitionDateTime = c.date(
            52 + frame, f"per-frame FrameAcquisitionDateTime {frame}"
        ) + ("080000.25-0300")
        content.FrameReferenceDateTime = (
            c.date(60 + frame, f"per-frame FrameReferenceDateTime {frame}") + "08"
        )
        content.FrameAcquisitionDuration = 100.0
        group = Dataset()
        group.FrameContentSequence = Sequence([content])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    shared = Dataset()
    reference = Dataset()
    reference.ReferencedSOPClassUID = CTImageStorage
    reference.ReferencedSOPInstanceUID = c.uid(33, "44332213", 112, "shared group reference")
    shared.ReferencedImageSequence = Sequence([reference])
    shared.FrameAnatomySequence = Sequence([Dataset()])
    shared.FrameAnatomySequence[0].FrameLaterality = "U"
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.NumberOfFrames = 2
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(2 * 16 * 16, dtype="<u2").tobytes()
    return ds


def pet_with_phi(c: Corpus, study_uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = PositronEmissionTomographyImageStorage
    ds.SOPInstanceUID = c.uid(41, "33221100", 120, "PET SOPInstanceUID")
    _meta(ds, ds.SOPClassUID)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = c.uid(42, "33221101", 121, "PET SeriesInstanceUID")
    ds.Modality = "PT"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PatientName = "ZQXFAMILY^ZQXGIVEN"
    ds.PatientID = "ZQXMRN001"
    ds.IssuerOfPatientID = "ZQXISSUER"
    ds.SeriesDate = c.date(70, "PET SeriesDate")
    ds.SeriesTime = "093000"
    radiopharmaceutical = Dataset()
    radiopharmaceutical.Radiopharmaceutical = "FDG"
    radiopharmaceutical.RadiopharmaceuticalStartDateTime = c.date(71, "PET start DT (timezone)") + (
        "093000.000000-0500"
    )
    radiopharmaceutical.RadiopharmaceuticalStartTime = "093000"
    radiopharmaceutical.RadionuclideTotalDose = 370000000.0
    ds.RadiopharmaceuticalInformationSequence = Sequence([radiopharmaceutical])
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.arange(64, dtype="<u2").tobytes()
    return ds


def _content(value_type: str, code: tuple[str, str, str], relationship: str = "CONTAINS") -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = Sequence([_code(*code)])
    return item


def sr_with_phi(c: Corpus, ct: Dataset) -> Dataset:
    """Comprehensive SR: TEXT, PNAME, DATE, DATETIME, UIDREF, IMAGE items (nested), evidence of `ct`."""
    ds = Dataset()
    ds.SOPClassUID = ComprehensiveSRStorage
    ds.SOPInstanceUID = c.uid(51, "22110099", 130, "SR SOPInstanceUID")
    _meta(ds, ds.SOPClassUID)
    ds.StudyInstanceUID = ct.StudyInstanceUID
    ds.SeriesInstanceUID = c.uid(52, "22110098", 131, "SR SeriesInstanceUID")
    ds.Modality = "SR"
    ds.PatientName = "ZQXFAMILY^ZQXGIVEN"
    ds.PatientID = "ZQXMRN001"
    ds.IssuerOfPatientID = "ZQXISSUER"
    ds.PatientBirthDate = ""
    ds.PatientSex = "F"
    ds.StudyDate = ct.StudyDate
    ds.StudyTime = "101500"
    ds.ReferringPhysicianName = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.Manufacturer = "SYNTHETIC"
    ds.ContentDate = c.date(80, "SR ContentDate")
    ds.ContentTime = "120000"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    observer = Dataset()
    observer.VerifyingObserverName = c.plant("ZQXVERIFIER", "VerifyingObserverName")
    observer.VerifyingOrganization = c.plant("ZQXVERIFYORG", "VerifyingOrganization")
    observer.VerificationDateTime = c.date(81, "VerificationDateTime") + "120000"
    observer.VerifyingObserverIdentificationCodeSequence = Sequence()
    ds.VerifyingObserverSequence = Sequence([observer])
    sop = Dataset()
    sop.ReferencedSOPClassUID = ct.SOPClassUID
    sop.ReferencedSOPInstanceUID = ct.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = ct.SeriesInstanceUID
    series.ReferencedSOPSequence = Sequence([sop])
    evidence = Dataset()
    evidence.StudyInstanceUID = ct.StudyInstanceUID
    evidence.ReferencedSeriesSequence = Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("18748-4", "LN", "Diagnostic Imaging Report")])
    text = _content("TEXT", ("121071", "DCM", "Finding"))
    text.TextValue = "NODULE IN LEFT LUNG " + c.plant("ZQXSRTEXT", "SR TEXT")
    person = _content("PNAME", ("121008", "DCM", "Person Observer Name"), "HAS OBS CONTEXT")
    person.PersonName = c.plant("ZQXSRPNAME", "SR PNAME")
    date = _content("DATE", ("111060", "DCM", "Study Date"))
    date.Date = c.date(82, "SR DATE")
    datetime = _content("DATETIME", ("111526", "DCM", "DateTime Started"))
    datetime.DateTime = c.date(83, "SR DATETIME") + "101010+0200"
    uidref = _content("UIDREF", ("110180", "DCM", "Study Instance UID"))
    uidref.UID = ct.StudyInstanceUID
    image = _content("IMAGE", ("121112", "DCM", "Source of Measurement"))
    image.ReferencedSOPSequence = Sequence([copy_dataset(sop)])
    nested = _content("TEXT", ("121073", "DCM", "Impression"))
    nested.TextValue = c.plant("ZQXSRNESTEDTEXT", "SR nested TEXT")
    container = _content("CONTAINER", ("111028", "DCM", "Image Library"))
    container.ContinuityOfContent = "SEPARATE"
    container.ContentSequence = Sequence([nested, image])
    ds.ContentSequence = Sequence([text, person, date, datetime, uidref, container])
    ds.ContentTemplateSequence = Sequence()
    return ds


def copy_dataset(ds: Dataset) -> Dataset:
    import copy

    return copy.deepcopy(ds)


def overlay_in_pixels(size: int = 32) -> Dataset:
    """A CT with 12 bits stored in 16 allocated and an overlay plane in bit 15 of PixelData."""
    study = SyntheticStudy()
    pixels = np.full((size, size), 1000, dtype=np.uint16)
    pixels[4:8, 4:28] |= 1 << 15  # overlay bits
    ds = ct_slice(study, f"{ROOT}.60.1", 1, 0, rows=size, columns=size, pixels=pixels)
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.add_new(0x60000010, "US", size)
    ds.add_new(0x60000011, "US", size)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 16)
    ds.add_new(0x60000102, "US", 15)
    return ds


def build() -> Corpus:
    """The full corpus: CT, enhanced CT, PET, SR of one patient."""
    c = Corpus()
    ct = ct_with_phi(c)
    c.datasets["ct"] = ct
    c.datasets["enhanced"] = enhanced_ct_with_phi(c, ct.StudyInstanceUID)
    c.datasets["pet"] = pet_with_phi(c, ct.StudyInstanceUID)
    c.datasets["sr"] = sr_with_phi(c, ct)
    return c
