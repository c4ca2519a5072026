"""The web pages over HTTP, without a browser: who may open which page, how a page answers someone signed
out (the login, or for htmx an `HX-Redirect`), the security headers, and that each form does what the REST
API does — validated, audited, refused from another origin."""

from __future__ import annotations

import hashlib
import html
import io
import re
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from dicomweb.ui.home import STATIC
from dicomweb.ui.render import CSP
from imaging import audit
from imaging.access.tokens import list_tokens
from imaging.app import build_runner
from imaging.federation.keys import public_key_pem
from imaging.federation.models import QueryLog
from imaging.federation.peers import list_peers as list_federation_peers
from imaging.index.schema import Job, Study
from imaging.jobs.stability import mark_stable
from imaging.observability.health import listener_check
from imaging.research.cohorts import save_cohort
from imaging.research.exports import CohortExport
from imaging.research.projects import create_project
from imaging.sharing import outbox, peers
from imaging.sharing.models import OutboxRow, OutboxStatus
from tests.conftest import free_port
from tests.dicomweb.conftest import add_token
from tests.federation.conftest import PROJECT as NET
from tests.federation.conftest import PROJECT_KEY, Spec, federate, load
from tests.federation.conftest import Site as FederatedSite
from tests.ui.conftest import PROJECT, Site, ingest_study, start_site

PAGES = {
    "/ui/worklist": "clinician",
    "/ui/projects": "researcher",
    f"/ui/projects/{PROJECT}": "researcher",
    "/ui/operations": "admin",
    "/ui/sharing/peers": "admin",
    "/ui/federation": "admin",
    "/ui/sharing/outbox": "clinician",
    "/ui/consent": "admin",
    "/ui/audit": "admin",
    "/ui/tokens": "admin",
}
HTML = {"Accept": "text/html"}
HTMX = {"HX-Request": "true", "Accept": "text/html"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = start_site(tmp_path_factory.mktemp("ui") / "data", share_max_attempts=2, triage_enabled=False)
    yield s
    s.stop()


def test_each_page_opens_for_its_role_and_admin_and_refuses_others(shared: Site) -> None:
    for path, role in PAGES.items():
        for who in {role, "admin"}:
            with shared.client(who, headers=HTML) as c:
                answer = c.get(path)
            assert answer.status_code == 200, (who, path, answer.text[:300])
            assert answer.headers["content-security-policy"] == CSP
            assert answer.headers["cache-control"] == "no-store"
            assert '<html lang="en">' in answer.text and '<main id="main"' in answer.text
    with shared.client("researcher", headers=HTML) as c:
        for path in (
            "/ui/worklist",
            "/ui/operations",
            "/ui/tokens",
            "/ui/consent",
            "/ui/audit",
            "/ui/sharing/peers",
            "/ui/federation",
        ):
            refused = c.get(path)
            assert refused.status_code == 403 and "Not allowed" in refused.text, path
    with shared.client("clinician", headers=HTML) as c:
        assert c.get(f"/ui/projects/{PROJECT}").status_code == 403  # project data is the researchers'
        assert c.get("/ui/tokens").status_code == 403
        assert c.get("/ui/federation").status_code == 403
    with shared.client("ingest", headers=HTML) as c:
        assert c.get("/ui/worklist").status_code == 403


def test_signed_out_goes_to_the_login_and_comes_back(shared: Site) -> None:
    with shared.client(None) as c:
        page = c.get("/ui/worklist?priority=HIGH", headers=HTML)
        assert page.status_code == 303
        assert page.headers["location"] == "/login?next=%2Fui%2Fworklist%3Fpriority%3DHIGH"
        fragment = c.get(
            "/ui/worklist/rows", headers={**HTMX, "HX-Current-URL": f"{shared.url}/ui/worklist?modality=CT"}
        )
        assert fragment.status_code == 401
        assert fragment.headers["hx-redirect"] == "/login?next=%2Fui%2Fworklist%3Fmodality%3DCT"
        assert c.get("/ui/worklist").status_code == 401  # an API client: the API's answer
        start = c.get("/ui")
        assert start.status_code == 303 and start.headers["location"] == "/login?next=%2Fui"
    browser = shared.browser_client("researcher")
    assert browser.get("/ui").headers["location"] == "/ui/projects"
    assert shared.browser_client("clinician").get("/ui").headers["location"] == "/ui/worklist"
    ingest = shared.browser_client("ingest").get("/ui")
    assert ingest.status_code == 200 and "no pages here" in ingest.text


def test_static_files_only_the_listed_ones(shared: Site) -> None:
    with shared.client(None) as c:
        js = c.get("/ui/static/htmx.min.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert c.get("/ui/static/ui.css").status_code == 200
        for name in ("VENDORED.md", "htmx.LICENSE", "..%2Frender.py", "missing.js"):
            assert c.get(f"/ui/static/{name}").status_code == 404


def test_a_change_from_another_site_is_refused(shared: Site) -> None:
    browser = shared.browser_client("admin")
    forged = browser.post(
        "/ui/tokens", data={"role": "admin", "expires": "1d"}, headers={"Origin": "https://evil.example"}
    )
    assert forged.status_code == 403
    with shared.archive.db.read() as session:
        assert not [t for t in list_tokens(session) if t.role == "admin" and t.expires_at is not None]


def test_token_created_shown_once_and_revoked_from_the_pages(shared: Site) -> None:
    browser = shared.browser_client("admin")
    created = browser.post(
        "/ui/tokens", data={"role": "clinician", "description": "reading room 3", "expires": "30d"}
    )
    assert created.status_code == 200
    token = re.search(r'<code class="secret" id="new-token">([^<]+)</code>', created.text)
    assert token is not None
    assert token.group(1) not in browser.get("/ui/tokens").text  # shown once
    with httpx.Client(base_url=shared.url, headers={"Authorization": f"Bearer {token.group(1)}"}) as api:
        assert api.get("/api/worklist").status_code == 200
        with shared.archive.db.read() as session:
            token_id = next(t.token_pk for t in list_tokens(session) if t.description == "reading room 3")
        revoked = browser.post(f"/ui/tokens/{token_id}/revoke", headers={"HX-Request": "true"})
        assert revoked.status_code == 200 and f"Token {token_id} revoked." in revoked.text
        assert api.get("/api/worklist").status_code == 401
    bad = browser.post("/ui/tokens", data={"role": "researcher", "project": "", "expires": "30d"})
    assert bad.status_code == 400 and "needs a project" in bad.text
    with shared.archive.db.read() as session:
        trail = audit.query(session, event=audit.AuditEvent.SECURITY_ALERT, source=f"token:{token_id}")
    assert [r.action for r in trail] == ["C", "U"] and all(r.user.endswith(":admin") for r in trail)


def test_worklist_rows_answer_204_until_something_changes(shared: Site) -> None:
    with shared.client("clinician", headers=HTMX) as c:
        first = c.get("/ui/worklist/rows")
        token = re.search(r"since=([0-9.]+)", first.text)
        assert first.status_code == 200 and token is not None
        assert c.get("/ui/worklist/rows", params={"since": token.group(1)}).status_code == 204
        uid = ingest_study(shared.archive, 7, description="CT NEW ARRIVAL")
        changed = c.get("/ui/worklist/rows", params={"since": token.group(1)})
        assert changed.status_code == 200 and uid in changed.text and "CT NEW ARRIVAL" in changed.text
        assert c.get("/ui/worklist/rows", params={"modality": "MR"}).text.count("data-study=") == 0
        refused = c.get("/ui/worklist/rows", params={"date_from": "2024-13-45"})
        assert refused.status_code == 400
    shared.server.flush_audit()
    with shared.archive.db.read() as session:
        queries = audit.query(session, event=audit.AuditEvent.QUERY, user=shared.user("clinician"))
    assert any(r.detail.startswith("worklist page") for r in queries)


def test_cohort_preview_save_export_and_progress(shared: Site) -> None:
    browser = shared.browser_client("researcher")
    count = browser.get(f"/ui/projects/{PROJECT}/preview", params={"Modality": "CT"}, headers=HTMX)
    figures = [
        int(n) for n in re.findall(r"<strong>(\d+)</strong> <span>(?:studies|series|instances)", count.text)
    ]
    assert figures == [3, 3, 9]
    assert count.text.count('<img src="/projects/lung/dicomweb/studies/') == 3
    none = browser.get(f"/ui/projects/{PROJECT}/preview", params={"Modality": "MR"}, headers=HTMX)
    assert "<strong>0</strong> <span>studies" in none.text
    half_typed = browser.get(
        f"/ui/projects/{PROJECT}/preview", params={"date_from": "2024-01-02", "Modality": "C*"}
    )
    assert "<strong>2</strong> <span>studies" in half_typed.text
    saved = browser.post(
        f"/ui/projects/{PROJECT}/cohorts", data={"name": "early", "Modality": "CT", "date_to": "2024-01-02"}
    )
    assert saved.status_code == 303 and saved.headers["location"].startswith(
        f"/ui/projects/{PROJECT}?saved=early"
    )
    invalid = browser.post(f"/ui/projects/{PROJECT}/cohorts", data={"name": "bad name!"})
    assert invalid.status_code == 400 and "invalid cohort name" in invalid.text
    started = browser.post(f"/ui/projects/{PROJECT}/cohorts/early/exports", headers={"HX-Request": "true"})
    export_id = int(re.search(r"zip\?export=(\d+)", started.text).group(1))  # type: ignore[union-attr]
    assert "Starting the download" in started.text
    # The hidden frame's download, as the browser makes it with the session cookie.
    archive_bytes = browser.get(
        f"/projects/{PROJECT}/cohorts/early/zip", params={"export": export_id}
    ).content
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as zf:
        names = zf.namelist()
    assert names[0] == "manifest.json" and len([n for n in names if n.endswith(".dcm")]) == 6
    progress = browser.get(f"/ui/projects/{PROJECT}/exports/{export_id}", headers=HTMX)
    assert "Done: 2 series" in progress.text and "hx-trigger" not in progress.text  # polling stops
    again = browser.get(f"/projects/{PROJECT}/cohorts/early/zip", params={"export": export_id})
    assert again.status_code == 409  # a prepared export starts once
    with shared.client("admin") as admin:  # someone else's export is not theirs to fill or watch
        assert admin.get(f"/projects/{PROJECT}/exports/{export_id}").status_code == 404
    page = browser.get(f"/ui/projects/{PROJECT}")
    assert "Audit trail of your exports" in page.text and "cohort early: 2 series" in page.text


def test_peer_add_test_edit_and_outbox_retry(shared: Site, tmp_path: Path) -> None:
    remote = start_site(tmp_path / "peer", studies=0)
    try:
        browser = shared.browser_client("admin")
        form = {
            "name": "site-b",
            "kind": "dicomweb",
            "url": f"{remote.url}/dicomweb",
            "auth": "bearer",
            "secret": "not-the-token",
            "timeout": "10",
            "tls_verify": "true",
            "enabled": "true",
        }
        added = browser.post("/ui/sharing/peers", data=form)
        assert added.status_code == 303
        refused = browser.post("/ui/sharing/peers/site-b/test", headers={"HX-Request": "true"})
        assert "failed" in refused.text and "HTTP 401" in refused.text
        duplicate = browser.post("/ui/sharing/peers", data=form)
        assert duplicate.status_code == 409
        # Deliveries fail with the wrong credentials until the outbox gives up on them.
        source = _clinical_study(shared)
        with shared.archive.db.write() as session:
            mark_stable(session, 0, set())
        outbox.share_study(shared.archive, source, ["site-b"], project=PROJECT, user="test")
        _fail_all(shared, "site-b")
        listing = browser.get("/ui/sharing/outbox", params={"status": "failed"})
        assert "Retry failed" in listing.text and source in listing.text
        edit = {k: v for k, v in form.items() if k != "name"} | {"secret": remote.tokens["clinician"]}
        assert browser.post("/ui/sharing/peers/site-b", data=edit).status_code == 303
        ok = browser.post("/ui/sharing/peers/site-b/test", headers={"HX-Request": "true"})
        assert "reachable" in ok.text and "QIDO-RS HTTP" in ok.text
        with shared.archive.db.read() as session:
            assert peers.peer_secret(shared.archive, "site-b") == remote.tokens["clinician"]
            assert "secret" not in peers.peer_info(peers.get_peer(session, "site-b"))
        retried = browser.post(
            "/ui/sharing/outbox/retry", data={"peer": "site-b"}, headers={"HX-Request": "true"}
        )
        assert retried.status_code == 200 and "3 failed instances queued again." in retried.text
        with shared.archive.db.read() as session:
            statuses = set(session.scalars(select(OutboxRow.status).where(OutboxRow.peer == "site-b")))
        assert statuses == {OutboxStatus.PENDING.value}
        with shared.client("clinician") as clinician:  # sees the outbox, may not retry
            assert clinician.post("/ui/sharing/outbox/retry", data={"peer": "site-b"}).status_code == 403
        policy = browser.post(
            "/ui/sharing/policies",
            data={
                "name": "mr-to-b",
                "modalities": "mr",
                "peers": ["site-b"],
                "project": PROJECT,
                "enabled": "true",
            },
        )
        assert policy.status_code == 303
        page = browser.get("/ui/sharing/policies/mr-to-b")
        assert 'value="MR"' in page.text and 'value="site-b" checked' in page.text
        unknown_peer = browser.post(
            "/ui/sharing/policies/mr-to-b", data={"peers": ["nowhere"], "enabled": "true"}
        )
        assert unknown_peer.status_code == 400
    finally:
        remote.stop()


def _clinical_study(site: Site) -> str:
    with site.archive.db.read() as session:
        return str(
            session.scalars(select(Study.StudyInstanceUID).where(Study.partition == "clinical")).first()
        )


def _fail_all(site: Site, peer: str) -> None:
    """Run the delivery jobs until the outbox marks every row of the peer failed (share_max_attempts)."""
    runner = build_runner(site.archive, kinds=[outbox.JOB_KIND])
    for _ in range(200):
        with site.archive.db.write() as session:  # no waiting for the back-off in a test
            for job in session.scalars(select(Job).where(Job.status == "pending")):
                job.next_attempt_at = job.created_at
        runner.tick()
        with site.archive.db.read() as session:
            statuses = set(session.scalars(select(OutboxRow.status).where(OutboxRow.peer == peer)))
        if statuses == {OutboxStatus.FAILED.value}:
            return
    raise AssertionError("deliveries did not fail")


def test_consent_forms_record_and_never_echo_identifiers(shared: Site) -> None:
    browser = shared.browser_client("admin")
    patient = {"PatientID": "SYNTH-UI-77", "IssuerOfPatientID": "HOSP"}
    recorded = browser.post("/ui/consent/opt-out", data=patient, headers={"HX-Request": "true"})
    assert "Opt-out recorded" in recorded.text and "SYNTH-UI-77" not in recorded.text
    looked = browser.post("/ui/consent/lookup", data=patient, headers={"HX-Request": "true"})
    assert "has opted out" in looked.text
    csv = io.BytesIO(b"PatientID,IssuerOfPatientID\nSYNTH-UI-78,HOSP\nSYNTH-UI-77,HOSP\n")
    imported = browser.post("/ui/consent/import", files={"csv": ("optouts.csv", csv, "text/csv")})
    assert imported.status_code == 200 and "1 new opt-outs imported." in imported.text
    not_csv = browser.post(
        "/ui/consent/import", files={"csv": ("x.csv", io.BytesIO(b"\xff\xfe\x00"), "text/csv")}
    )
    assert not_csv.status_code == 400
    erased = browser.post("/ui/consent/erasure", data=patient, headers={"HX-Request": "true"})
    number = re.search(r"Erasure request (\d+) recorded", erased.text)
    assert number is not None and "SYNTH-UI-77" not in erased.text
    page = browser.get("/ui/consent")
    assert "SYNTH-UI-77" not in page.text and f'<td class="num">{number.group(1)}</td>' in page.text
    with shared.archive.db.read() as session:
        trail = audit.query(session, event=audit.AuditEvent.PATIENT_RECORD)
    assert len(trail) >= 3 and not any("SYNTH-UI-77" in r.detail + r.patient_ref for r in trail)


def test_audit_search_newest_first_and_itself_audited(shared: Site) -> None:
    browser = shared.browser_client("admin")
    page = browser.get("/ui/audit", params={"event": "110114"})
    ids = [int(i) for i in re.findall(r'<td class="num">(\d+)</td>\s*<td>', page.text)]
    assert ids and ids == sorted(ids, reverse=True)
    assert browser.get("/ui/audit", params={"event": "999999"}).status_code == 400
    assert browser.get("/ui/audit", params={"since": "yesterday"}).status_code == 400
    shared.server.flush_audit()
    with shared.archive.db.read() as session:
        used = audit.query(session, event=audit.AuditEvent.AUDIT_LOG_USED)
    assert any("event=110114" in r.detail for r in used)


def test_operations_health_and_charts(shared: Site) -> None:
    with shared.client("admin", headers=HTML) as c:
        page = c.get("/ui/operations").text
    assert re.search(r"<th scope=\"row\">index</th><td><span class=\"badge status-ok\">ok</span>", page)
    assert 'role="img" aria-labelledby="per-day-title per-day-desc"' in page
    assert f'<th scope="row">{PROJECT}</th>' in page and '<th scope="row">clinical</th>' in page
    assert page.count('<rect class="bar"') == 30 + 2  # a bar per day, one per partition


def test_operations_page_shows_readiness_as_health_reports_it(shared: Site) -> None:
    readiness = shared.server.app.state.readiness
    # As `imaging serve` adds it: the DICOM listener, here on a port nothing listens on.
    readiness.add("dimse", listener_check("127.0.0.1", free_port()))
    try:
        with shared.client("admin", headers=HTML) as c:
            page = c.get("/ui/operations").text
            health = c.get("/health")
    finally:
        del readiness.checks["dimse"]
    assert health.status_code == 503 and health.json()["components"]["dimse"]["ready"] is False
    assert '<span class="badge status-down">not ready</span>' in page
    readiness_table = page.split('id="readiness"', 1)[1].split('id="durable-state"', 1)[0]
    assert re.search(
        r'<th scope="row">dimse</th><td><span class="badge status-down">down</span></td>'
        r"<td>ConnectionRefusedError</td>",
        readiness_table,
    )
    assert re.search(r'<th scope="row">storage</th><td><span class="badge status-ok">ok</span></td>'
                     r"<td>backend filesystem, [0-9.]+ [kMGT]?B free</td>", readiness_table)  # fmt: skip
    # The durable-state checks stay beside it.
    assert '<th scope="row">sharing outbox</th>' in page.split('id="durable-state"', 1)[1]
    with shared.client("admin", headers=HTML) as c:
        assert '<span class="badge status-ok">ready</span>' in c.get("/ui/operations").text


def test_federation_pages_refuse_other_projects_and_roles(shared: Site) -> None:
    create_project(shared.archive, "other")
    stranger = add_token(shared.archive, "researcher", "other")
    base = f"/ui/projects/{PROJECT}/federation"
    uid = "00000000-0000-4000-8000-000000000000"
    for token in (stranger, shared.tokens["clinician"], shared.tokens["ingest"]):
        headers = {"Authorization": f"Bearer {token}", **HTMX}
        with httpx.Client(base_url=shared.url, headers=headers) as c:
            assert c.post(f"{base}/counts", data={"Modality": "CT"}).status_code == 403
            assert c.post(f"{base}/requests", data={"peer": "a", "definition": "{}"}).status_code == 403
            assert c.post(f"{base}/requests/{uid}/refresh").status_code == 403
            assert c.get("/ui/federation").status_code == 403
            assert c.post("/ui/federation/incoming/" + uid + "/approve").status_code == 403
    with shared.archive.db.read() as session:
        assert session.scalar(select(QueryLog.query_pk)) is None  # nothing was counted
    with shared.client("researcher", headers=HTML) as c:
        page = c.get(f"/ui/projects/{PROJECT}").text
        assert "Count at every site" in page and "Access requests sent" in page
        assert 'href="/ui/federation"' not in page  # not in a researcher's navigation
        # This site alone (no peer): its count goes through the same disclosure control.
        alone = c.post(f"{base}/counts", data={"Modality": "CT"}, headers=HTMX)
        assert alone.status_code == 200 and 'data-site="local"' in alone.text
        assert "&lt; 5" in alone.text  # three clinical studies: a small cell
        invalid = c.post(f"{base}/counts", data={"Modality": "CT", "age_min": "70", "age_max": "50"})
        assert invalid.status_code == 200 and "age_min is above age_max" in invalid.text
    with shared.client("admin", headers=HTML) as c:
        assert 'href="/ui/federation"' in c.get("/ui/operations").text


def _pages(site: FederatedSite, role: str) -> httpx.Client:
    """A client of a federated site's pages with a role's token (researcher tokens are made on first use)."""
    site.http(role).close()
    headers = {"Authorization": f"Bearer {site.tokens[role]}", **HTMX}
    return httpx.Client(base_url=site.server.url, headers=headers, timeout=60)


def _row(page: str, attribute: str, value: str) -> str:
    """The table row of a page whose `data-<attribute>` is `value`."""
    found = re.search(rf'<tr data-{attribute}="{re.escape(value)}">(.*?)</tr>', page, re.S)
    assert found is not None, (value, page[:2000])
    return found.group(1)


def _cells(row: str) -> list[str]:
    return re.findall(r'<td class="num">([^<]*(?:<abbr[^>]*>[^<]*</abbr>)?)</td>', row)


@pytest.mark.slow
def test_federated_counts_request_approve_deliver_and_discovery_off_from_the_pages(
    make_site: Callable[..., FederatedSite],
) -> None:
    a, b = make_site("a"), make_site("b")
    federate(a, b)
    for site in (a, b):
        create_project(site.archive, NET, key=PROJECT_KEY)
    load(a, [*(Spec(n) for n in range(1, 7)), Spec(40, "MR", "HEAD")])
    load(b, [Spec(50), Spec(51)])
    # A delivers approved cohorts to B's project STOW root (which de-identifies on receive).
    peers.add_peer(
        a.archive, "b-net", "dicomweb", url=f"{b.server.url}/projects/{NET}/dicomweb", auth="bearer",
        secret=b.tokens["admin"],
    )  # fmt: skip
    base = f"/ui/projects/{NET}/federation"
    with _pages(b, "researcher") as researcher, _pages(a, "admin") as admin_a:
        # Count at every site: A releases its six CT chest studies, B's two are a small cell.
        counted = researcher.post(f"{base}/counts", data={"Modality": "CT", "BodyPartExamined": "CHEST"})
        assert counted.status_code == 200, counted.text
        assert _cells(_row(counted.text, "site", "a")) == ["6", "6"]
        local = _row(counted.text, "site", "local")
        assert "suppressed" in local and "6" not in _cells(local)
        assert [re.sub(r"<[^>]+>", "", c) for c in _cells(local)] == ["&lt; 5", "&lt; 5"]
        mr = researcher.post(f"{base}/counts", data={"Modality": "MR"})
        assert "suppressed" in _row(mr.text, "site", "a")  # one MR study at A: never a number

        # Request access at A, with the definition the counts were for.
        definition = re.search(r'name="definition" value="([^"]+)"', counted.text)
        assert definition is not None
        sent = researcher.post(
            f"{base}/requests",
            data={"peer": "a", "definition": html.unescape(definition.group(1)), "purpose": "nodule study"},
        )
        assert sent.status_code == 200 and sent.headers["hx-retarget"] == "#requests"
        assert "Access request sent to a: pending." in sent.text
        uid = re.search(r'<tr data-request="([0-9a-f-]+)">', sent.text).group(1)  # type: ignore[union-attr]

        # A's operator sees it arrive and approves it, delivering to B's project root.
        page = admin_a.get("/ui/federation").text
        incoming = _row(page, "request", uid)
        assert "site-b" in incoming and "nodule study" in incoming and "status-pending" in incoming
        assert "BodyPartExamined=CHEST, Modality=CT" in incoming
        approved = admin_a.post(f"/ui/federation/incoming/{uid}/approve", data={"deliver_to": "b-net"})
        assert approved.status_code == 200 and approved.headers["hx-retarget"] == "#incoming"
        assert "6 studies to b-net" in _row(approved.text, "request", uid)
        again = admin_a.post(f"/ui/federation/incoming/{uid}/approve", data={"deliver_to": "b-net"})
        assert again.status_code == 409 and "approved already" in again.text

        # B's researcher follows it until A's outbox has delivered every instance.
        def delivered() -> bool:
            checked = researcher.post(f"{base}/requests/{uid}/refresh")
            return "status-delivered" in _row(checked.text, "request", uid)

        a.drive(delivered)
        row = _row(researcher.get(f"/ui/projects/{NET}").text, "request", uid)
        assert "approved" in row and "6 studies" in row and "12 verified" in row
        assert "status-delivered" in _row(admin_a.get("/ui/federation").text, "request", uid)

        # A second request is rejected with a reason, which B's researcher is told.
        second = researcher.post(f"{base}/requests", data={"peer": "a", "definition": '{"filters":{}}'})
        other = re.findall(r'<tr data-request="([0-9a-f-]+)">', second.text)
        assert len(other) == 2 and other[1] == uid
        rejected = admin_a.post(
            f"/ui/federation/incoming/{other[0]}/reject", data={"reason": "no ethics approval"}
        )
        assert rejected.status_code == 200 and "no ethics approval" in _row(
            rejected.text, "request", other[0]
        )
        told = researcher.post(f"{base}/requests/{other[0]}/refresh")
        assert "status-rejected" in _row(told.text, "request", other[0])
        assert "no ethics approval" in _row(told.text, "request", other[0])

        # A's operator switches discovery off for B from the edit form: B's next count is refused.
        form = {"site_id": "site-b", "url": b.server.url, "requests": "true", "ask": "true"}
        switched = admin_a.post("/ui/federation/peers/b", data=form, follow_redirects=False)
        assert switched.status_code == 303
        assert '<strong class="switch-discovery">off</strong>' in _row(
            admin_a.get("/ui/federation").text, "peer", "b"
        )
        refused = researcher.post(f"{base}/counts", data={"Modality": "CT", "BodyPartExamined": "CHEST"})
        row = _row(refused.text, "site", "a")
        assert "status-refused" in row and "discovery is switched off" in row and _cells(row) == ["—", "—"]

    with a.archive.db.read() as session:
        (peer_b,) = [p for p in list_federation_peers(session) if p.name == "b"]
        refusals = audit.query(session, event=audit.AuditEvent.QUERY, user="site:site-b")
        alerts = [r.detail for r in audit.query(session, event=audit.AuditEvent.SECURITY_ALERT)]
    assert (peer_b.discovery, peer_b.requests, peer_b.ask, peer_b.url) == (False, True, True, b.server.url)
    assert "refused (discovery is switched off for this site)" in refusals[-1].detail
    assert any("federation peer b set: " in d and "discovery off, requests on" in d for d in alerts)
    assert any("approved: 6 studies to peer b-net" in d for d in alerts)


def test_peer_sites_added_tested_and_removed_from_the_page(make_site: Callable[..., FederatedSite]) -> None:
    a, b = make_site("a"), make_site("b")
    with _pages(a, "admin") as admin:
        page = admin.get("/ui/federation").text
        assert "site-a" in page and public_key_pem(a.archive.settings).strip() in html.unescape(page)
        form = {
            "name": "b",
            "site_id": "site-b",
            "url": b.server.url,
            "public_key": public_key_pem(b.archive.settings),
            "discovery": "true",
            "ask": "true",
            "description": "university hospital B",
        }
        bad = admin.post("/ui/federation/peers", data={**form, "public_key": "not a key"})
        assert bad.status_code == 400 and "not a PEM public key" in bad.text
        assert admin.post("/ui/federation/peers", data=form).status_code == 303
        assert admin.post("/ui/federation/peers", data=form).status_code == 409  # adding never overwrites
        row = _row(admin.get("/ui/federation").text, "peer", "b")
        assert '<strong class="switch-requests">off</strong>' in row and "university hospital B" in row
        # B does not know A yet: the signed call is refused; once B registers A, it is accepted.
        refused = admin.post("/ui/federation/peers/b/test")
        assert "failed" in refused.text and "HTTP 401" in refused.text
        federate(b, a)
        accepted = admin.post("/ui/federation/peers/b/test")
        assert "accepted" in accepted.text and "<code>site-b</code>" in accepted.text
        # The edit form keeps the key when its field is left blank.
        edit = {k: v for k, v in form.items() if k not in ("name", "public_key")}
        assert admin.post("/ui/federation/peers/b", data=edit, follow_redirects=False).status_code == 303
        assert "accepted" in admin.post("/ui/federation/peers/b/test").text
        removed = admin.post("/ui/federation/peers/b/remove")
        assert removed.status_code == 204 and removed.headers["hx-redirect"].startswith("/ui/federation")
        assert admin.get("/ui/federation/peers/b").status_code == 404
    with a.archive.db.read() as session:
        assert list_federation_peers(session) == []


def test_vendored_htmx_is_the_recorded_file() -> None:
    digest = hashlib.sha256((STATIC / "htmx.min.js").read_bytes()).hexdigest()
    assert digest == "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
    assert (
        "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
        in (STATIC / "VENDORED.md").read_text()
    )
    assert (STATIC / "htmx.LICENSE").read_text().startswith("Zero-Clause BSD")
    axe = Path(__file__).parent / "vendor" / "axe.min.js"
    assert hashlib.sha256(axe.read_bytes()).hexdigest() == (
        "29348999450cdf2849a8e70b7912fc2da85a849da39c0d0d5394f51d4a9ed95c"
    )


def test_export_rows_for_rest_and_interrupted_streams(shared: Site) -> None:
    save_cohort(shared.archive, PROJECT, "all", {})
    with shared.client("researcher") as c, c.stream("GET", f"/projects/{PROJECT}/cohorts/all/zip") as stream:
        for _ in stream.iter_bytes(1024):
            break  # the client goes away after the first chunk
    with shared.client("researcher") as c:
        for _ in range(50):
            exports = c.get(f"/projects/{PROJECT}/exports").json()
            if exports[0]["status"] != "streaming":
                break
            time.sleep(0.1)
        assert exports[0]["status"] == "interrupted" and exports[0]["series"][1] == 3
        resumed = c.get(f"/projects/{PROJECT}/cohorts/all/zip", params={"start_after": _first_series(shared)})
        assert resumed.status_code == 200
        newest = c.get(f"/projects/{PROJECT}/exports").json()[0]
        assert newest["status"] == "complete" and newest["series"] == [2, 2]
        trail = c.get(f"/projects/{PROJECT}/export-audit").json()
        assert trail[0]["event_id"] == "110106" and "resumed after" in trail[0]["detail"]
    with shared.archive.db.read() as session:
        rows = session.scalars(select(CohortExport).where(CohortExport.cohort == "all")).all()
    assert {r.user for r in rows} == {shared.user("researcher")}


def _first_series(site: Site) -> str:
    with site.client("researcher") as c:
        manifest = c.get(f"/projects/{PROJECT}/cohorts/all/manifest").json()
    return str(manifest["series"][0]["SeriesInstanceUID"])
