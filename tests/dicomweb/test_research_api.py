"""REST beside DICOMweb: the triage worklist and QIDO priority filter, projects and publication,
cohorts with manifest and streamed zip, and share links as read-only DICOMweb roots."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import zipfile
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from imaging.index.schema import Study
from imaging.research.projects import create_project
from imaging.sharing.links import create_link, revoke
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.dicomweb.conftest import Seeded, add_token, encode


def _study(archive: Any, n: int, priority: str = "", count: int = 3) -> str:
    st = SyntheticStudy(patient=synthetic_patient(n), StudyDate=f"2024010{n % 9 + 1}")
    for ds in ct_series(st, count, rows=16, columns=16):
        archive.ingestor.ingest(encode(ds))
    if priority:
        with archive.db.write() as s:
            s.scalar(select(Study).where(Study.StudyInstanceUID == st.StudyInstanceUID)).priority = priority
    return st.StudyInstanceUID


@pytest.fixture
def site(fresh: Any) -> Seeded:
    s = fresh()
    s.tokens["clinician"] = add_token(s.archive, "clinician")
    create_project(s.archive, "other")
    s.tokens["stranger"] = add_token(s.archive, "researcher", "other")
    # Made before its project exists (the index allows what `imaging token create` refuses): a project
    # created later under that name must not open to it.
    s.tokens["early"] = add_token(s.archive, "researcher", "lung")
    return s


def _researcher(site: Seeded) -> None:
    site.tokens["researcher"] = add_token(site.archive, "researcher", "lung")


def _api(site: Seeded, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {site.tokens[token]}"} if token else {}
    return httpx.Client(base_url=site.server.url, headers=headers, timeout=60)


def test_worklist_orders_by_priority_and_qido_filters(site: Seeded) -> None:
    low = _study(site.archive, 1, "LOW")
    high = _study(site.archive, 2, "HIGH")
    untriaged = _study(site.archive, 3)
    medium = _study(site.archive, 4, "MEDIUM")
    create_project(site.archive, "lung")
    _researcher(site)
    with _api(site, "clinician") as api:
        items = api.get("/api/worklist").json()
        assert [i["0020000D"]["Value"][0] for i in items] == [high, medium, low, untriaged]
        assert items[0]["00741200"] == {"vr": "CS", "Value": ["HIGH"]}
        flagged = api.get("/api/worklist", params={"priority": "HIGH,MEDIUM"}).json()
        assert {i["0020000D"]["Value"][0] for i in flagged} == {high, medium}
        assert api.get("/api/worklist", params={"priority": "URGENT"}).status_code == 400
        qido = api.get("/dicomweb/studies", params={"ScheduledProcedureStepPriority": "HIGH"}).json()
        assert [s["0020000D"]["Value"][0] for s in qido] == [high]
        assert qido[0]["00741200"]["Value"] == ["HIGH"]
        assert api.get("/dicomweb/studies", params={"00741200": "SOON"}).status_code == 400
    with _api(site, "researcher") as api:
        assert api.get("/api/worklist").status_code == 403  # clinical data is not for researchers
    with _api(site, None) as api:
        assert api.get("/api/worklist").status_code == 401


def test_projects_publication_cohorts_over_http(site: Seeded) -> None:
    source = _study(site.archive, 5, "HIGH")
    with _api(site, "clinician") as api:
        assert api.post("/api/projects", json={"name": "lung"}).status_code == 403  # admin only
    with _api(site, "admin") as api:
        assert (
            api.post("/api/projects", json={"name": "lung", "options": ["CLEAN_DESCRIPTORS"]}).status_code
            == 201
        )
        assert api.post("/api/projects", json={"name": "Bad Name"}).status_code == 400
        (published,) = api.post("/api/projects/lung/publish", json={"study_uids": [source]}).json()
        assert published["status"] == 200 and published["published"] == 3
        missing = api.post("/api/projects/lung/publish", json={"study_uids": ["1.2.3.4"]}).json()
        assert missing[0]["status"] == 404
    with _api(site, "early") as api:  # older than the project: refused, though it names it
        assert api.get("/projects/lung/dicomweb/studies").status_code == 401
    _researcher(site)
    with _api(site, "researcher") as api:
        # The researcher sees the de-identified copy in their project's DICOMweb root only.
        studies = api.get("/projects/lung/dicomweb/studies").json()
        assert [s["0020000D"]["Value"][0] for s in studies] == [published["StudyInstanceUID"]]
        assert api.get("/dicomweb/studies").status_code == 403
        assert (
            api.put(
                "/projects/lung/cohorts/flagged", json={"filters": {"Modality": "CT"}, "min_priority": "HIGH"}
            ).status_code
            == 200
        )
        assert (
            api.put("/projects/lung/cohorts/bad", json={"filters": {"PatientName": "*"}}).status_code == 400
        )
        manifest = api.get("/projects/lung/cohorts/flagged/manifest").json()
        assert len(manifest["series"]) == 1 and manifest["series"][0]["count"] == 3
        archive = api.get("/projects/lung/cohorts/flagged/zip")
        assert archive.status_code == 200 and archive.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
            listed = json.loads(zf.read("manifest.json"))
            for obj in listed["series"][0]["objects"]:
                name = f"{listed['series'][0]['StudyInstanceUID']}/{listed['series'][0]['SeriesInstanceUID']}/{obj['SOPInstanceUID']}.dcm"
                assert hashlib.sha256(zf.read(name)).hexdigest() == obj["sha256"]
        assert (
            api.get("/projects/lung/cohorts/flagged/zip", params={"start_after": "x;drop"}).status_code == 400
        )
    with _api(site, "stranger") as api:
        assert api.get("/projects/lung/cohorts").status_code == 403


def test_share_link_is_a_scoped_read_only_dicomweb_root(site: Seeded) -> None:
    shared = _study(site.archive, 6)
    private = _study(site.archive, 7)
    token, link = create_link(site.archive, study_uids=[shared], expires_in=dt.timedelta(hours=1))
    root = f"/shares/{token}/dicomweb"
    with _api(site, None) as anonymous:
        studies = anonymous.get(f"{root}/studies").json()
        assert [s["0020000D"]["Value"][0] for s in studies] == [shared]  # the other study is invisible
        assert studies[0]["00081190"]["Value"][0].endswith(f"{root}/studies/{shared}")
        assert anonymous.get(f"{root}/studies/{shared}/metadata").status_code == 200
        assert anonymous.get(f"{root}/studies/{private}/metadata").status_code == 404
        assert anonymous.get(f"{root}/studies/{private}/series").status_code == 404
        retrieved = anonymous.get(
            f"{root}/studies/{shared}", headers={"Accept": 'multipart/related; type="application/dicom"'}
        )
        assert retrieved.status_code == 200 and retrieved.content.count(b"DICM") == 3
        assert anonymous.post(
            f"{root}/studies",
            content=b"x",
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'},
        ).status_code in (404, 405)
        assert anonymous.get("/shares/not-a-token/dicomweb/studies").status_code == 404
        with site.archive.db.write() as s:
            assert revoke(s, link.link_pk)
        assert anonymous.get(f"{root}/studies").status_code == 404  # revoked: stops at once
    from imaging import audit

    site.server.flush_audit()
    with site.archive.db.read() as s:
        accesses = [r for r in audit.query(s) if r.user == f"share-link:{link.link_pk}"]
    assert {r.event_id for r in accesses} >= {"110112", "110103"}
    assert all(token not in (r.detail + r.source) for r in accesses)
