"""/work/shared/reference/dicomweb.md, point by point (each point on that page is a test here; points
covered in depth elsewhere are checked once more in their simplest form)."""

from __future__ import annotations

from io import BytesIO

import httpx
from pydicom import dcmread
from pydicom.dataset import Dataset

from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.dicomweb.conftest import Seeded, encode
from tests.dicomweb.multipart_util import split


def inst(seeded: Seeded, name: str, suffix: str = "") -> str:
    study, series, sop = seeded.instances[name]
    return f"/studies/{study}/series/{series}/instances/{sop}{suffix}"


# ------------------------------------------------------------------------------------ OHIF viewer v3
def test_ohif_study_list_fields(seeded: Seeded) -> None:
    with seeded.client() as c:
        r = c.get(
            "/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060"
            "&00100020=*SYN000001*&StudyDate=20240101-20241231&ModalitiesInStudy=CT"
        )
    (study,) = [s for s in r.json() if s["0020000D"]["Value"][0] == seeded.studies["ct"]]
    for tag in (
        "0020000D",
        "00080020",
        "00080030",
        "00080050",
        "00100020",
        "00100010",
        "00100030",
        "00201208",
        "00081030",
        "00080061",
        "00080090",
    ):
        assert tag in study, tag
    assert isinstance(study["00100010"]["Value"][0], dict)


def test_ohif_open_study_series_then_parallel_metadata(seeded: Seeded) -> None:
    study = seeded.studies["ct"]
    with seeded.client() as c:
        series = c.get(f"/studies/{study}/series?includefield=0008103E%2C00080021").json()
        assert {s["0008103E"]["Value"][0] for s in series} == {"SERIES 1", "SERIES 2"} or len(series) == 2
        for s in series:
            meta = c.get(f"/studies/{study}/series/{s['0020000E']['Value'][0]}/metadata").json()
            for tag in ("00280010", "00280011", "00280100", "00280030", "00200032", "00281053"):
                assert tag in meta[0]
        assert len(c.get(f"/studies/{study}/metadata").json()) == 14


def test_ohif_frames_quoted_or_not_carry_transfer_syntax(seeded: Seeded) -> None:
    with seeded.client() as c:
        for accept in (
            "multipart/related; type=application/octet-stream; transfer-syntax=*",
            'multipart/related; type="application/octet-stream"; transfer-syntax="*"',
        ):
            r = c.get(inst(seeded, "1.2.840.10008.1.2.4.91", "/frames/1"), headers={"Accept": accept})
            ((headers, _),) = split(r)
            assert (
                headers["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.91"
            )


def test_ohif_bulkdata_single_part_and_thumbnails(seeded: Seeded) -> None:
    with seeded.client() as c:
        meta = c.get(inst(seeded, "ct1-0", "/metadata")).json()[0]
        r = c.get(meta["7FE00010"]["BulkDataURI"])  # no Accept: single part
        assert r.headers["content-type"].startswith("application/octet-stream")
        assert len(r.content) == 64 * 64 * 2
        assert c.get(inst(seeded, "ct1-0", "/thumbnail"), headers={"Accept": "image/jpeg"}).status_code == 200


def test_ohif_upload_quoted_content_type(fresh) -> None:
    s = fresh()
    (ds,) = ct_series(SyntheticStudy(patient=synthetic_patient(80)), 1, rows=16, columns=16)
    b = "----ohif-boundary"
    payload = (
        f"--{b}\r\nContent-Type: application/dicom\r\n\r\n".encode() + encode(ds) + f"\r\n--{b}--".encode()
    )
    with s.client() as c:
        r = c.post(
            "/studies",
            content=payload,
            headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary="{b}"'},
        )
    assert r.status_code == 200


def test_cross_origin_headers(seeded: Seeded) -> None:
    r = httpx.options(
        f"{seeded.server.root}/studies",
        headers={
            "Origin": "http://viewer.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization,Accept",
        },
    )
    assert r.status_code == 200
    with seeded.client() as c:
        assert (
            c.get(
                inst(seeded, "ct1-0", "/frames/1"),
                headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
            ).headers["cross-origin-resource-policy"]
            == "cross-origin"
        )


# ------------------------------------------------------------------------------------ dicomweb-client
def test_dicomweb_client_conventions(seeded: Seeded) -> None:
    client = seeded.dicomweb_client()
    study = seeded.studies["ct"]
    results = client.search_for_studies(
        fields=["StudyDescription", "00080020"], search_filters={"PatientID": "SYN000001"}
    )
    assert results[0]["00081030"]["Value"] == ["CT CHEST WITH CONTRAST"]
    assert len(client.search_for_studies(get_remaining=True)) >= len(seeded.studies) - 1
    ds = client.retrieve_instance(study, *seeded.instances["ct1-0"][1:])  # multipart, no warning path
    assert ds.SOPInstanceUID == seeded.instances["ct1-0"][2]
    (frame,) = client.retrieve_instance_frames(
        study, *seeded.instances["ct1-0"][1:], frame_numbers=[1], media_types=("application/octet-stream",)
    )
    assert frame == dcmread(BytesIO(seeded.raw["ct1-0"])).PixelData


# ------------------------------------------------------------------------------------ PS3.18 details
def test_1_multipart_type_boundary_and_406(seeded: Seeded) -> None:
    with seeded.client() as c:
        r = c.get(
            inst(seeded, "ct1-0"),
            headers={
                "Accept": 'multipart/related; type="application/dicom+xml", multipart/related; type=application/dicom; transfer-syntax=*'
            },
        )
        assert r.status_code == 200
        ct = r.headers["content-type"]
        assert 'type="application/dicom"' in ct and "boundary=" in ct
        assert c.get(inst(seeded, "ct1-0"), headers={"Accept": "text/html"}).status_code == 406


def test_2_star_never_decompresses_and_default_is_explicit_le(seeded: Seeded) -> None:
    name = "1.2.840.10008.1.2.4.50"
    with seeded.client() as c:
        star = split(
            c.get(
                inst(seeded, name),
                headers={"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"},
            )
        )
        default = split(
            c.get(inst(seeded, name), headers={"Accept": "multipart/related; type=application/dicom"})
        )
    assert star[0][1] == seeded.raw[name]
    assert dcmread(BytesIO(default[0][1])).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_2_stow_transfer_syntax_parameter_loses_to_file_meta(fresh) -> None:
    s = fresh()
    (ds,) = ct_series(SyntheticStudy(patient=synthetic_patient(81)), 1, rows=16, columns=16)
    payload = (
        b"--b\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50\r\n\r\n"
        + encode(ds)
        + b"\r\n--b--\r\n"
    )
    with s.client() as c:
        r = c.post(
            "/studies",
            content=payload,
            headers={"Content-Type": "multipart/related; type=application/dicom; boundary=b"},
        )
        assert r.status_code == 200
        (inst_json,) = c.get(f"/studies/{ds.StudyInstanceUID}/instances").json()
        assert inst_json["00080018"]["Value"] == [ds.SOPInstanceUID]


def test_3_dicom_json_rules(seeded: Seeded) -> None:
    with seeded.client() as c:
        (study,) = c.get(
            "/studies", params={"StudyInstanceUID": seeded.studies["mr"], "includefield": "all"}
        ).json()
        meta = c.get(inst(seeded, "mr-0", "/metadata")).json()[0]
    for obj in (study, meta):
        assert list(obj) == sorted(obj)
        for key, element in obj.items():
            assert len(key) == 8 and key == key.upper() and "vr" in element
            assert sum(k in element for k in ("Value", "BulkDataURI", "InlineBinary")) <= 1
            if "Value" in element:
                assert element["Value"] != []
    assert study["00080090"]["Value"][0] == {
        "Alphabetic": "Yamada^Tarou",
        "Ideographic": "山田^太郎",
        "Phonetic": "やまだ^たろう",
    }
    assert meta["00200013"]["Value"] == [1]  # IS as a number
    assert meta["00280030"]["Value"] == [0.7, 0.7]  # DS as numbers, multi-valued split
    assert meta["00080008"]["Value"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert "BulkDataURI" in meta["7FE00010"]
    assert "Value" not in meta["00181030"] if "00181030" in meta else True


def test_4_empty_result_documented_choice(seeded: Seeded) -> None:
    with seeded.client() as c:
        r = c.get("/studies", params={"PatientID": "NOBODY"})
        caps = c.get("/capabilities").json()
    assert r.status_code == caps["qido"]["emptyResultStatus"] == 200 and r.json() == []


def test_5_capped_results_warning_and_offset(seeded: Seeded) -> None:
    with seeded.client() as c:
        r = c.get("/instances")
        assert r.headers["warning"].startswith('299 imaging: "There are ')
        assert c.get("/instances", params={"offset": 20}).json()[0] != r.json()[0]


def test_6_retrieve_url_everywhere(fresh) -> None:
    s = fresh(public_url="https://pacs.example.org")
    (ds,) = ct_series(SyntheticStudy(patient=synthetic_patient(82)), 1, rows=16, columns=16)
    result = s.dicomweb_client().store_instances([ds])
    assert result.RetrieveURL == f"https://pacs.example.org/dicomweb/studies/{ds.StudyInstanceUID}"
    assert result.ReferencedSOPSequence[0].RetrieveURL.startswith(
        "https://pacs.example.org/dicomweb/studies/"
    )
    (study,) = s.dicomweb_client().search_for_studies()
    assert study["00081190"]["Value"][0] == result.RetrieveURL


def test_7_stow_statuses_and_body(fresh) -> None:
    s = fresh()
    ds1, ds2 = ct_series(SyntheticStudy(patient=synthetic_patient(83)), 2, rows=16, columns=16)
    ct = "multipart/related; type=application/dicom; boundary=b"

    def post(*parts: bytes, path: str = "/studies") -> httpx.Response:
        body = (
            b"".join(b"--b\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n" for p in parts)
            + b"--b--\r\n"
        )
        with s.client() as c:
            return c.post(path, content=body, headers={"Content-Type": ct})

    ok = post(encode(ds1))
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/dicom+json"
    assert "00081198" not in ok.json()
    partial = post(encode(ds2), b"garbage")
    assert (
        partial.status_code == 202
        and Dataset.from_json(partial.json()).FailedSOPSequence[0].FailureReason == 0xC000
    )
    assert post(b"garbage").status_code == 409
    assert post(encode(ds1), path="/studies/1.2.3.4").status_code == 409
    with s.client() as c:
        assert (
            c.post(
                "/studies",
                content=b"x",
                headers={"Content-Type": "multipart/related; type=application/dicom"},
            ).status_code
            == 400
        )
        assert c.post("/studies", content=b"x", headers={"Content-Type": "image/png"}).status_code == 415


def test_8_partial_content(seeded: Seeded) -> None:
    with seeded.client() as c:
        meta = c.get(inst(seeded, "ct1-0", "/metadata")).json()[0]
        r = c.get(meta["7FE00010"]["BulkDataURI"], headers={"Range": "bytes=-16"})
        assert (
            r.status_code == 206
            and len(r.content) == 16
            and r.headers["content-range"].endswith(f"/{64 * 64 * 2}")
        )


def test_8_some_instances_unavailable_is_206_with_warning(fresh) -> None:
    from tests.archive_fixtures import testdata_file

    s = fresh()
    lossy = testdata_file("JPEG-lossy.dcm").read_bytes()  # 12-bit JPEG Extended: no decoder here
    study_uid = str(dcmread(BytesIO(lossy), stop_before_pixels=True).StudyInstanceUID)
    s.archive.ingestor.ingest(lossy)
    (ds,) = ct_series(
        SyntheticStudy(patient=synthetic_patient(84), StudyInstanceUID=study_uid), 1, rows=16, columns=16
    )
    s.archive.ingestor.ingest(encode(ds))
    with s.client() as c:
        r = c.get(
            f"/studies/{study_uid}",
            headers={
                "Accept": "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
            },
        )
        assert r.status_code == 206 and r.headers["warning"].startswith("299 ")
        assert len(split(r)) == 1
        assert (
            c.get(
                f"/studies/{study_uid}",
                headers={"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"},
            ).status_code
            == 200
        )


def test_9_includefield_forms(seeded: Seeded) -> None:
    study = seeded.studies["ct"]
    with seeded.client() as c:
        one = c.get(f"/studies/{study}/series?includefield=00080070%2CStationName").json()[0]
        repeated = c.get(
            f"/studies/{study}/series?includefield=00080070&includefield=InstitutionName"
        ).json()[0]
        everything = c.get(f"/studies/{study}/series?includefield=all").json()[0]
    assert "00080070" in one and "00081010" in one
    assert "00080070" in repeated and "00080080" in repeated
    assert {"00080070", "00080080", "00200052"} <= set(everything)
