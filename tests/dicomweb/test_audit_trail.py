"""Issue 12: every DICOMweb access to identified data is in the audit trail with the authenticated user, the
client's address, the study and the outcome — QIDO (Query, with the query), WADO (metadata: Instances
Accessed; instances, frames: Instances Transferred), STOW (Transferred, Create) — and a refused credential
is recorded as a failed User Authentication."""

from __future__ import annotations

import httpx

from imaging import audit
from tests.dicomweb.conftest import Seeded, encode
from tests.dicomweb.test_stow import body, study


def _records(s: Seeded, user: str) -> list[audit.AuditRecord]:
    s.server.flush_audit()
    with s.archive.db.read() as session:
        return [r for r in audit.query(session, limit=100000) if r.user == user]


def test_dicomweb_accesses_are_audited(fresh) -> None:
    s = fresh()
    user = "token:1:admin"
    datasets = study(3)
    with s.client() as c:
        stored = c.post(
            "/studies",
            content=body([encode(d) for d in datasets]),
            headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=b0undary'},
        )
        assert stored.status_code == 200
        uid = datasets[0].StudyInstanceUID
        series, sop = datasets[0].SeriesInstanceUID, datasets[0].SOPInstanceUID
        assert c.get("/studies", params={"PatientName": "SYNTH*"}).status_code == 200
        assert c.get(f"/studies/{uid}/series/{series}/metadata").status_code == 200
        for _ in range(5):
            frames = c.get(
                f"/studies/{uid}/series/{series}/instances/{sop}/frames/1",
                headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
            )
            assert frames.status_code == 200
        assert c.get("/studies/1.2.3.4/metadata").status_code == 404
    rows = _records(s, user)
    by_detail = {r.detail.split(" of ")[0].split("?")[0].split(":")[0]: r for r in rows if r.outcome == "0"}
    assert set(by_detail) >= {"STOW-RS", "QIDO-RS studies", "WADO-RS metadata", "WADO-RS frames"}
    stow = by_detail["STOW-RS"]
    assert (stow.event_id, stow.action, stow.StudyInstanceUID) == ("110104", "C", uid)
    assert "3 of 3 instances stored" in stow.detail
    query = by_detail["QIDO-RS studies"]
    assert (query.event_id, query.action) == ("110112", "E") and "PatientName=SYNTH" in query.detail
    metadata = by_detail["WADO-RS metadata"]
    assert (metadata.event_id, metadata.StudyInstanceUID, metadata.outcome) == ("110103", uid, "0")
    frames = [r for r in rows if r.detail.startswith("WADO-RS frames")]
    assert {f.event_id for f in frames} == {"110104"} and 1 <= len(frames) <= 5  # coalesced
    assert all(r.access_point == "127.0.0.1" and r.partition == "clinical" for r in rows)
    missing = [r for r in rows if r.StudyInstanceUID == "1.2.3.4"]
    assert [m.outcome for m in missing] == ["4"]  # a 404 is a minor failure


def test_client_address_behind_a_trusted_proxy(fresh) -> None:
    s = fresh(trusted_proxies=["127.0.0.1/32"])
    with s.client() as c:
        c.get("/studies", headers={"X-Forwarded-For": "198.51.100.7, 127.0.0.1"})
        c.get("/series", headers={"Forwarded": 'for="[2001:db8::5]:4711";proto=https'})
    rows = _records(s, "token:1:admin")
    assert {r.access_point for r in rows} == {"198.51.100.7", "2001:db8::5"}
    t = fresh()
    with t.client() as c:  # no trusted proxy: the header is the client's word only, ignored
        c.get("/studies", headers={"X-Forwarded-For": "198.51.100.7"})
    assert {r.access_point for r in _records(t, "token:1:admin")} == {"127.0.0.1"}


def test_refused_credentials_are_audited_once_a_minute(fresh) -> None:
    s = fresh()
    for _ in range(3):
        assert (
            httpx.get(f"{s.server.root}/studies", headers={"Authorization": "Bearer wrong"}).status_code
            == 401
        )
    (failure,) = _records(s, "unknown")
    assert (failure.event_id, failure.outcome, failure.event_type) == ("110114", "4", "110122")
    assert "wrong" not in failure.detail
