"""imaging.dimse.part10 writes the File Meta Information byte for byte as pynetdicom does."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from imaging.dimse.part10 import PREAMBLE, file_meta, part10


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "transfer_syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2"),  # even, even, odd lengths
        ("1.2.840.10008.5.1.4.1.1.88.22", "2.25.123456789012345678901234567890123", "1.2.840.10008.1.2.4.50"),
        (
            "1.2.840.10008.5.1.4.1.1.4",
            "1.2.826.0.1.3680043.8.498.12345678901234567890123456789012345678901234",
            "1.2.840.10008.1.2.1.99",
        ),
    ],
)
def test_same_bytes_as_pynetdicom(sop_class, sop_instance, transfer_syntax):
    meta = create_file_meta(
        sop_class_uid=sop_class, sop_instance_uid=sop_instance, transfer_syntax=transfer_syntax
    )
    assert file_meta(sop_class, sop_instance, transfer_syntax) == encode_file_meta(meta)


def test_part10_stream_reads_back():
    dataset = b"\x08\x00\x18\x00\x08\x00\x00\x00" + b"1.2.3.4\x00"  # (0008,0018) UI, implicit VR LE
    data = part10("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.840.10008.1.2", dataset)
    assert data.startswith(PREAMBLE) and data.endswith(dataset)
    ds = dcmread(BytesIO(data))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == "1.2.3.4"
