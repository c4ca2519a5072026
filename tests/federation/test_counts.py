"""Federated counts between three archives on loopback: every site's answer equals its local count (and
what its generated data says it should be), small cells are suppressed, differencing is suppressed, a
site with discovery off for a peer refuses and audits it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from imaging import audit
from imaging.cli import app
from imaging.federation.criteria import definition
from imaging.federation.models import QueryLog
from tests.federation.conftest import Site, Spec, federate, load

# Ages at 2024-03-15 of synthetic patients: n=1 → 83, 20 → 62, 30 → 51, 40 → 40 (synthetic_patient).
SITE_A = [
    *(Spec(n) for n in range(1, 7)),  # CT CHEST, six patients of 83..77
    *(Spec(n) for n in range(20, 26)),  # CT CHEST, six patients of 62..56
    Spec(30, priority="HIGH", diameters=(4.0, 8.5)),
    Spec(31, priority="HIGH", diameters=(12.0,)),
    Spec(32, priority="MEDIUM", diameters=(3.0,)),
    Spec(33, priority="HIGH", diameters=(9.0, 2.0, 7.0)),
    Spec(34, priority="HIGH", diameters=(6.5,)),
    Spec(35, priority="HIGH", diameters=(15.0,)),
    Spec(36, priority="LOW"),
    Spec(40, "MR", "HEAD"),
    Spec(41, "MR", "HEAD"),
    Spec(42, body_part="ABDOMEN"),
    Spec(43, opted_out=True),  # never counted: the patient opted out
    Spec(44, stable=False),  # never counted: still receiving
    Spec(45, study_date="20200110"),
]
SITE_B = [*(Spec(n) for n in range(50, 58)), Spec(60, body_part="ABDOMEN"), Spec(61, "MR", "HEAD")]
SITE_C = [Spec(70), Spec(71), Spec(72), *(Spec(n, "MR", "HEAD") for n in range(80, 86))]

DEFINITIONS: list[dict[str, Any]] = [
    {"filters": {"Modality": "CT", "BodyPartExamined": "CHEST"}},
    {"filters": {"Modality": "CT", "BodyPartExamined": "CHEST", "PatientSex": "F"}},
    {"filters": {"Modality": "CT", "StudyDate": "20240101-20241231"}, "age_min": 50, "age_max": 70},
    {"filters": {"Modality": "CT"}, "min_priority": "HIGH", "min_diameter_mm": 8.0},
    {"filters": {"Modality": "CT"}, "min_priority": "MEDIUM", "min_findings": 1},
    {"filters": {"Modality": "MR"}},
]


def three_sites(make_site: Callable[..., Site], **settings: Any) -> tuple[Site, Site, Site]:
    a, b, c = make_site("a", **settings), make_site("b", **settings), make_site("c", **settings)
    federate(a, b, c)
    for site, specs in ((a, SITE_A), (b, SITE_B), (c, SITE_C)):
        load(site, specs)
    return a, b, c


@pytest.mark.slow
def test_federated_counts_match_each_sites_local_count(make_site: Callable[..., Site]) -> None:
    # Differencing control is tested on its own below: these definitions overlap on purpose.
    a, b, c = three_sites(make_site, federation_difference_hours=0)
    sites = {"local": a, "b": b, "c": c}
    seen_suppressed = 0
    with a.http("researcher") as http:
        for body in DEFINITIONS:
            cohort = definition(body)
            r = http.post("/api/federation/counts", json={"definition": body})
            assert r.status_code == 200, r.text
            rows = {row["name"]: row for row in r.json()["sites"]}
            assert set(rows) == {"local", "b", "c"}
            released = 0
            for name, site in sites.items():
                row, expected = rows[name], site.expected(cohort)
                assert site.local_count(cohort) == expected, (name, body)
                assert row["site"] == site.site_id
                if min(expected) >= 5:
                    assert row["status"] == "answered", (name, body, row)
                    assert (row["studies"], row["patients"]) == expected
                    released += expected[0]
                else:  # a small cell: said to be suppressed, no number at all
                    assert row == {
                        "name": name,
                        "site": site.site_id,
                        "status": "suppressed",
                        "studies": None,
                        "patients": None,
                        "threshold": 5,
                        "reason": "small cell",
                    }
                    seen_suppressed += 1
            assert r.json()["total"]["studies"] == released
    assert seen_suppressed >= 4  # the data exercises both outcomes at every site
    assert a.expected(definition(DEFINITIONS[3])) == (4, 4)  # a small cell only findings reach

    # Each site audited every query it answered: the peer as the user, the definition as the detail.
    for site in (b, c):
        with site.archive.db.read() as session:
            records = audit.query(session, event=audit.AuditEvent.QUERY, user="site:site-a")
        assert len(records) == len(DEFINITIONS)
        assert records[0].detail.startswith(f"federated count {definition(DEFINITIONS[0]).canonical()}")
        assert all(not r.patient_ref and not r.StudyInstanceUID for r in records)
        for spec in site.specs:  # no patient identifier in the trail
            assert all(f"SYN{spec.patient:06d}" not in r.detail for r in records)


def test_differencing_is_suppressed_across_requesters(make_site: Callable[..., Site]) -> None:
    a, b, c = make_site("a"), make_site("b"), make_site("c")
    federate(a, b, c)
    # Eight CT CHEST patients at B; one study is a day later than the others.
    load(b, [Spec(50, study_date="20240316"), *(Spec(n) for n in range(51, 58))])
    everything = {"filters": {"Modality": "CT", "BodyPartExamined": "CHEST"}}
    minus_one = {"filters": {**everything["filters"], "StudyDate": "-20240315"}}

    def ask(site: Site, body: dict[str, Any]) -> dict[str, Any]:
        with site.http("researcher") as http:
            r = http.post("/api/federation/counts", json={"definition": body, "peers": ["b"], "local": False})
        assert r.status_code == 200, r.text
        (row,) = r.json()["sites"]
        return dict(row)

    first = ask(a, everything)
    assert (first["status"], first["studies"]) == ("answered", 8)
    second = ask(c, minus_one)  # another requester: 8 - 7 would single out one patient
    assert (second["status"], second["studies"]) == ("suppressed", None)
    assert second["reason"] == "differs from a recently released count by a small cell"
    assert b.local_count(definition(minus_one)) == (7, 7)  # a count that is not small in itself
    again = ask(a, everything)  # the same set again reveals nothing new
    assert (again["status"], again["studies"]) == ("answered", 8)
    with b.archive.db.read() as session:
        logged = session.scalars(select(QueryLog).order_by(QueryLog.query_pk)).all()
    assert [(q.requester, q.outcome, q.studies) for q in logged] == [
        ("site:site-a", "answered", 8),
        ("site:site-c", "suppressed", 7),
        ("site:site-a", "answered", 8),
    ]
    assert logged[1].members == b""  # only released counts keep their members


def test_discovery_off_refuses_and_audits(make_site: Callable[..., Site]) -> None:
    a, b, c = make_site("a"), make_site("b"), make_site("c")
    federate(a, b, c)
    load(a, [Spec(n) for n in range(1, 6)])
    load(b, [Spec(n) for n in range(50, 58)])
    load(c, [Spec(70)])
    with b.http() as http:
        r = http.put("/api/federation/peers/a", json={"discovery": False})
        assert r.status_code == 200 and r.json()["discovery"] is False
    body = {"filters": {"Modality": "CT", "BodyPartExamined": "CHEST"}}
    with a.http("researcher") as http:
        rows = {
            row["name"]: row
            for row in http.post("/api/federation/counts", json={"definition": body}).json()["sites"]
        }
    assert rows["b"]["status"] == "refused" and rows["b"]["studies"] is None
    assert "discovery is switched off" in rows["b"]["reason"]
    assert rows["local"]["studies"] == a.expected(definition(body))[0] == 5
    assert rows["c"]["status"] == "suppressed"
    with b.archive.db.read() as session:
        (refused,) = audit.query(session, event=audit.AuditEvent.QUERY, user="site:site-a")
        (switch,) = [
            r for r in audit.query(session, event=audit.AuditEvent.SECURITY_ALERT) if "discovery" in r.detail
        ]
        logged = session.scalars(select(QueryLog)).one()
    assert refused.outcome == "4" and "refused (discovery is switched off" in refused.detail
    assert definition(body).canonical() in refused.detail
    assert "110128" in switch.detail
    assert (logged.outcome, logged.studies, logged.members) == ("refused", 0, b"")
    # C still answers A; B still answers C.
    with c.http("researcher") as http:
        rows = {
            r["name"]: r
            for r in http.post("/api/federation/counts", json={"definition": body}).json()["sites"]
        }
    assert (rows["b"]["status"], rows["b"]["studies"]) == ("answered", 8)


def test_rounding_and_validation(make_site: Callable[..., Site]) -> None:
    a, b, _ = make_site("a"), make_site("b", federation_count_rounding=5, federation_difference_hours=0), None
    federate(a, b)
    load(b, [Spec(n) for n in range(50, 58)])
    with a.http("researcher") as http:
        r = http.post(
            "/api/federation/counts", json={"definition": {"filters": {"Modality": "CT"}}, "local": False}
        )
        assert r.json()["sites"][0]["studies"] == 10  # 8 rounded to a multiple of 5
        for bad in (
            {"filters": {"PatientID": "SYN000050"}},  # not a cohort key: patients are never selected by id
            {"filters": {"StudyDate": "2024-xx"}},
            {"age_min": 70, "age_max": 50},
            {"min_priority": "URGENT"},
            {"unknown": 1},
        ):
            r = http.post("/api/federation/counts", json={"definition": bad})
            assert r.status_code == 400 and "invalid cohort definition" in r.json()["detail"], bad
    with a.http("clinician") as http:  # counts are for researchers and administrators
        assert http.post("/api/federation/counts", json={}).status_code == 403


def test_cli_count_and_peers(make_site: Callable[..., Site], monkeypatch: Any) -> None:
    a, b = make_site("a"), make_site("b")
    federate(a, b)
    load(b, [Spec(n) for n in range(50, 58)])
    load(a, [Spec(n) for n in range(1, 4)])
    monkeypatch.setenv("IMAGING_FEDERATION_SITE_ID", "site-a")
    data = ["--data-dir", str(a.archive.settings.data_dir)]
    cli = CliRunner()
    r = cli.invoke(app, ["federation", "count", "--filter", "Modality=CT", "--json", *data])
    assert r.exit_code == 0, r.output
    rows = {row["name"]: row for row in json.loads(r.stdout)["sites"]}
    assert (rows["local"]["status"], rows["local"]["studies"]) == ("suppressed", None)
    assert (rows["b"]["status"], rows["b"]["studies"]) == ("answered", 8)
    r = cli.invoke(app, ["federation", "count", "--filter", "Modality=CT", "--here-only", *data])
    assert json.loads(r.stdout)["studies"] == 3  # the operator's exact count; nothing asked
    r = cli.invoke(app, ["federation", "peer", "test", "b", *data])
    assert r.exit_code == 0 and json.loads(r.stdout) == {"peer": "b", "site": "site-b", "ok": True}
    # B switches discovery off for A at its command line; A's next count is refused there.
    monkeypatch.setenv("IMAGING_FEDERATION_SITE_ID", "site-b")
    r = cli.invoke(
        app, ["federation", "peer", "discovery", "a", "off", "--data-dir", str(b.archive.settings.data_dir)]
    )
    assert r.exit_code == 0, r.output
    monkeypatch.setenv("IMAGING_FEDERATION_SITE_ID", "site-a")
    r = cli.invoke(app, ["federation", "count", "--sex", "F", *data])
    assert r.exit_code == 0 and "refused" in r.stdout and "suppressed" in r.stdout
    r = cli.invoke(app, ["federation", "count", "--age", "x-y", *data])
    assert r.exit_code == 1 and "--age takes a band" in r.output
