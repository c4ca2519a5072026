"""The direct Part 10 writer gives exactly pydicom's bytes, for every kind of output the engine makes."""

from __future__ import annotations

import io
import warnings

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian

from imaging.deid import Deidentifier, DeidOption, DeidProfile
from imaging.deid.part10 import encode, read
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


def _sources() -> dict[str, bytes]:
    """Part 10 files: the corpus, the filled IODs, pydicom's test files (every syntax it ships)."""
    files = {kind: _pydicom_bytes(ds) for kind, ds in build().datasets.items()}
    for sop, kind in iod_fill.REPRESENTATIVE.items():
        files[f"filled-{kind}"] = _pydicom_bytes(iod_fill.build(sop))
    for path in bundled_testdata_files():
        if path.suffix == ".dcm":
            files[path.name] = path.read_bytes()
    return files


def test_the_reader_gives_dcmreads_elements_or_declines() -> None:
    read_fast = 0
    for name, data in _sources().items():
        ours = read(data)
        if ours is None:
            continue  # another transfer syntax, or an odd file: dcmread reads it
        read_fast += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = pydicom.dcmread(io.BytesIO(data))
        assert ours.original_encoding == theirs.original_encoding, name
        assert ours.original_character_set == theirs.original_character_set, name
        assert list(ours._dict) == list(theirs._dict), name
        for tag, element in theirs._dict.items():
            assert ours._dict[tag] == element or ours[tag] == theirs[tag], (name, tag)
        assert ours.file_meta == theirs.file_meta, name
        deid = Deidentifier(key=KEY, profile=PROFILES["basic"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, b = deid.deidentify(ours).dataset, deid.deidentify(theirs).dataset
        assert (a is None) == (b is None), name
        if a is not None and b is not None:
            assert encode(a) == encode(b), name
    assert read_fast > 30


def test_the_reader_declines_what_it_does_not_handle() -> None:
    ct = _pydicom_bytes(build().datasets["ct"])
    assert read(ct) is not None
    assert read(ct[:-7]) is None  # truncated
    assert read(b"\x00" * 128 + b"DICX" + ct[132:]) is None  # not Part 10
    implicit = build().datasets["ct"]
    implicit.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buffer = io.BytesIO()
    implicit.save_as(buffer, implicit_vr=True, enforce_file_format=True)
    assert read(buffer.getvalue()) is None
