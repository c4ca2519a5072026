"""The direct Part 10 writer gives exactly pydicom's bytes, for every kind of output the engine makes."""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from imaging.deid import Deidentifier, DeidOption, DeidProfile
from imaging.deid.part10 import encode
from tests.archive_fixtures import bundled_testdata_files
from tests.deid import iod_fill
from tests.deid.conftest import KEY
from tests.deid.corpus import build
from tests.deid.test_leaks import PROFILES


def _pydicom_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _read(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def _outputs() -> dict[str, Dataset]:
    """Outputs of the corpus (as built, and as read back from files) under every profile of the leak
    tests; of the filled IODs under two; of pydicom's test files (many transfer syntaxes and character sets)
    under the Basic Profile, and of a few of them with pixels cleaned (new native pixel data)."""
    sources: dict[str, Dataset] = {}
    for kind, ds in build().datasets.items():
        sources[kind] = ds
        sources[f"{kind}-read"] = _read(_pydicom_bytes(ds))
    filled = {f"filled-{kind}": iod_fill.build(sop) for sop, kind in iod_fill.REPRESENTATIVE.items()}
    files: dict[str, Dataset] = {}
    for path in bundled_testdata_files():
        if path.suffix == ".dcm":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    files[path.name] = pydicom.dcmread(path)
                except Exception:  # deliberately broken or not Part 10
                    continue
    runs = [(name, profile, sources) for name, profile in PROFILES.items()]
    runs += [("basic", PROFILES["basic"], filled), ("cleaning", PROFILES["cleaning"], filled)]
    runs.append(("basic", PROFILES["basic"], files))
    cleaned = ("SC_rgb_small_odd.dcm", "SC_rgb_rle.dcm", "SC_ybr_full_422_uncompressed.dcm")
    runs.append(("default", PROFILES["default"], {k: files[k] for k in cleaned}))
    outputs = {}
    for name, profile, objects in runs:
        deid = Deidentifier(key=KEY, profile=profile)
        for kind, ds in objects.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                result = deid.deidentify(ds)
            if result.dataset is not None:
                outputs[f"{name}/{kind}"] = result.dataset
    return outputs


def test_the_writer_gives_pydicoms_bytes() -> None:
    outputs = _outputs()
    assert len(outputs) > 75
    for kind, ds in outputs.items():
        try:
            expected = _pydicom_bytes(ds)
        except Exception:  # pydicom cannot write it either (a few odd test files): nothing to compare
            continue
        assert encode(ds) == expected, kind


@pytest.mark.parametrize("charset", ["ISO_IR 100", "ISO_IR 192", ["", "ISO 2022 IR 87"]])
def test_text_in_other_character_sets(charset: str | list[str]) -> None:
    """Non-ASCII text is encoded by pydicom's rules for the dataset's character set."""
    ds = build().datasets["ct"]
    ds.SpecificCharacterSet = charset
    ds.StudyDescription = "Thorax Müller" if charset != ["", "ISO 2022 IR 87"] else "胸部"
    deid = Deidentifier(key=KEY, profile=DeidProfile(options=frozenset({DeidOption.RETAIN_DEVICE_IDENTITY})))
    out = deid.deidentify(_read(_pydicom_bytes(ds))).dataset
    assert out is not None
    out.InstitutionName = ds.StudyDescription  # a new non-ASCII value, as cleaning could make
    assert encode(out) == _pydicom_bytes(out)
    assert _read(encode(out)).InstitutionName == ds.StudyDescription


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian])
def test_sources_in_other_transfer_syntaxes(syntax: str) -> None:
    """Raw values shared from such a source are written in its encoding (pydicom's writer), and the
    shared marker sequence is not (it is Explicit VR Little Endian)."""
    ds = build().datasets["sr"]
    ds.file_meta.TransferSyntaxUID = syntax
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=syntax == ImplicitVRLittleEndian, enforce_file_format=True)
    source = _read(buffer.getvalue())
    out = Deidentifier(key=KEY).deidentify(source).dataset
    assert out is not None
    data = encode(out)
    assert data == _pydicom_bytes(out)
    again = _read(data)
    assert again.file_meta.TransferSyntaxUID == syntax
    codes = [item.CodeValue for item in again.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107"]
    assert again.ContentSequence[0].TextValue == "ANONYMIZED"
    assert again.StudyInstanceUID == out.StudyInstanceUID
