"""Share links (scoped, expiring, revocable, hashed), policy rules, peer configuration and the audit
export — the logic without a network."""

from __future__ import annotations

import datetime as dt
import json
import stat
from xml.etree import ElementTree as ET

import pytest
from sqlalchemy import select

from imaging import audit
from imaging.archive import Archive
from imaging.errors import NotFound
from imaging.index.schema import Study
from imaging.jobs.runner import JobRunner
from imaging.research.projects import create_project
from imaging.research.publication import publish_study
from imaging.sharing import links
from imaging.sharing.models import Peer, ShareLink
from imaging.sharing.peers import add_peer, get_peer, peer_info, peer_secret
from imaging.sharing.policies import add_policy, matches
from tests.sharing.conftest import ingest_study


def test_share_link_resolves_until_revoked_or_expired(site_a: Archive) -> None:
    one = ingest_study(site_a, 1, series=1, count=1)
    two = ingest_study(site_a, 2, series=1, count=1)
    token, link = links.create_link(
        site_a, study_uids=[one.StudyInstanceUID], created_by="dr", expires_in=dt.timedelta(hours=1)
    )
    with site_a.db.read() as s:
        scope = links.resolve(s, token)
        stored = s.scalars(select(ShareLink.token_hash)).all()
    assert scope is not None and scope.study_uids == {one.StudyInstanceUID} and scope.partition == "clinical"
    assert scope.allows(one.StudyInstanceUID) and not scope.allows(two.StudyInstanceUID)
    assert token not in stored and len(stored[0]) == 64  # only the hash is kept
    with site_a.db.read() as s:
        assert links.resolve(s, token + "x") is None
        assert links.resolve(s, "not-a-link") is None
        assert links.resolve(s, token, now=link.expires_at) is None  # expired at the instant it expires

    with site_a.db.write() as s:
        assert links.revoke(s, link.link_pk, user="dr")
        assert not links.revoke(s, link.link_pk, user="dr")
    with site_a.db.read() as s:
        assert links.resolve(s, token) is None  # at once: nothing cached
        alerts = audit.query(s, event=audit.AuditEvent.SECURITY_ALERT)
    assert [a.action for a in alerts] == ["C", "U"] and all(token not in a.detail for a in alerts)

    with pytest.raises(ValueError):
        links.create_link(site_a, study_uids=[one.StudyInstanceUID], expires_in=dt.timedelta(days=91))
    with pytest.raises(ValueError):
        links.create_link(site_a, study_uids=[])
    with pytest.raises(NotFound):
        links.create_link(site_a, study_uids=["1.2.3.4.5"])


def test_share_link_for_a_cohort_snapshot(site_a: Archive) -> None:
    from imaging.research.cohorts import save_cohort

    create_project(site_a, "cohort-proj")
    studies = [ingest_study(site_a, n, series=1, count=1) for n in (3, 4)]
    for st in studies:
        publish_study(site_a, "cohort-proj", st.StudyInstanceUID)
    save_cohort(site_a, "cohort-proj", "all", {})
    token, link = links.create_link(site_a, cohort=("cohort-proj", "all"))
    with site_a.db.read() as s:
        scope = links.resolve(s, token)
        deid_uids = set(s.scalars(select(Study.StudyInstanceUID).where(Study.partition == "cohort-proj")))
    assert scope is not None and scope.partition == "cohort-proj" and scope.study_uids == deid_uids
    assert len(deid_uids) == 2 and link.cohort == "all"
    with site_a.db.write() as s:
        links.record_access(s, scope, sorted(deid_uids)[0], what="QIDO series", query=True)
        assert audit.query(s, event=audit.AuditEvent.QUERY)[0].user == f"share-link:{link.link_pk}"


def test_policy_rules(site_a: Archive) -> None:
    add_peer(site_a, "p1", "dicomweb", url="http://127.0.0.1:9/dicomweb")
    create_project(site_a, "proj")
    chest = ingest_study(site_a, 1, series=1, count=1, StudyDescription="CT Thorax w/o contrast")
    rules = {
        "ct": dict(modalities=["ct"]),
        "mr": dict(modalities=["MR"]),
        "chest": dict(body_parts=["chest", "LUNG"]),
        "head": dict(body_parts=["HEAD"]),
        "thorax": dict(description_regex=r"thorax"),
        "high": dict(priorities=["HIGH"]),
        "ct-medium-up": dict(modalities=["CT"], description_regex="^CT", priorities=["HIGH", "MEDIUM"]),
    }
    for name, rule in rules.items():
        add_policy(site_a, name, peers=["p1"], project="proj", **rule)
    with site_a.db.write() as s:
        study = s.scalar(select(Study).where(Study.StudyInstanceUID == chest.StudyInstanceUID))
        from imaging.sharing.models import SharingPolicy

        policies = {p.name: p for p in s.scalars(select(SharingPolicy))}
        hits = {name for name, p in policies.items() if matches(s, p, study)}
        assert hits == {"ct", "chest", "thorax"}
        study.priority = "MEDIUM"
        hits = {name for name, p in policies.items() if matches(s, p, study)}
        assert hits == {"ct", "chest", "thorax", "ct-medium-up"}

    with pytest.raises(ValueError):
        add_policy(site_a, "bad-regex", peers=["p1"], project="proj", description_regex="(")
    with pytest.raises(ValueError):
        add_policy(site_a, "both", peers=["p1"], project="proj", identified=True)
    with pytest.raises(ValueError):
        add_policy(site_a, "neither", peers=["p1"])
    with pytest.raises(ValueError):
        add_policy(site_a, "prio", peers=["p1"], project="proj", priorities=["URGENT"])
    with pytest.raises(NotFound):
        add_policy(site_a, "ghost", peers=["nowhere"], project="proj")
    with pytest.raises(NotFound):
        add_policy(site_a, "ghost", peers=["p1"], project="no-such-project")


def test_policy_waits_for_stability_and_broken_policy_does_not_block(
    site_a: Archive, runner_a: JobRunner
) -> None:
    from imaging.sharing.models import OutboxRow

    add_peer(site_a, "p1", "dicomweb", url="http://127.0.0.1:9/dicomweb")
    create_project(site_a, "proj")
    add_policy(site_a, "all-ct", modalities=["CT"], peers=["p1"], project="proj")
    site_a.settings.stability_seconds = 3600  # nothing becomes stable
    study = ingest_study(site_a, 1, series=1, count=2)
    runner_a.tick()
    with site_a.db.read() as s:
        assert s.scalars(select(OutboxRow)).all() == []
    (site_a.settings.keys_path / "proj.key").unlink()  # the project's key is gone: the policy cannot apply
    site_a.settings.stability_seconds = 0
    runner_a.tick()
    with site_a.db.read() as s:
        assert s.scalars(select(OutboxRow)).all() == []
        assert s.scalar(select(Study.stable).where(Study.StudyInstanceUID == study.StudyInstanceUID))
    create_project(site_a, "proj2")
    add_policy(site_a, "all-ct-2", modalities=["CT"], peers=["p1"], project="proj2")
    later = ingest_study(site_a, 2, series=1, count=2)
    runner_a.tick()
    with site_a.db.read() as s:
        rows = s.scalars(select(OutboxRow)).all()
    assert {r.StudyInstanceUID for r in rows} == {later.StudyInstanceUID}, "the consumer moved on"


def test_peer_configuration_keeps_secrets_apart(site_a: Archive) -> None:
    add_peer(
        site_a,
        "web",
        "dicomweb",
        url="https://127.0.0.1:8443/dicomweb",
        auth="bearer",
        secret="tok-123",
        tls_verify=False,
    )
    add_peer(site_a, "web", "dicomweb", url="https://127.0.0.1:8443/dicomweb", auth="bearer", timeout=10.0)
    path = site_a.settings.keys_path / "peers" / "web.secret"
    assert peer_secret(site_a, "web") == "tok-123" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with site_a.db.read() as s:
        peer = get_peer(s, "web")
        info = peer_info(peer)
        assert s.scalar(select(Peer.timeout)) == 10.0
    assert "tok-123" not in json.dumps(info) and info["tls_verify"] is False
    with pytest.raises(ValueError):
        add_peer(site_a, "dimse", "dimse", host="127.0.0.1")  # no AE title / port
    with pytest.raises(ValueError):
        add_peer(site_a, "bad name!", "dicomweb", url="http://127.0.0.1")
    with pytest.raises(ValueError):
        add_peer(site_a, "x", "ftp", url="http://127.0.0.1")


def test_audit_export_formats(site_a: Archive) -> None:
    with site_a.db.write() as s:
        for i in range(5):
            audit.record(
                s,
                audit.AuditEvent.INSTANCES_TRANSFERRED,
                user="system",
                source="peer:b",
                study_uid=f"1.2.{i}",
                patient_ref="PSEUDO",
            )
        audit.record(s, audit.AuditEvent.QUERY, user="system", action="E", study_uid="1.2.0")
    with site_a.db.read() as s:
        lines = list(audit.export(s, "jsonl", batch=2, event="110104"))
        xml_lines = list(audit.export(s, "xml", study_uid="1.2.0"))
        page = audit.query(s, after_pk=3, limit=2)
        future = audit.query(s, since=dt.datetime(2999, 1, 1))
    assert [json.loads(line)["StudyInstanceUID"] for line in lines] == [f"1.2.{i}" for i in range(5)]
    assert [ET.fromstring(x).find("EventIdentification/EventID").get("csd-code") for x in xml_lines] == [
        "110104",
        "110112",
    ]
    assert [r.audit_pk for r in page] == [4, 5] and future == []
    with pytest.raises(ValueError):
        list(audit.export(s, "csv"))
