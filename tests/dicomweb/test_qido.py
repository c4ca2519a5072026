"""QIDO-RS against the app on a real port: dicomweb-client and raw HTTP (OHIF's exact query strings)."""

from __future__ import annotations

import pytest

from tests.dicomweb.conftest import Seeded

STUDY_UID = "0020000D"


def uids(results: list[dict], tag: str = STUDY_UID) -> set[str]:
    return {r[tag]["Value"][0] for r in results}


def test_all_studies_and_default_attributes(seeded: Seeded) -> None:
    client = seeded.dicomweb_client()
    studies = client.search_for_studies()
    assert seeded.studies["ct"] in uids(studies)
    assert seeded.studies["project"] not in uids(studies)  # another partition
    ct = next(s for s in studies if s[STUDY_UID]["Value"][0] == seeded.studies["ct"])
    assert list(ct) == sorted(ct), "keys in ascending tag order"
    assert ct["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "SYNTH0001^PATIENT"}]}
    assert ct["00080061"] == {"vr": "CS", "Value": ["CT"]}  # ModalitiesInStudy
    assert ct["00201208"] == {"vr": "IS", "Value": [14]}
    assert ct["00201206"] == {"vr": "IS", "Value": [2]}
    # dicomweb-client sends `Host` without the port, so the RetrieveURL has none; over httpx it does.
    assert ct["00081190"]["Value"][0] == f"http://127.0.0.1/dicomweb/studies/{seeded.studies['ct']}"
    with seeded.client() as c:
        (raw,) = c.get("/studies", params={"StudyInstanceUID": seeded.studies["ct"]}).json()
    assert raw["00081190"]["Value"][0] == f"{seeded.server.root}/studies/{seeded.studies['ct']}"
    for element in ct.values():
        assert "vr" in element
        assert sum(k in element for k in ("Value", "BulkDataURI", "InlineBinary")) <= 1


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"PatientID": "SYN000001"}, {"ct"}),
        ({"00100020": "SYN000001"}, {"ct"}),  # by tag
        ({"PatientName": "SYNTH0001^PATIENT"}, {"ct"}),
        ({"PatientName": "synth0001^patient"}, {"ct"}),  # PN: case-insensitive
        ({"PatientName": "SYNTH001?^*"}, {"old1", "old2", "old3"}),  # ? and *
        ({"PatientName": "*brien*"}, {"mr"}),
        ({"PatientName": "O'Brien*"}, {"mr"}),  # SQL meta-characters are data
        ({"PatientID": "PAT'; DROP TABLE study;--"}, {"mr"}),
        ({"AccessionNumber": "ACC-OLD-*"}, {"old1", "old2", "old3"}),
        ({"StudyDate": "20200101-20211231"}, {"old2", "old3"}),
        ({"StudyDate": "-20191231"}, {"old1"}),  # open start
        ({"StudyDate": "20230101-"}, {"ct", "mr"}),  # open end (project study is elsewhere)
        ({"StudyDate": "20200601"}, {"old2"}),
        ({"StudyTime": "0800-0900"}, {"mr"}),
        ({"ModalitiesInStudy": "MR"}, {"mr"}),
        ({"Modality": "MR"}, {"mr"}),  # series attribute on a study query → ModalitiesInStudy
        ({"StudyDescription": "CT CHEST*"}, {"ct"}),
        ({"ReferringPhysicianName": "yamada*"}, {"mr"}),
    ],
)
def test_study_matching(seeded: Seeded, filters: dict[str, str], expected: set[str]) -> None:
    found = uids(seeded.dicomweb_client().search_for_studies(search_filters=filters))
    wanted = {seeded.studies[n] for n in expected}
    known = set(seeded.studies.values())
    assert found & known == wanted


def test_uid_list_matching(seeded: Seeded) -> None:
    wanted = {seeded.studies["old1"], seeded.studies["mr"]}
    found = uids(
        seeded.dicomweb_client().search_for_studies(search_filters={"StudyInstanceUID": "\\".join(wanted)})
    )
    assert found == wanted


def test_fuzzy_matching(seeded: Seeded) -> None:
    client = seeded.dicomweb_client()
    assert not client.search_for_studies(search_filters={"PatientName": "sean"}, fuzzymatching=False)
    found = uids(client.search_for_studies(search_filters={"PatientName": "sean"}, fuzzymatching=True))
    assert found == {seeded.studies["mr"]}


def test_ohif_study_list_query_comma_includefield(seeded: Seeded) -> None:
    """OHIF's exact query: includefield as ONE %2C-encoded value."""
    with seeded.client() as c:
        r = c.get(
            "/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060&PatientName=*synth0001*"
        )
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/dicom+json"
    (study,) = r.json()
    assert study["00081030"]["Value"] == ["CT CHEST WITH CONTRAST"]
    assert study["00080061"]["Value"] == ["CT"]


def test_includefield_repeated_keywords_tags_and_all(seeded: Seeded) -> None:
    client = seeded.dicomweb_client()
    study = seeded.studies["ct"]
    series = client.search_for_series(study, fields=["Manufacturer", "00080080"])  # repeated keys
    assert series[0]["00080070"]["Value"] == ["SYNTHETIC"]
    assert series[0]["00080080"]["Value"] == ["SYNTHETIC GENERAL HOSPITAL"]
    instances = client.search_for_instances(study, seeded.series["ct1"], fields=["all"])
    assert len(instances) == 10
    assert instances[0]["00280030"]["Value"] == [0.7, 0.7]  # PixelSpacing from the metadata cache
    assert "7FE00010" not in instances[0]


def test_series_and_instance_levels(seeded: Seeded) -> None:
    client = seeded.dicomweb_client()
    study = seeded.studies["ct"]
    series = client.search_for_series(study)
    assert [s["00200011"]["Value"][0] for s in series] == [1, 2]
    assert series[0]["00201209"]["Value"] == [10]
    assert series[0]["00081190"]["Value"][0].endswith(f"/studies/{study}/series/{seeded.series['ct1']}")
    all_series = client.search_for_series(search_filters={"Modality": "MR"})
    assert {s[STUDY_UID]["Value"][0] for s in all_series} & set(seeded.studies.values()) == {
        seeded.studies["mr"]
    }
    instances = client.search_for_instances(
        study, seeded.series["ct1"], search_filters={"InstanceNumber": "3"}
    )
    assert len(instances) == 1 and instances[0]["00200013"]["Value"] == [3]
    assert "00080018" in instances[0] and "00081190" in instances[0]
    assert len(client.search_for_instances(study)) == 14
    everything = client.search_for_instances(search_filters={"SOPInstanceUID": seeded.instances["mr-1"][2]})
    assert len(everything) == 1


def test_paging_limit_offset_get_remaining_and_warning(seeded: Seeded) -> None:
    client = seeded.dicomweb_client()
    first = client.search_for_instances()  # capped at qido_max_results = 20
    every = client.search_for_instances(get_remaining=True)
    assert len(first) == 20 and len(every) > 20
    assert len({i["00080018"]["Value"][0] for i in every}) == len(every)
    with seeded.client() as c:
        r = c.get("/instances")
        assert len(r.json()) == 20
        assert r.headers["warning"] == (
            f'299 imaging: "There are {len(every) - 20} additional results that can be requested"'
        )
        r2 = c.get("/instances", params={"limit": 10, "offset": len(every) - 5})
        assert len(r2.json()) == 5 and "warning" not in r2.headers
        huge = c.get("/instances", params={"limit": str(10**30)})
        assert huge.status_code == 200 and len(huge.json()) == 20 and "warning" in huge.headers
        beyond = c.get("/instances", params={"offset": 10**6})
        assert beyond.status_code == 200 and beyond.json() == []


@pytest.mark.parametrize("status", ["200", "204"])
def test_empty_result_status_is_configurable(seeded: Seeded, status: str) -> None:
    settings = seeded.archive.settings
    old = settings.empty_qido_status
    settings.empty_qido_status = status  # type: ignore[assignment]
    try:
        with seeded.client() as c:
            r = c.get("/studies", params={"PatientID": "NOBODY"})
        assert r.status_code == int(status)
        assert (r.json() == []) if status == "200" else r.content == b""
        assert seeded.dicomweb_client().search_for_studies(search_filters={"PatientID": "NOBODY"}) == []
    finally:
        settings.empty_qido_status = old


@pytest.mark.parametrize(
    "query",
    [
        "StudyDate=2024-01-01-2024",
        "StudyDate=abc",
        "StudyDate=-",
        "StudyInstanceUID=1.2.3%27%20OR%201=1--",
        "StudyInstanceUID=" + "1" * 80,
        "NoSuchAttribute=1",
        "FFFFFFFF=1",
        "includefield=NoSuchAttribute",
        "limit=-1",
        "limit=ten",
        "offset=-5",
        "offset=" + "9" * 40,
        "fuzzymatching=maybe",
        "PatientName=" + "A" * 5000,
        "PatientName=a%00b",
        "ReferencedStudySequence.StudyInstanceUID=1.2",
        "InstanceNumber=1",  # an instance attribute on a study query
        "PatientID=1&PatientID=2",
    ],
)
def test_hostile_queries_are_400_and_server_keeps_serving(seeded: Seeded, query: str) -> None:
    with seeded.client() as c:
        r = c.get("/studies?" + query)
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert detail and "SYN0" not in detail and "O'Brien" not in detail
        assert c.get("/studies").status_code == 200


def test_invalid_uid_in_path_is_400(seeded: Seeded) -> None:
    with seeded.client() as c:
        assert c.get("/studies/1.2.x/series").status_code == 400


def test_retrieve_url_behind_a_proxy(seeded: Seeded) -> None:
    forwarded = [
        {"Forwarded": 'for=10.0.0.1;proto=https;host="pacs.example.org"'},
        {"X-Forwarded-Host": "pacs.example.org", "X-Forwarded-Proto": "https"},
    ]
    settings = seeded.archive.settings
    with seeded.client() as c:
        # Issue 12: forwarded headers from a client that is not a configured proxy are ignored.
        for headers in forwarded:
            r = c.get("/studies", params={"PatientID": "SYN000001"}, headers=headers)
            assert r.json()[0]["00081190"]["Value"][0].startswith(f"{seeded.server.url}/dicomweb/studies/")
        settings.trusted_proxies = ["127.0.0.0/8"]
        try:
            for headers in forwarded:
                r = c.get("/studies", params={"PatientID": "SYN000001"}, headers=headers)
                url = r.json()[0]["00081190"]["Value"][0]
                assert url.startswith("https://pacs.example.org/dicomweb/studies/")
        finally:
            settings.trusted_proxies = []
        r = c.get("/studies", params={"PatientID": "SYN000001"}, headers={"Host": "archive.example:8443"})
        assert r.json()[0]["00081190"]["Value"][0].startswith("http://archive.example:8443/dicomweb/studies/")
    settings.public_url = "https://imaging.example.org/archive/"
    try:
        with seeded.client() as c:
            r = c.get("/studies", params={"PatientID": "SYN000001"})
        assert r.json()[0]["00081190"]["Value"][0].startswith(
            "https://imaging.example.org/archive/dicomweb/studies/"
        )
    finally:
        settings.public_url = ""


def test_unsupported_matching_key_is_ignored_with_warning(seeded: Seeded) -> None:
    with seeded.client() as c:
        r = c.get("/studies", params={"PatientAge": "040Y", "PatientID": "SYN000001"})
    assert r.status_code == 200 and len(r.json()) == 1
    assert "PatientAge" in r.headers["warning"]


def test_research_partition_is_separate(seeded: Seeded) -> None:
    root = f"{seeded.server.url}/projects/lung/dicomweb"
    found = uids(seeded.dicomweb_client("researcher", root).search_for_studies())
    assert found == {seeded.studies["project"]}
    study = seeded.dicomweb_client("researcher", root).search_for_studies()[0]
    assert "/projects/lung/dicomweb/studies/" in study["00081190"]["Value"][0]
