"""Access requests between three archives on loopback. Site B's researcher asks A and C for a cohort for
project `net` (whose key the three sites exchanged out of band); A's administrator approves over REST and
the cohort arrives de-identified at B's project STOW root through A's sharing outbox, with exactly the
pseudonyms a direct share under the same key gives; C's administrator rejects at the command line and
nothing leaves C. Approval is refused when the local project's key or profile differs."""

from __future__ import annotations

import json
from collections.abc import Callable
from io import BytesIO
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from sqlalchemy import func, select
from typer.testing import CliRunner

from imaging import audit
from imaging.cli import app
from imaging.federation.criteria import definition
from imaging.federation.keys import public_key_pem
from imaging.federation.models import IncomingRequest, TokenUse
from imaging.federation.peers import set_peer
from imaging.index.schema import Instance, Patient, Series, Study
from imaging.ingest.partitions import deidentifier_for
from imaging.research.projects import create_project
from imaging.sharing.models import OutboxRow
from imaging.sharing.outbox import share_study
from imaging.sharing.peers import add_peer
from imaging.synthetic import ct_series, synthetic_patient
from tests.federation.conftest import PROJECT, PROJECT_KEY, Site, Spec, federate, load

CT_CHEST = {"filters": {"Modality": "CT", "BodyPartExamined": "CHEST"}}


def stored(site: Site, partition: str) -> dict[str, Dataset]:
    """SOPInstanceUID → the stored object, for every instance of a partition."""
    with site.archive.db.read() as session:
        keys = session.execute(
            select(Instance.SOPInstanceUID, Instance.object_key)
            .join(Series, Series.series_pk == Instance.series_pk)
            .join(Study, Study.study_pk == Series.study_pk)
            .where(Study.partition == partition)
        ).all()
    return {sop: dcmread(BytesIO(site.archive.store.read(key))) for sop, key in keys}


def outbox_rows(site: Site) -> int:
    with site.archive.db.read() as session:
        return int(session.scalar(select(func.count()).select_from(OutboxRow)) or 0)


def request_status(site: Site, request_uid: str) -> dict[str, Any]:
    with site.http("researcher") as http:
        r = http.get(f"/api/federation/requests/{request_uid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.slow
def test_approved_request_delivers_with_direct_share_pseudonyms_rejected_delivers_nothing(
    make_site: Callable[..., Site], monkeypatch: Any
) -> None:
    a, b, c = make_site("a"), make_site("b"), make_site("c")
    federate(a, b, c)
    for site in (a, b, c):
        create_project(site.archive, PROJECT, key=PROJECT_KEY)
    load(a, [*(Spec(n) for n in range(1, 7)), Spec(40, "MR", "HEAD"), Spec(43, opted_out=True)])
    load(c, [Spec(n) for n in range(70, 76)])
    # A delivers to B's project STOW root (de-identifies on receive) and, for the comparison, to B's
    # clinical root (stores what it gets as it is).
    for name, root in (("b-net", f"/projects/{PROJECT}/dicomweb"), ("b-direct", "/dicomweb")):
        add_peer(
            a.archive, name, "dicomweb", url=b.server.url + root, auth="bearer", secret=b.tokens["admin"]
        )
    add_peer(c.archive, "b-net", "dicomweb", url=f"{b.server.url}/projects/{PROJECT}/dicomweb")

    # B's researcher asks A and C.
    sent = {}
    with b.http("researcher") as http:
        for holder in ("a", "c"):
            body = {"peer": holder, "project": PROJECT, "definition": CT_CHEST, "purpose": "nodule follow-up"}
            r = http.post("/api/federation/requests", json=body)
            assert r.status_code == 202, r.text
            assert (r.json()["status"], r.json()["last_error"]) == ("pending", "")
            sent[holder] = r.json()["request_uid"]

    # A's administrator sees it, approves it; the cohort is frozen as it matches now.
    with a.http() as http:
        (pending,) = http.get("/api/federation/incoming", params={"status": "pending"}).json()
        assert (pending["request_uid"], pending["site_id"], pending["project"]) == (
            sent["a"],
            "site-b",
            PROJECT,
        )
        assert pending["definition"] == CT_CHEST and pending["purpose"] == "nodule follow-up"
        r = http.post(f"/api/federation/incoming/{sent['a']}/approve", json={"deliver_to": "b-net"})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "approved" and r.json()["delivery"]["studies"] == 6  # not 43 (opted out)
        again = http.post(f"/api/federation/incoming/{sent['a']}/approve", json={"deliver_to": "b-net"})
        assert again.status_code == 409
    assert request_status(b, sent["a"])["delivery"]["state"] == "delivering"
    a.drive(lambda: request_status(b, sent["a"])["delivery"]["state"] == "delivered")
    status = request_status(b, sent["a"])
    assert status["status"] == "approved" and status["delivery"] == {
        "studies": 6,
        "instances": {"verified": 12},
        "state": "delivered",
    }

    # What arrived at B's project is A's cohort, de-identified with the project's key, once.
    deid = deidentifier_for(a.archive.db, a.archive.settings.keys_path, PROJECT)
    cohort = [s for s in a.specs if s.matches(definition(CT_CHEST))]
    with b.archive.db.read() as session:
        studies = set(session.scalars(select(Study.StudyInstanceUID).where(Study.partition == PROJECT)))
        patients = set(session.scalars(select(Patient.PatientID).where(Patient.partition == PROJECT)))
    assert studies == {deid.uid_for(a.studies[s]) for s in cohort}
    assert patients == {deid.pseudonym_for(synthetic_patient(s.patient).PatientID) for s in cohort}
    received = stored(b, PROJECT)
    assert len(received) == 12
    for ds in received.values():
        assert ds.PatientIdentityRemoved == "YES"
        seals = [v for v in ds.DeidentificationMethod if str(v).startswith("seal ")]
        assert len(seals) == 1 and deid.is_sealed(ds)  # de-identified once, not again on receive
        assert not str(ds.PatientName).startswith("SYNTH")

    # A direct share of one study under the same key gives the very same objects.
    first = a.studies[Spec(1)]
    share_study(a.archive, first, ["b-direct"], project=PROJECT, user="test")
    a.drive(lambda: len(stored(b, "clinical")) == 2)
    direct = stored(b, "clinical")
    for sop, ds in direct.items():
        assert ds == received[sop]  # every element: UIDs, pseudonym, shifted dates, seal
    assert {str(ds.StudyInstanceUID) for ds in direct.values()} == {deid.uid_for(first)}

    # C's administrator rejects at the command line: nothing leaves C, B learns why.
    monkeypatch.setenv("IMAGING_FEDERATION_SITE_ID", "site-c")
    data = ["--data-dir", str(c.archive.settings.data_dir)]
    cli = CliRunner()
    r = cli.invoke(app, ["federation", "incoming", "list", "--status", "pending", *data])
    assert r.exit_code == 0 and sent["c"] in r.stdout
    r = cli.invoke(
        app, ["federation", "incoming", "reject", sent["c"], "--reason", "no ethics approval", *data]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["status"] == "rejected"
    c.drive(lambda: True)
    status = request_status(b, sent["c"])
    assert (status["status"], status["reason"], status["delivery"]) == ("rejected", "no ethics approval", {})
    assert outbox_rows(c) == 0
    with b.archive.db.read() as session:
        assert (
            set(session.scalars(select(Study.StudyInstanceUID).where(Study.partition == PROJECT))) == studies
        )
    r = cli.invoke(app, ["federation", "incoming", "approve", sent["c"], "--deliver-to", "b-net", *data])
    assert r.exit_code == 1 and "rejected already" in r.output

    # Each holder audited the request as a query by B, and its decision.
    for holder, decision in ((a, "approved: 6 studies to peer b-net"), (c, "rejected")):
        with holder.archive.db.read() as session:
            queries = audit.query(session, event=audit.AuditEvent.QUERY, user="site:site-b")
            alerts = [r.detail for r in audit.query(session, event=audit.AuditEvent.SECURITY_ALERT)]
        assert any("received, pending approval" in q.detail for q in queries)
        assert any("110135" in d and decision in d for d in alerts)


def test_approval_needs_the_same_key_and_profile(make_site: Callable[..., Site]) -> None:
    a, b = make_site("a"), make_site("b")
    federate(a, b)
    create_project(b.archive, PROJECT, key=PROJECT_KEY)
    create_project(a.archive, PROJECT, key=bytes(32 * [7]))  # another key under the same name
    create_project(a.archive, "net-clean", key=PROJECT_KEY, options=["CLEAN_DESCRIPTORS"])
    create_project(a.archive, "net-same", key=PROJECT_KEY)
    load(a, [Spec(n) for n in range(1, 6)])
    add_peer(a.archive, "b-net", "dicomweb", url=f"{b.server.url}/projects/{PROJECT}/dicomweb")
    with b.http("researcher") as http:
        uid = http.post("/api/federation/requests", json={"peer": "a", "project": PROJECT}).json()[
            "request_uid"
        ]
        # A researcher asks for their own project only.
        other = http.post("/api/federation/requests", json={"peer": "a", "project": "elsewhere"})
        assert other.status_code == 403
    with a.http() as http:
        path = f"/api/federation/incoming/{uid}/approve"
        r = http.post(path, json={"deliver_to": "b-net"})
        assert r.status_code == 409 and "another key" in r.json()["detail"]
        r = http.post(path, json={"deliver_to": "b-net", "project": "net-clean"})
        assert r.status_code == 409 and "de-identified twice" in r.json()["detail"]
        assert http.post(path, json={"project": "net-same"}).status_code == 400  # no delivery peer
        assert http.post(path, json={"deliver_to": "nowhere", "project": "net-same"}).status_code == 404
        # The site's default delivery peer is used when the approval names none.
        assert http.put("/api/federation/peers/b", json={"delivery_peer": "b-net"}).status_code == 200
        r = http.post(path, json={"project": "net-same"})
        assert r.status_code == 200 and r.json()["delivery"]["studies"] == 5
    with a.archive.db.read() as session:
        row = session.scalars(select(IncomingRequest)).one()
    assert (row.local_project, row.deliver_to, row.decided_by) == ("net-same", "b-net", "token:1:admin")

    # Why the profile must match: a Deidentifier with the same key but another profile does not
    # recognise the seal and de-identifies the copy again, under pseudonyms of pseudonyms.
    same = deidentifier_for(a.archive.db, a.archive.settings.keys_path, "net-same")
    clean = deidentifier_for(a.archive.db, a.archive.settings.keys_path, "net-clean")
    once = same.deidentify(next(ct_series(count=1, rows=16, columns=16))).dataset
    assert once is not None
    assert same.deidentify(once).dataset == once
    twice = clean.deidentify(once).dataset
    assert twice is not None and twice.StudyInstanceUID != once.StudyInstanceUID

    # Requests from a site can be switched off: refused (403) and audited.
    with a.http() as http:
        assert http.put("/api/federation/peers/b", json={"requests": False}).status_code == 200
    with b.http("researcher") as http:
        r = http.post("/api/federation/requests", json={"peer": "a", "project": PROJECT})
    assert r.status_code == 202 and r.json()["status"] == "unsent"
    assert "access requests from this site are switched off" in r.json()["last_error"]
    with a.archive.db.read() as session:
        queries = audit.query(session, event=audit.AuditEvent.QUERY, user="site:site-b")
    assert "refused (requests off)" in queries[-1].detail and queries[-1].outcome == "4"


def test_on_each_index_backend(db_url: str, make_site: Callable[..., Site]) -> None:
    """The whole path on SQLite and PostgreSQL: one archive federated with itself (its own peer)."""
    a = make_site("a")
    set_peer(
        a.archive,
        "self",
        site_id=a.site_id,
        url=a.server.url,
        public_key=public_key_pem(a.archive.settings),
        delivery_peer="own-net",
    )
    create_project(a.archive, PROJECT, key=PROJECT_KEY)
    load(a, [*(Spec(n) for n in range(1, 7)), Spec(43, opted_out=True)])
    add_peer(
        a.archive,
        "own-net",
        "dicomweb",
        url=f"{a.server.url}/projects/{PROJECT}/dicomweb",
        auth="bearer",
        secret=a.tokens["admin"],
    )
    with a.http("researcher") as http:
        r = http.post("/api/federation/counts", json={"definition": CT_CHEST, "peers": ["self"]})
        rows = {row["name"]: row for row in r.json()["sites"]}
        assert (rows["local"]["studies"], rows["self"]["studies"]) == (6, 6)
        sent = http.post("/api/federation/requests", json={"peer": "self", "project": PROJECT})
        uid = sent.json()["request_uid"]
    with a.http() as http:
        approved = http.post(f"/api/federation/incoming/{uid}/approve", json={})
        assert approved.json()["delivery"]["studies"] == 6
    a.drive(lambda: request_status(a, uid)["delivery"].get("state") == "delivered")
    with a.archive.db.read() as session:
        assert session.scalar(select(func.count()).select_from(Study).where(Study.partition == PROJECT)) == 6
        # One token per call (a count, the request, each status refresh), each used once.
        assert session.scalar(select(func.count()).select_from(TokenUse)) >= 3
