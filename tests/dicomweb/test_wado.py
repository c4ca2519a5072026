"""WADO-RS: instances (as stored / transcoded), metadata from the cache, frames, bulk data, rendered."""

from __future__ import annotations

import shutil
from io import BytesIO

import numpy as np
import pytest
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.dicomweb.conftest import Seeded
from tests.dicomweb.multipart_util import split

ANY_TS = "multipart/related; type=application/octet-stream; transfer-syntax=*"  # OHIF, unquoted


def url(seeded: Seeded, name: str, suffix: str = "") -> str:
    study, series, sop = seeded.instances[name]
    return f"/studies/{study}/series/{series}/instances/{sop}{suffix}"


def test_dicomweb_client_retrieve_study_series_instance(seeded: Seeded) -> None:
    client = seeded.dicomweb_client()
    study = seeded.studies["ct"]
    datasets = client.retrieve_study(study)
    assert len(datasets) == 14
    series = client.retrieve_series(study, seeded.series["ct2"])
    assert sorted(int(d.InstanceNumber) for d in series) == [1, 2, 3, 4]
    _, se, sop = seeded.instances["ct1-3"]
    ds = client.retrieve_instance(study, se, sop)
    original = dcmread(BytesIO(seeded.raw["ct1-3"]))
    assert ds.SOPInstanceUID == sop and np.array_equal(ds.pixel_array, original.pixel_array)


@pytest.mark.parametrize(
    "name", ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2", "rle2"]
)
def test_transfer_syntax_star_is_byte_identical(seeded: Seeded, name: str) -> None:
    with seeded.client() as c:
        r = c.get(
            url(seeded, name),
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
    assert r.status_code == 200
    ((headers, payload),) = split(r)
    assert payload == seeded.raw[name]
    stored_ts = str(dcmread(BytesIO(payload), stop_before_pixels=True).file_meta.TransferSyntaxUID)
    assert headers["content-type"] == f"application/dicom; transfer-syntax={stored_ts}"


@pytest.mark.parametrize(
    "name",
    [
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.2",
        "1.2.840.10008.1.2",
    ],
)
def test_no_transfer_syntax_means_explicit_vr_little_endian(seeded: Seeded, name: str) -> None:
    with seeded.client() as c:
        r = c.get(url(seeded, name), headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200
    ((headers, payload),) = split(r)
    assert headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    ds = dcmread(BytesIO(payload))
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    original = dcmread(BytesIO(seeded.raw[name]))
    assert np.array_equal(ds.pixel_array, original.pixel_array)
    assert ds.SOPInstanceUID == original.SOPInstanceUID


def test_transcode_to_implicit_and_406_when_impossible(seeded: Seeded) -> None:
    with seeded.client() as c:
        r = c.get(
            url(seeded, "1.2.840.10008.1.2.1"),
            headers={
                "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ImplicitVRLittleEndian}'
            },
        )
        ((_, payload),) = split(r)
        assert dcmread(BytesIO(payload)).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        # JPEG 2000 cannot be produced from uncompressed data here; 12-bit JPEG Extended cannot be decoded.
        assert (
            c.get(
                url(seeded, "1.2.840.10008.1.2.1"),
                headers={
                    "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90'
                },
            ).status_code
            == 406
        )
        assert (
            c.get(
                url(seeded, "1.2.840.10008.1.2.4.51"),
                headers={"Accept": 'multipart/related; type="application/dicom"'},
            ).status_code
            == 406
        )
        assert (
            c.get(url(seeded, "1.2.840.10008.1.2.4.51"), headers={"Accept": "application/json"}).status_code
            == 406
        )
        assert c.get("/studies/1.2.3.4").status_code == 404


def test_metadata_from_cache_without_opening_files(seeded: Seeded) -> None:
    study, series = seeded.studies["ct"], seeded.series["ct1"]
    objects = seeded.archive.settings.objects_dir
    hidden = objects.with_name("objects-hidden")
    objects.rename(hidden)  # no stored file can be opened while this runs
    try:
        with seeded.client() as c:
            r = c.get(f"/studies/{study}/series/{series}/metadata")
            assert r.status_code == 200 and r.headers["content-type"] == "application/dicom+json"
            items = r.json()
            assert c.get(f"/studies/{study}/metadata").status_code == 200
            assert len(c.get(f"/studies/{study}/metadata").json()) == 14
            assert c.get(url(seeded, "ct1-0", "/metadata")).status_code == 200
            assert c.get(url(seeded, "ct1-0")).status_code == 404  # the object itself is unreachable
    finally:
        hidden.rename(objects)
    assert len(items) == 10
    first = items[0]
    assert list(first) == sorted(first)
    for tag in (
        "00280010",
        "00280011",
        "00280100",
        "00280030",
        "00200032",
        "00281053",
        "00281052",
        "00080018",
    ):
        assert tag in first, tag
    assert [i["00200013"]["Value"][0] for i in items] == list(range(1, 11))
    pixel = first["7FE00010"]
    assert set(pixel) == {"vr", "BulkDataURI"}
    with seeded.client() as c:
        bulk = c.get(pixel["BulkDataURI"], headers={"Accept": "application/octet-stream"})
        assert bulk.status_code == 200
        assert bulk.content == dcmread(BytesIO(seeded.raw["ct1-0"])).PixelData
        part = c.get(pixel["BulkDataURI"], headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == bulk.content[10:20]
        assert part.headers["content-range"] == f"bytes 10-19/{len(bulk.content)}"
        assert c.get(pixel["BulkDataURI"], headers={"Range": "bytes=999999999-"}).status_code == 416
    # dicomweb-client follows the BulkDataURI (multipart/related; type="application/octet-stream").
    (data,) = seeded.dicomweb_client().retrieve_bulkdata(pixel["BulkDataURI"])
    assert data == bulk.content


def test_frames_as_stored_native_and_lists(seeded: Seeded) -> None:
    original = dcmread(BytesIO(seeded.raw["multiframe"]))
    frame_size = len(original.PixelData) // 3
    with seeded.client() as c:
        r = c.get(url(seeded, "multiframe", "/frames/3,1"), headers={"Accept": ANY_TS})
        assert r.status_code == 200
        parts = split(r)
        assert [h["content-type"] for h, _ in parts] == [
            "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
        ] * 2
        assert parts[0][1] == original.PixelData[2 * frame_size :]
        assert parts[1][1] == original.PixelData[:frame_size]
        assert c.get(url(seeded, "multiframe", "/frames/4"), headers={"Accept": ANY_TS}).status_code == 404
        for bad in ("0", "1,,2", "a", "1-2", "-1"):
            assert (
                c.get(url(seeded, "multiframe", f"/frames/{bad}"), headers={"Accept": ANY_TS}).status_code
                == 400
            )
        assert (
            c.get(
                url(seeded, "multiframe", "/frames/1"),
                headers={"Accept": 'multipart/related; type="image/jp2"'},
            ).status_code
            == 406
        )


def test_encapsulated_frames_as_stored_with_transfer_syntax(seeded: Seeded) -> None:
    for name, frames in (("multiframe-rle", 4), ("rle2", 2)):
        original = dcmread(BytesIO(seeded.raw[name]))
        expected = list(generate_frames(original.PixelData, number_of_frames=frames))
        with seeded.client() as c:
            r = c.get(
                url(seeded, name, "/frames/" + ",".join(str(i) for i in range(1, frames + 1))),
                headers={"Accept": 'multipart/related; type="application/octet-stream"; transfer-syntax="*"'},
            )
        parts = split(r)
        assert [p for _, p in parts] == expected
        assert parts[0][0]["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.5"


def test_compressed_part_media_types(seeded: Seeded) -> None:
    original = dcmread(BytesIO(seeded.raw["1.2.840.10008.1.2.4.80"]))
    with seeded.client() as c:
        r = c.get(
            url(seeded, "1.2.840.10008.1.2.4.80", "/frames/1"),
            headers={"Accept": "multipart/related; type=image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"},
        )
    ((headers, payload),) = split(r)
    assert headers["content-type"] == "image/jls; transfer-syntax=1.2.840.10008.1.2.4.80"
    assert payload == next(generate_frames(original.PixelData, number_of_frames=1))


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("1.2.840.10008.1.2.4.50", 1),
        ("1.2.840.10008.1.2.4.91", 1),
        ("1.2.840.10008.1.2.4.80", 1),
        ("1.2.840.10008.1.2.5", 1),
        ("1.2.840.10008.1.2.2", 1),
        ("1.2.840.10008.1.2.1.99", 1),
        ("multiframe-rle", 3),
        ("rle2", 2),
    ],
)
def test_frames_decoded_when_no_transfer_syntax_is_asked(seeded: Seeded, name: str, frame: int) -> None:
    """dicomweb-client asks type="application/octet-stream" with no transfer-syntax: Explicit VR LE."""
    study, series, sop = seeded.instances[name]
    (data,) = seeded.dicomweb_client().retrieve_instance_frames(
        study, series, sop, frame_numbers=[frame], media_types=("application/octet-stream",)
    )
    original = dcmread(BytesIO(seeded.raw[name]))
    expected = original.pixel_array
    if int(original.get("NumberOfFrames", 1)) > 1:
        expected = expected[frame - 1]
    assert data == expected.astype(expected.dtype.newbyteorder("<")).tobytes()
    with seeded.client() as c:
        r = c.get(
            url(seeded, name, f"/frames/{frame}"),
            headers={"Accept": 'multipart/related; type="application/octet-stream"'},
        )
    assert split(r)[0][0]["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"


def test_frame_of_undecodable_data_is_406(seeded: Seeded) -> None:
    with seeded.client() as c:
        r = c.get(
            url(seeded, "1.2.840.10008.1.2.4.51", "/frames/1"),
            headers={"Accept": 'multipart/related; type="application/octet-stream"'},
        )
        assert r.status_code == 406
        ok = c.get(url(seeded, "1.2.840.10008.1.2.4.51", "/frames/1"), headers={"Accept": ANY_TS})
        assert ok.status_code == 200


def test_rendered_and_thumbnails(seeded: Seeded) -> None:
    study, series, _ = seeded.instances["ct1-0"]
    with seeded.client() as c:
        r = c.get(url(seeded, "ct1-0", "/rendered"), headers={"Accept": "image/jpeg"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert Image.open(BytesIO(r.content)).size == (64, 64)
        png = c.get(
            url(seeded, "ct1-0", "/rendered"),
            params={"window": "40,400,linear", "viewport": "32,32"},
            headers={"Accept": "image/png"},
        )
        image = Image.open(BytesIO(png.content))
        assert png.headers["content-type"] == "image/png" and image.size == (32, 32)
        assert len(set(image.getdata())) > 1
        lung = c.get(
            url(seeded, "ct1-0", "/rendered"), params={"window": "-600,1500"}, headers={"Accept": "image/png"}
        )
        assert lung.content != png.content
        frame = c.get(url(seeded, "multiframe-rle", "/frames/2/rendered"), headers={"Accept": "image/png"})
        assert frame.status_code == 200
        color = c.get(url(seeded, "1.2.840.10008.1.2.4.50", "/rendered"))
        assert (
            color.headers["content-type"] == "image/jpeg" and Image.open(BytesIO(color.content)).mode == "RGB"
        )
        for path in (
            f"/studies/{study}/thumbnail",
            f"/studies/{study}/series/{series}/thumbnail",
            url(seeded, "ct1-0", "/thumbnail"),
            url(seeded, "multiframe", "/frames/1/thumbnail"),
        ):
            t = c.get(path, headers={"Accept": "image/jpeg"})
            assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg", path
            assert max(Image.open(BytesIO(t.content)).size) <= 128
        series_rendered = c.get(
            f"/studies/{study}/series/{series}/rendered",
            headers={"Accept": "multipart/related; type=image/jpeg"},
        )
        assert len(split(series_rendered)) == 10
        for params in (
            {"window": "1"},
            {"window": "a,b"},
            {"window": "40,400,cubic"},
            {"viewport": "0,10"},
            {"quality": "500"},
        ):
            assert c.get(url(seeded, "ct1-0", "/rendered"), params=params).status_code == 400, params
        assert c.get(url(seeded, "ct1-0", "/rendered"), headers={"Accept": "image/gif"}).status_code == 406


def test_missing_object_is_404_and_server_keeps_serving(seeded: Seeded, tmp_path) -> None:
    _, _, _ = seeded.instances["old1"]
    with seeded.archive.db.read() as s:
        from sqlalchemy import select

        from imaging.index.schema import Instance

        key = s.scalar(
            select(Instance.object_key).where(Instance.SOPInstanceUID == seeded.instances["old1"][2])
        )
    path = seeded.archive.store.path_for(key)
    moved = tmp_path / "moved"
    shutil.move(path, moved)
    try:
        with seeded.client() as c:
            assert c.get(url(seeded, "old1")).status_code == 404
            assert c.get(url(seeded, "old1", "/frames/1"), headers={"Accept": ANY_TS}).status_code == 404
            assert c.get(url(seeded, "old1", "/metadata")).status_code == 200
    finally:
        shutil.move(moved, path)
