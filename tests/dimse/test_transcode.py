"""Transcoding for retrieve (imaging.dimse.transcode) and the contexts a C-MOVE proposes: every object the DIMSE
tests use, into every uncompressed syntax and every lossless one we can encode, with the pixel values and
every other attribute unchanged."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AllStoragePresentationContexts

from imaging.dimse.contexts import MAX_CONTEXTS, scp_contexts, scu_contexts
from imaging.dimse.transcode import CannotTranscode, lossless_encodable, targets, transcode
from tests.archive_fixtures import quiet
from tests.archive_fixtures import testdata_file as bundled
from tests.dimse.retrieve_data import UNDECODABLE, pixels, retrieve_objects

NATIVE = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian]
PIXEL_TAGS = {0x7FE00010, 0x00280004, 0x00282110, 0x00282112, 0x00282114, 0x00280006}


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return retrieve_objects(tmp_path_factory.mktemp("objects"))


def _read(data: bytes):
    with quiet():
        return dcmread(BytesIO(data))


def test_every_object_into_every_uncompressed_and_lossless_syntax(objects: list[Path]) -> None:
    assert set(lossless_encodable()) == {JPEG2000Lossless, JPEGLSLossless, RLELossless}
    done = 0
    for path in objects:
        if path.name.endswith(UNDECODABLE):
            continue
        data = path.read_bytes()
        source = _read(data)
        expected = pixels(source)
        for target in [*NATIVE, *lossless_encodable()]:
            if expected is None and UID(target).is_encapsulated:
                continue
            try:
                out = _read(transcode(data, target))
            except CannotTranscode as exc:
                # The codecs' own limits (e.g. JPEG-LS takes no colour-by-plane 8-bit data): never silent.
                assert UID(target).is_encapsulated, f"{path.name} -> {UID(target).name}: {exc}"
                continue
            assert out.file_meta.TransferSyntaxUID == target
            assert out.SOPInstanceUID == source.SOPInstanceUID
            assert out.file_meta.MediaStorageSOPInstanceUID == source.SOPInstanceUID
            got = pixels(out)
            if expected is None:
                assert got is None
            else:
                assert got is not None and np.array_equal(got, expected), f"{path.name} -> {target}"
            # Everything but the pixel description is the same data set (retired group lengths, which
            # would be wrong after re-encoding, are dropped).
            same = {e.tag for e in source if int(e.tag) not in PIXEL_TAGS and e.tag.element != 0}
            assert same <= {e.tag for e in out}, f"{path.name} -> {target}"
            for tag in same:
                # (implicit VR loses the VR of private elements: a reader guesses it from its dictionary)
                if source[tag].VR != "SQ" and not (tag.is_private and target == ImplicitVRLittleEndian):
                    assert out[tag].value == source[tag].value, (path.name, target, tag)
            done += 1
    assert done >= 60


def test_big_endian_becomes_little_endian_with_the_same_pixels() -> None:
    big = bundled("MR_small_bigendian.dcm").read_bytes()
    little = dcmread(bundled("MR_small.dcm"))
    for target in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless):
        out = _read(transcode(big, target))
        assert np.array_equal(out.pixel_array, little.pixel_array)
        assert out.Rows == little.Rows and out.PatientName == little.PatientName
    # and back: little endian → big endian gives the bundled big endian file's pixel bytes
    back = _read(transcode(bundled("MR_small.dcm").read_bytes(), ExplicitVRBigEndian))
    assert back.PixelData == dcmread(bundled("MR_small_bigendian.dcm")).PixelData


def test_an_undecodable_object_cannot_be_transcoded_and_says_so_without_phi() -> None:
    data = bundled(UNDECODABLE).read_bytes()
    with quiet(), pytest.raises(CannotTranscode) as info:
        transcode(data, ExplicitVRLittleEndian)
    patient = str(dcmread(BytesIO(data), stop_before_pixels=True).PatientName)
    assert patient and patient not in str(info.value)


def test_targets_prefer_stored_then_uncompressed_then_lossless_never_lossy() -> None:
    j2k = str(JPEG2000)
    assert targets(j2k, [ImplicitVRLittleEndian, j2k], has_pixels=True) == [j2k]
    assert targets(
        j2k, [JPEGBaseline8Bit, ImplicitVRLittleEndian, ExplicitVRLittleEndian], has_pixels=True
    ) == [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
    ]
    # a peer that takes only lossy JPEG gets nothing we would have to degrade
    assert targets(ExplicitVRLittleEndian, [JPEGBaseline8Bit], has_pixels=True) == []
    assert targets(ExplicitVRLittleEndian, [RLELossless, JPEGBaseline8Bit], has_pixels=True) == [RLELossless]
    # no pixel data: any encapsulated syntax encodes the data set as explicit VR little endian
    assert targets(ImplicitVRLittleEndian, [JPEGBaseline8Bit], has_pixels=False) == [JPEGBaseline8Bit]
    assert targets(ImplicitVRLittleEndian, [], has_pixels=False) == []


def test_move_contexts_every_class_carried_then_stored_syntaxes_within_128() -> None:
    ct, mr = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
    objects = [(ct, JPEG2000)] * 5 + [(ct, ExplicitVRLittleEndian)] + [(mr, ExplicitVRBigEndian)] * 2
    contexts = scu_contexts(objects)
    proposed = [(str(cx.abstract_syntax), [str(t) for t in cx.transfer_syntax]) for cx in contexts]
    fallback = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert proposed[:2] == [(ct, fallback), (mr, fallback)]
    assert set(map(tuple, [(c, tuple(t)) for c, t in proposed[2:]])) == {
        (ct, (JPEG2000,)),
        (ct, (ExplicitVRLittleEndian,)),
        (mr, (ExplicitVRBigEndian,)),
    }
    # 170 classes x 2 syntaxes: still at most 128 contexts, and the most frequent classes carried first
    every = [str(cx.abstract_syntax) for cx in AllStoragePresentationContexts]
    many = [(c, JPEG2000) for i, c in enumerate(every) for _ in range(i + 1)]
    many += [(c, ExplicitVRBigEndian) for c in every]
    contexts = scu_contexts(many)
    assert len(contexts) == MAX_CONTEXTS
    assert {str(cx.abstract_syntax) for cx in contexts} == set(every[-MAX_CONTEXTS:])


def test_the_gateway_accepts_every_storage_class_in_every_syntax_and_storage_commitment() -> None:
    contexts = {str(cx.abstract_syntax): cx for cx in scp_contexts()}
    for cx in AllStoragePresentationContexts:
        assert str(cx.abstract_syntax) in contexts
        accepted = {str(t) for t in contexts[str(cx.abstract_syntax)].transfer_syntax}
        assert {ExplicitVRBigEndian, JPEG2000, RLELossless} <= accepted
    commitment = contexts["1.2.840.10008.1.20.1"]
    assert commitment.scp_role and commitment.scu_role
