"""Cleaning of free text (the 'C' action on descriptors, SR TEXT items, graphic text).

Fail closed by an allow-list: a word survives only if it is a known imaging/clinical vocabulary word or
a short number (with an optional unit), and is not part of a PHI value of the object's own header.
Everything else (names, identifiers, dates, places, unknown words) becomes '*'. It keeps 'CT CHEST W/O
CONTRAST 1.25 MM' readable and removes 'SMITH', 'MRN 12345678' and '15/03/2024' whatever their form.
"""

from __future__ import annotations

import re

_WORDS = """
A ABD ABDOMEN ABDOMINAL ACQ ACQUISITION ADC AFTER AND ANGIO ANGIOGRAPHY ANKLE ANT ANTERIOR AORTA AORTIC AP
APPENDIX ARM ARTERIAL ARTERY AUTO AX AXIAL AXIS B BASE BH BILATERAL BLADDER BODY BOLUS BONE BRAIN BREAST
BREATH C CA CALCIUM CAP CARDIAC CAROTID CERVICAL CHEST CINE COLON COMPARISON COR CORONAL CONTRAST CORONARY
CT CTA CTAP CTPA CUSTOM DAY DELAY DELAYED DERIVED DIFFUSION DOSE DUAL DWI DYNAMIC ECHO ELBOW ENERGY
ENHANCED EPI EXAM EXTREMITY FACE FAT FEMUR FFE FLAIR FLOW FOOT FOR FOREARM FRONTAL FSE FULL FUNCTIONAL GD
GRE HAND HEAD HEART HELICAL HI HIGH HIP HR IMAGE IMAGES IN INF INFERIOR IV KIDNEY KNEE KUB L LAT LATERAL
LEFT LEG LIVER LO LOCALIZER LOW LOWER LUMBAR LUNG LUNGS MAMMO MAMMOGRAPHY MAXILLOFACIAL MEDIASTINUM MIP MPR
MR MRA MRI MULTIPHASE NECK NEURO NODULE NON NONCONTRAST OBLIQUE OF ON ORBIT ORBITS OUTPUT PANCREAS PARENCHYMA
PED PEDIATRIC PELVIS PERFUSION PET PHASE PLAIN PLANAR PORTAL POST POSTERIOR PRE PRIMARY PROSTATE PROTOCOL
PULMONARY R RANGE RECON RECONSTRUCTION RENAL REPORT RIGHT ROUTINE SAG SAGITTAL SCAN SCOUT SE SECONDARY
SERIES SHOULDER SINUS SINUSES SKULL SLICE SLICES SOFT SPECT SPINE SPIN STANDARD STIR STUDY SUMMARY SUP
SUPERIOR SURVIEW SWI T TAP TEMPORAL THICK THIN THORACIC THORAX THYROID TIBIA TISSUE TOF TOPOGRAM TRA
TRANSVERSE TRAUMA TSE UPPER US VEIN VENOUS VIEW VOLUME W WAND WINDOW WITH WITHOUT WO WRIST X XR
ACUTE ADENOMA ASSESSMENT BENIGN BIOPSY CANCER CARCINOMA CHRONIC CLEAR CLINICAL CYST DIAGNOSIS DISEASE
EFFUSION EMBOLISM EVALUATE EVALUATION FINDING FINDINGS FOLLOW FOLLOWUP FRACTURE GROUND GLASS HISTORY
IMPRESSION INDICATION LESION LESIONS LYMPH MALIGNANT MASS MASSES METASTASES METASTASIS MILD MODERATE
NEGATIVE NEW NO NODE NODES NODULES NORMAL NOT OPACITY PAIN PNEUMONIA POSITIVE POSSIBLE PRIOR PROBABLE R/O
RULE OUT SCREENING SEVERE SIZE SMALL STABLE STAGING SUSPECTED SUSPICIOUS TUMOR TUMOUR UNCHANGED
O UP MM CM KV KVP MA MAS ML MG SEC HZ HU MIN
"""
VOCABULARY = frozenset(_WORDS.split())
_UNITS = r"(?:MM|CM|M|KV|KVP|MA|MAS|ML|MG|S|MS|SEC|HZ|T|HU|D|MIN|H|X)?"
_NUMBER = re.compile(r"\d{1,3}" + _UNITS)  # short numbers only: longer runs are ids or dates
_LEVEL = re.compile(r"[A-Z]\d{1,2}")  # T1, T2, C5, L4
_SPLIT = re.compile(r"([A-Za-z0-9]+)")
# Dates and times written with separators (15/03/2024, 2024-03-15, 10:15): removed as a whole.
_DATE_LIKE = re.compile(r"\d{1,4}[/.\-]\d{1,2}[/.\-]\d{1,4}|\d{1,2}:\d{2}(?::\d{2})?")
REDACTED = "*"


def phi_words(values: list[str]) -> frozenset[str]:
    """Upper-case words of the object's own identifying header values (names, ids, dates ...)."""
    words: set[str] = set()
    for value in values:
        words.update(word.upper() for word in _SPLIT.findall(value) if len(word) > 1)
    return frozenset(words)


def _safe(word: str, phi: frozenset[str]) -> bool:
    upper = word.upper()
    if upper in phi:
        return False
    return upper in VOCABULARY or _NUMBER.fullmatch(upper) is not None or _LEVEL.fullmatch(upper) is not None


def clean_text(value: str, phi: frozenset[str] = frozenset()) -> str:
    """`value` with every word that is not known to be safe replaced by '*' (separators kept)."""
    parts = _SPLIT.split(_DATE_LIKE.sub(REDACTED, value))
    for i in range(1, len(parts), 2):
        if not _safe(parts[i], phi):
            parts[i] = REDACTED
    return "".join(parts)


def is_clean(value: str, phi: frozenset[str] = frozenset()) -> bool:
    return _DATE_LIKE.search(value) is None and all(_safe(word, phi) for word in _SPLIT.findall(value))
