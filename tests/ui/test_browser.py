"""The web interface in Debian's Chromium (playwright-core from npm drives /usr/bin/chromium; tests/ui/driver.js),
against a whole archive on loopback: the DICOM gateway, HTTP, and the job runner with stability, the
reference triage bundle and sharing, as `imaging serve` runs them.

* sign in through the login form (the token never in a URL) and land on the role's page;
* the worklist: a chest CT sent with dcmtk's storescu appears without a reload, is triaged (HIGH, its
  findings and bundle) and moves to the top; one click opens it in the built-in OHIF, which lists the
  CT with the SEG and SR triage filed into the study;
* a researcher builds a cohort (the count follows the typing, thumbnails load), saves it, exports it
  with a progress bar to a zip the browser downloads, and downloads the manifest;
* an administrator adds a peer with a wrong token, sees the test connection fail and deliveries fail,
  fixes the token, sees the test pass, retries the failed delivery and sees it verified at the peer;
* an administrator revokes a clinician's token and the clinician's next page is refused;
* federation (two archives of tests/federation): a researcher counts the cohort at every site and sends
  an access request from the project page; the holding site's operator sees it on the federation page;
* every page passes axe-core (WCAG 2.1 A/AA), never scrolls sideways, and is screenshot at 1280×800 and
  at 768×1024 into test-artifacts/; keyboard focus is always visible.
"""

from __future__ import annotations

import json
import subprocess
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from dicomweb.viewer import fetch_viewer
from imaging.index.schema import Study
from imaging.research.projects import create_project
from imaging.sharing.models import OutboxRow, OutboxStatus
from imaging.synthetic import SyntheticStudy, synthetic_patient
from tests.conftest import require_program
from tests.dicomweb.test_viewer import _prepare_cache
from tests.federation.conftest import PROJECT as NET
from tests.federation.conftest import PROJECT_KEY, Spec, federate, load
from tests.federation.conftest import Site as FederatedSite
from tests.triage.conftest import planted_phantom
from tests.ui.browser import TABLET, Browser, Page
from tests.ui.conftest import PROJECT, Site, start_site
from triage.training.synthetic_series import phantom_series

pytestmark = [pytest.mark.chromium, pytest.mark.dcmtk, pytest.mark.slow]

TRIAGE_SECONDS = 240  # stability (1 s) + the reference bundle on CPU (about 11 s on 2 cores) + margin
CHEST = {"rows": 128, "columns": 128, "count": 60, "pixel_spacing": 2.0, "slice_thickness": 3.0}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_program("/usr/bin/chromium")
    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    require_program("/usr/bin/storescu")
    folder = tmp_path_factory.mktemp("live")
    viewer = fetch_viewer(folder / "viewer", cache=_prepare_cache() / "tarballs")
    s = start_site(
        folder / "data",
        gateway=True,
        jobs=True,
        stability_seconds=1,
        ui_poll_seconds=1,
        viewer_dir=viewer,
        share_max_attempts=2,
        share_retry_base_seconds=0.2,
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = start_site(tmp_path_factory.mktemp("peer") / "data", studies=0)
    yield s
    s.stop()


def sign_in(page: Page, site: Site, token: str, start: str = "/ui") -> dict[str, Any]:
    page.goto(url=site.url + start)
    page.wait(selector="input[name=token]")
    page.fill(selector="input[name=token]", value=token)
    return page.click(selector="button[type=submit]", navigate=True)


def until(what: str, seconds: float, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds} s: {what}")


def test_sign_in_with_a_token_lands_on_the_role_page(browser: Browser, live: Site) -> None:
    page = browser.page("admin")
    first = page.goto(url=live.url + "/ui/worklist")
    assert first["url"].startswith(live.url + "/login?next=")
    page.accessible()
    page.both_widths("login")
    page.fill(selector="input[name=token]", value="not-a-token")
    page.click(selector="button[type=submit]", navigate=True)
    assert "This token is not valid." in page.text_of("main")
    landed = sign_in(page, live, live.tokens["admin"], "/ui/worklist")
    assert landed["url"] == live.url + "/ui/worklist"
    assert live.tokens["admin"] not in landed["url"]
    assert "Triage worklist" in page.text_of("h1")


def _send_chest_ct(site: Site, folder: Path) -> SyntheticStudy:
    study = SyntheticStudy(
        patient=synthetic_patient(4711), StudyDescription="CT CHEST LIVE", StudyDate="20991231"
    )
    folder.mkdir()
    files = []
    for ds in phantom_series(planted_phantom(), study=study, **CHEST):
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(str(path))
    subprocess.run(
        [
            "/usr/bin/storescu",
            "-aec",
            site.archive.settings.ae_title,
            "127.0.0.1",
            str(site.dicom_port),
            *files,
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return study


def _row(study: SyntheticStudy) -> str:
    return f'tr[data-study="{study.StudyInstanceUID}"]'


def test_worklist_updates_live_after_a_cstore_and_orders_by_priority(
    browser: Browser, live: Site, tmp_path: Path
) -> None:
    page = Page(browser, "admin")
    page.goto(url=live.url + "/ui/worklist")
    page.evaluate(expression="window.__notReloaded = true")
    study = _send_chest_ct(live, tmp_path / "chest")
    # It appears without a reload as soon as it is stored (triage pending)...
    page.wait(selector=_row(study), timeout=30000)
    # ...and moves to the top once triaged: HIGH, with its findings and the bundle that made them.
    page.waitText(selector=_row(study), text="HIGH", timeout=TRIAGE_SECONDS * 1000)
    page.waitText(selector=_row(study), text="done", timeout=30000)
    assert page.evaluate(expression="window.__notReloaded === true")["value"] is True
    cells = page.texts(selector=f"{_row(study)} td")["texts"]
    assert cells[0] == "HIGH" and cells[7].startswith("done"), cells
    assert int(cells[4]) >= 1 and cells[5].endswith("mm") and float(cells[5].split()[0]) >= 8.0, cells
    assert cells[6].startswith("0.") or "+" in cells[6], cells  # bundle version + digest
    first = page.attribute(selector="#worklist tbody tr", name="data-study")["value"]
    assert first == study.StudyInstanceUID
    priorities = page.texts(selector="#worklist tbody tr td:first-child")["texts"]
    rank = {"HIGH": 3, "MEDIUM": 2, "LOW": 1, "not set": 0}
    assert [rank[p] for p in priorities] == sorted((rank[p] for p in priorities), reverse=True)
    page.accessible()
    page.both_widths("worklist")
    walk = page.focusWalk(steps=12)["seen"]
    assert walk[0] is not None and walk[0]["text"] == "Skip to content"
    assert all(step is None or step["visibleFocus"] for step in walk), walk
    # The filters: HIGH only keeps it; MR drops it.
    page.goto(url=live.url + "/ui/worklist?priority=HIGH")
    assert page.count(selector=_row(study))["count"] == 1
    page.goto(url=live.url + "/ui/worklist?modality=MR")
    assert page.count(selector=_row(study))["count"] == 0


def test_one_click_opens_the_study_with_seg_and_sr_in_ohif(browser: Browser, live: Site) -> None:
    page = Page(browser, "admin")
    page.goto(url=live.url + "/ui/worklist?priority=HIGH")
    link = "#worklist tbody tr:first-child a[target=_blank]"
    study_uid = page.attribute(selector="#worklist tbody tr:first-child", name="data-study")["value"]
    opened = page.popup(selector=link, name="ohif")
    assert opened["url"].startswith(f"{live.url}/viewer/viewer?StudyInstanceUIDs={study_uid}")
    viewer = Page(browser, "ohif")
    modalities: list[str] = []

    def listed() -> bool:
        nonlocal modalities
        modalities = viewer.texts(selector='[data-cy="series-modality-label"]')["texts"]
        return {"CT", "SEG", "SR"} <= {m.strip() for m in modalities}

    until(f"CT, SEG and SR in the study browser (saw {modalities})", 150, listed)
    viewer.shot("ohif-from-worklist", full_page=False)
    viewer.closePage()


def _figures(page: Page) -> list[int]:
    value = page.evaluate(
        expression="[...document.querySelectorAll('#cohort-count strong')].map(e => e.innerText)"
    )["value"]
    return [int(v) for v in value[:3]]


def test_researcher_builds_saves_and_exports_a_cohort(browser: Browser, live: Site, tmp_path: Path) -> None:
    page = browser.page("researcher")
    landed = sign_in(page, live, live.tokens["researcher"])
    assert landed["url"] == live.url + "/ui/projects"
    page.click(selector=f"a[href='/ui/projects/{PROJECT}']", navigate=True)
    assert _figures(page) == [3, 3, 9]  # everything in the project, before any filter
    page.type(selector="#Modality", value="MR")
    until("the count follows the typing (MR: none)", 15, lambda: _figures(page) == [0, 0, 0])
    page.fill(selector="#Modality", value="")
    page.type(selector="#Modality", value="CT")
    page.fill(selector="#date_from", value="2024-01-02")
    until("the count follows the dates (2 studies)", 15, lambda: _figures(page) == [2, 2, 6])
    loaded = until(
        "the thumbnails load",
        15,
        lambda: (
            page.evaluate(
                expression="[...document.querySelectorAll('.thumbs img')].filter(i => i.complete && i.naturalWidth > 0).length"
            )["value"]
            == 2
        ),
    )
    assert loaded
    page.both_widths("cohort-builder")
    page.fill(selector="#name", value="from-jan-2")
    page.click(selector="#builder button[type=submit]", navigate=True)
    assert "Cohort from-jan-2 saved." in page.text_of(".message.ok")
    # Export: the download starts in a hidden frame, the bar follows it to the end.
    zip_path = tmp_path / "cohort.zip"
    export_button = "#cohorts + .table-wrap tbody tr:first-child form button"
    page.click(selector=export_button)
    download = page.downloadEvent(path=str(zip_path), timeout=60000)
    assert download["failure"] is None and download["name"] == f"{PROJECT}-from-jan-2.zip"
    page.waitText(selector=".export-progress", text="Done: 2 series", timeout=30000)
    value = page.evaluate(
        expression="[document.querySelector('.export-progress progress').value, document.querySelector('.export-progress progress').max]"
    )["value"]
    assert value[0] == value[1] > 0
    page.shot("cohort-export-done")
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
    assert len([n for n in names if n.endswith(".dcm")]) == 6 and len(manifest["series"]) == 2
    saved = page.download(
        selector=f"a[href='/projects/{PROJECT}/cohorts/from-jan-2/manifest']", path=str(tmp_path / "m.json")
    )
    assert json.loads(Path(saved["path"]).read_text())["cohort"] == "from-jan-2"
    page.reload()
    assert "complete" in page.text_of("#exports + .table-wrap tbody tr:first-child")
    audit_row = page.text_of("#audit + .table-wrap tbody tr:first-child")
    assert "Export (110106)" in audit_row and "cohort from-jan-2: 2 series" in audit_row
    page.accessible()


def test_add_a_peer_and_retry_a_failed_delivery(browser: Browser, live: Site, peer: Site) -> None:
    page = Page(browser, "admin")
    page.goto(url=live.url + "/ui/sharing/peers")
    page.fill(selector="#peer-name", value="site-b")
    page.select(selector="#peer-kind", value="dicomweb")
    page.fill(selector="#peer-url", value=f"{peer.url}/dicomweb")
    page.select(selector="#peer-auth", value="bearer")
    page.fill(selector="#peer-secret", value="a-wrong-token")
    page.click(selector="#add-peer + form button[type=submit]", navigate=True)
    assert "Peer site-b saved." in page.text_of(".message.ok")
    page.click(selector="#peers + .table-wrap tbody tr:first-child form button")
    page.waitText(selector="#test-1", text="failed", timeout=30000)
    assert "HTTP 401" in page.text_of("#test-1")
    page.shot("peer-test-failed")
    # A study shared with the peer fails there (refused credentials) until the outbox gives up.
    source = _stable_clinical_study(live)
    with live.client("admin") as api:
        queued = api.post("/api/shares", json={"study_uid": source, "peers": ["site-b"], "project": PROJECT})
    assert queued.status_code == 202, queued.text
    until("the delivery fails", 60, lambda: _statuses(live) == {OutboxStatus.FAILED.value})
    # Fix the token on the peer's page; the test connection passes now.
    page.click(selector="#peers + .table-wrap tbody tr:first-child a", navigate=True)
    page.fill(selector="#peer-secret", value=peer.tokens["clinician"])
    page.click(selector="main form button[type=submit]", navigate=True)
    page.click(selector="#peers + .table-wrap tbody tr:first-child form button")
    page.waitText(selector="#test-1", text="reachable", timeout=30000)
    # The outbox shows the failed delivery; retry it and watch it verified at the peer.
    page.goto(url=live.url + "/ui/sharing/outbox")
    assert "failed" in page.text_of("#outbox")
    page.both_widths("outbox-failed")
    page.click(selector="#outbox form button")
    page.waitText(selector="#outbox", text="failed instances queued again", timeout=30000)
    until("the retried delivery is verified", 60, lambda: _statuses(live) == {OutboxStatus.VERIFIED.value})
    page.goto(url=live.url + "/ui/sharing/outbox")
    assert "verified" in page.text_of("#outbox")
    page.shot("outbox-verified")
    with peer.client("clinician") as remote:
        assert len(remote.get("/dicomweb/studies").json()) == 1


def _stable_clinical_study(site: Site) -> str:
    with site.archive.db.read() as session:
        return str(
            session.scalars(
                select(Study.StudyInstanceUID).where(
                    Study.partition == "clinical",
                    Study.stable.is_(True),
                    Study.StudyDescription == "CT CHEST 0",
                )
            ).one()
        )


def _statuses(site: Site) -> set[str]:
    with site.archive.db.read() as session:
        return set(session.scalars(select(OutboxRow.status).where(OutboxRow.peer == "site-b")))


def test_a_revoked_token_is_refused_at_once(browser: Browser, live: Site) -> None:
    admin = Page(browser, "admin")
    admin.goto(url=live.url + "/ui/tokens")
    admin.select(selector="#role", value="clinician")
    admin.fill(selector="#description", value="reading room 2")
    admin.click(selector="main form.form-grid button[type=submit]", navigate=True)
    token = admin.text_of("#new-token")
    token_id = int(admin.text_of(".message.ok").split()[1])
    clinician = browser.page("clinician")
    assert sign_in(clinician, live, token)["url"] == live.url + "/ui/worklist"
    admin.goto(url=live.url + "/ui/tokens")
    assert token not in admin.text_of("main")  # shown once
    admin.click(selector=f"form[action='/ui/tokens/{token_id}/revoke'] button")
    admin.waitText(selector="#tokens", text=f"Token {token_id} revoked.", timeout=15000)
    admin.shot("token-revoked")
    refused = clinician.reload()
    assert refused["url"].startswith(live.url + "/login?next=%2Fui%2Fworklist"), refused
    with httpx.Client(base_url=live.url, headers={"Authorization": f"Bearer {token}"}) as api:
        assert api.get("/api/worklist").status_code == 401


PAGES = (
    ("admin", "/ui/projects", "projects"),
    ("admin", "/ui/operations", "operations"),
    ("admin", "/ui/sharing/peers", "peers"),
    ("admin", "/ui/sharing/peers/site-b", "peer-edit"),
    ("admin", "/ui/consent", "consent"),
    ("admin", "/ui/audit", "audit"),
    ("admin", "/ui/tokens?all=true", "tokens"),
    ("researcher", f"/ui/projects/{PROJECT}", "project"),
)


def test_every_page_is_accessible_at_desktop_and_tablet_width(browser: Browser, live: Site) -> None:
    for role, path, label in PAGES:
        page = Page(browser, role)
        page.logs()  # forget what earlier tests logged
        page.goto(url=live.url + path)
        assert page.count(selector="main h1")["count"] == 1, path
        page.accessible()
        page.both_widths(label)
        logged = page.logs()["logs"]
        assert logged == [], (path, logged)
    tablet = browser.page("tablet", TABLET)
    sign_in(tablet, live, live.tokens["clinician"])
    tablet.accessible()
    tablet.shot("worklist-clinician-tablet")


def test_federation_count_request_and_operator_page(
    browser: Browser, make_site: Callable[..., FederatedSite]
) -> None:
    a, b = make_site("a"), make_site("b")
    federate(a, b)
    for site in (a, b):
        create_project(site.archive, NET, key=PROJECT_KEY)
    load(a, [Spec(n) for n in range(1, 7)])
    b.http("researcher").close()  # mints B's researcher token
    researcher = browser.page("fed-researcher")
    researcher.goto(url=f"{b.server.url}/login?next=/ui/projects/{NET}")
    researcher.fill(selector="input[name=token]", value=b.tokens["researcher"])
    researcher.click(selector="button[type=submit]", navigate=True)
    researcher.fill(selector="#Modality", value="CT")
    researcher.click(selector="button[formaction$='/federation/counts']")
    researcher.waitText(selector="#federated tr[data-site='a']", text="6", timeout=30000)
    assert "< 5" in researcher.text_of("#federated tr[data-site='local']")  # B has none: suppressed
    researcher.click(selector="#federated tr[data-site='a'] summary")
    researcher.fill(selector="#federated tr[data-site='a'] textarea", value="nodule follow-up")
    researcher.click(selector="#federated tr[data-site='a'] button[type=submit]")
    researcher.waitText(selector="#requests", text="pending", timeout=30000)
    researcher.accessible()
    researcher.both_widths("federation-project")
    assert researcher.logs()["logs"] == []

    operator = browser.page("fed-operator")
    operator.goto(url=f"{a.server.url}/login?next=/ui/federation")
    operator.fill(selector="input[name=token]", value=a.tokens["admin"])
    operator.click(selector="button[type=submit]", navigate=True)
    assert "nodule follow-up" in operator.text_of("#incoming")
    operator.click(selector="tr[data-peer='b'] button.secondary")  # test connection
    operator.waitText(selector="tr[data-peer='b']", text="accepted", timeout=30000)
    operator.accessible()
    operator.both_widths("federation")
    assert operator.logs()["logs"] == []
