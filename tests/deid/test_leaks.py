"""No planted PHI token survives, in any byte of the written output, under profiles that keep none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from imaging.deid import Deidentifier, DeidOption, DeidProfile
from tests.conftest import require_program
from tests.deid.checker import leaks, uids, walk, write
from tests.deid.conftest import KEY
from tests.deid.corpus import ROOT, Corpus

Opt = DeidOption
PROFILES = {
    "basic": DeidProfile(options=frozenset()),
    "default": DeidProfile(),
    "cleaning": DeidProfile(
        options=frozenset(
            {
                Opt.CLEAN_DESCRIPTORS,
                Opt.CLEAN_STRUCTURED_CONTENT,
                Opt.CLEAN_GRAPHICS,
                Opt.RETAIN_SAFE_PRIVATE,
                Opt.RETAIN_LONGITUDINAL_MODIFIED_DATES,
            }
        )
    ),
    "retain-all": DeidProfile(
        options=frozenset(
            {
                Opt.RETAIN_UIDS,
                Opt.RETAIN_DEVICE_IDENTITY,
                Opt.RETAIN_INSTITUTION_IDENTITY,
                Opt.RETAIN_PATIENT_CHARACTERISTICS,
                Opt.RETAIN_LONGITUDINAL_FULL_DATES,
                Opt.RETAIN_SAFE_PRIVATE,
                Opt.CLEAN_DESCRIPTORS,
            }
        )
    ),
}


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_no_token_survives_in_output_bytes(name: str, corpus: Corpus, tmp_path: Path) -> None:
    profile = PROFILES[name]
    deid = Deidentifier(key=KEY, profile=profile)
    for kind, ds in corpus.datasets.items():
        result = deid.deidentify(ds)
        assert not result.quarantined, (kind, result.reasons)
        assert result.dataset is not None
        data = write(result.dataset, tmp_path / f"{kind}.dcm")
        assert not leaks(data, corpus, profile), kind
        if not profile.has(Opt.RETAIN_UIDS):
            # No original (non-registered) UID anywhere: ids embedded in UID suffixes are gone too.
            assert not [u for u in uids(ds) if u.startswith(ROOT) and u.encode() in data], kind


def test_retain_options_keep_what_they_name(corpus: Corpus, tmp_path: Path) -> None:
    """The Retain options really keep their attributes (so the leak test above is not vacuous)."""
    profile = PROFILES["retain-all"]
    result = Deidentifier(key=KEY, profile=profile).deidentify(corpus.datasets["ct"])
    assert result.dataset is not None
    data = write(result.dataset, tmp_path / "ct.dcm")
    for token in ("ZQXHOSPITAL", "ZQXSTATION", "ZQXSERIAL", "99887766", corpus.datasets["ct"].StudyDate):
        assert token.encode() in data, token
    out = result.dataset
    assert out.StudyInstanceUID == corpus.datasets["ct"].StudyInstanceUID
    assert out.PatientSex == "F" and float(out.PatientWeight) == 71.5
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_every_tag_of_the_output_is_known_or_safe_private(corpus: Corpus) -> None:
    """Recursive scan: no unknown public tag and, by default, no private element at any depth."""
    result = Deidentifier(key=KEY).deidentify(corpus.datasets["ct"])
    assert result.dataset is not None
    for elem in walk(result.dataset):
        assert not elem.tag.is_private, elem.tag
        assert elem.tag.group not in range(0x5000, 0x6100), elem.tag  # no curves, no overlays
        assert pydicom.datadict.dictionary_has_tag(elem.tag), elem.tag


def test_safe_private_is_resolved_by_creator_not_offset(corpus: Corpus) -> None:
    profile = DeidProfile(options=frozenset({Opt.RETAIN_SAFE_PRIVATE}))
    out = Deidentifier(key=KEY, profile=profile).deidentify(corpus.datasets["ct"]).dataset
    assert out is not None
    private = {elem.tag: elem.value for elem in out if elem.tag.is_private}
    # (0019,100C) B_value under SIEMENS MR HEADER is kept with its creator; (0019,110C) has the same
    # offset but another creator: removed, as are the PHI text and every other block.
    assert private == {0x00190010: "SIEMENS MR HEADER", 0x0019100C: "1000"}


@pytest.mark.tesseract
def test_clean_graphics_keeps_a_textless_overlay_with_clean_text(corpus: Corpus) -> None:
    require_program("tesseract")  # overlays are read by OCR before they are kept
    profile = DeidProfile(options=frozenset({Opt.CLEAN_GRAPHICS}))
    source = corpus.datasets["ct"]
    out = Deidentifier(key=KEY, profile=profile).deidentify(source).dataset
    assert out is not None
    assert out[0x60003000].value == source[0x60003000].value  # the bar has no text: kept as is
    assert out[0x60000022].value == "*" and out[0x60001500].value == "*"  # labels cleaned
    assert out[0x50003000].value == source[0x50003000].value  # curve data kept, its text cleaned
    assert out[0x50000022].value == "*"


@pytest.mark.tesseract
def test_clean_graphics_drops_an_overlay_with_burned_in_text(corpus: Corpus) -> None:
    require_program("tesseract")
    from PIL import Image, ImageDraw, ImageFont

    ds = corpus.datasets["ct"]
    image = Image.new("1", (ds.Columns, ds.Rows), 0)
    ImageDraw.Draw(image).text((2, 20), "ZQXOVL", fill=1, font=ImageFont.load_default(size=14))
    bits = np.array(image, dtype=np.uint8).ravel()
    ds[0x60003000].value = np.packbits(bits, bitorder="little").tobytes()
    profile = DeidProfile(options=frozenset({Opt.CLEAN_GRAPHICS}))
    out = Deidentifier(key=KEY, profile=profile).deidentify(ds).dataset
    assert out is not None
    assert not [e for e in out if e.tag.group == 0x6000]  # the whole overlay group is gone
    assert 0x50003000 in out  # the curve has no text bitmap: kept
