"""The built-in OHIF viewer: serving rules with a stand-in dist, `fetch_viewer` with a stand-in npm, and
(marked chromium) the real viewer from the npm registry in headless Chromium against the app."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import httpx
import pytest

from dicomweb.viewer import OHIF_VERSION, fetch_viewer
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient
from tests.conftest import require_program
from tests.dicomweb.conftest import encode

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CACHE = REPO / "build" / "ohif-e2e"
PLAYWRIGHT_CORE = "1.57.0"


def fake_dist(folder: Path) -> None:
    folder.mkdir(parents=True)
    (folder / "index.html").write_text(
        '<html><head><script>window.PUBLIC_URL="/"</script><script src="/app-config.js"></script>'
        '<script defer src="/app.bundle.abc.js"></script><link href="/app.bundle.css" rel="stylesheet"></head></html>'
    )
    (folder / "app.bundle.abc.js").write_text('(() => {\n__webpack_require__.p = "/";\n})();')
    (folder / "app.bundle.css").write_text("body{}")


def test_viewer_not_fetched_is_a_helpful_404(fresh) -> None:
    s = fresh()
    r = httpx.get(f"{s.server.url}/viewer")
    assert r.status_code == 404 and "imaging viewer fetch" in r.text
    # Issue 12: the public page never shows the server's file paths.
    assert str(s.archive.settings.data_dir) not in r.text and "/tmp" not in r.text


def test_viewer_serving_rewrites_base_config_and_spa_fallback(fresh, tmp_path: Path) -> None:
    dist = tmp_path / "viewer"
    fake_dist(dist)
    s = fresh(viewer_dir=dist)
    base = f"{s.server.url}/viewer"
    # Issue 12: no token in any URL. Without a session the viewer's pages send the browser to the login,
    # which takes the token in a form body and answers with an HttpOnly session cookie.
    first = httpx.get(base + "/viewer?StudyInstanceUIDs=1.2.3")
    assert first.status_code == 302
    assert first.headers["location"] == "/login?next=%2Fviewer%2Fviewer%3FStudyInstanceUIDs%3D1.2.3"
    browser = httpx.Client(base_url=s.server.url, follow_redirects=False)
    cross_site = browser.post(
        "/login", data={"token": s.tokens["admin"]}, headers={"Origin": "https://evil.example"}
    )
    assert cross_site.status_code == 403  # another site cannot sign the browser in
    refused = browser.post("/login", data={"token": "not-a-token", "next": "/viewer/"})
    assert refused.status_code == 401 and "imaging_session" not in refused.headers.get("set-cookie", "")
    login = browser.post("/login", data={"token": s.tokens["admin"], "next": "https://evil.example/"})
    assert login.status_code == 303 and login.headers["location"] == "/viewer/"  # never off-site
    cookie = login.headers["set-cookie"]
    assert "imaging_session=" in cookie and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    index = browser.get(base + "/")
    assert index.status_code == 200
    assert 'window.PUBLIC_URL="/viewer/"' in index.text and 'src="/viewer/app-config.js"' in index.text
    assert index.headers["cross-origin-opener-policy"] == "same-origin"
    assert httpx.get(base + "/app.bundle.abc.js").text.count('"/viewer/"') == 1
    config = httpx.get(base + "/app-config.js").text
    assert "routerBasename: '/viewer'" in config and "'/dicomweb'" in config
    assert "token" not in config.lower() and "URLSearchParams" not in config
    assert browser.get(base + "/viewer?StudyInstanceUIDs=1.2.3").text == index.text  # SPA route
    # The session cookie opens DICOMweb for the viewer (same origin)...
    assert browser.get("/dicomweb/studies").status_code == 200
    # ...but does not let another site's page change anything (CSRF): a POST needs this server's Origin.
    stow = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=b'}
    foreign = browser.post(
        "/dicomweb/studies", content=b"--b--", headers={**stow, "Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    own = browser.post("/dicomweb/studies", content=b"--b--", headers={**stow, "Origin": s.server.url})
    assert own.status_code == 400  # authenticated; the body itself is refused
    assert browser.post("/logout").status_code == 303
    assert browser.get("/dicomweb/studies").status_code == 401
    assert httpx.get(base + "/missing.js").status_code == 404
    assert httpx.get(base + "/../index.sqlite").status_code == 404
    assert httpx.get(base + "/app.bundle.css").text == "body{}"


def test_fetch_viewer_unpacks_dist_only(tmp_path: Path) -> None:
    """`fetch_viewer` with a stand-in `npm` that writes a tarball like the registry's."""
    package = tmp_path / "src" / "package"
    fake_dist(package / "dist")
    (package / "package.json").write_text(json.dumps({"name": "@ohif/app", "version": OHIF_VERSION}))
    tarball = tmp_path / f"ohif-app-{OHIF_VERSION}.tgz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(package, arcname="package")
    npm = tmp_path / "npm"
    npm.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\ncp {tarball} .\n')
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)
    dest = fetch_viewer(tmp_path / "data" / "viewer", npm=str(npm))
    assert (dest / "index.html").is_file() and not (dest / "package.json").exists()
    assert (tmp_path / "args").read_text().split()[:2] == ["pack", f"@ohif/app@{OHIF_VERSION}"]
    fetch_viewer(dest, npm=str(npm))  # again: replaced in place
    assert (dest / ".ohif-version").read_text() == OHIF_VERSION


E2E_SCRIPT = r"""
const { chromium } = require('playwright-core');
(async () => {
  const [base, studyUID, out, profile, token] = process.argv.slice(2);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium', headless: true, viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] || await context.newPage();
  const log = [];
  page.on('console', m => log.push(`console ${m.type()}: ${m.text()}`));
  page.on('requestfailed', r => log.push(`failed: ${r.url()}`));
  page.on('response', r => { if (r.status() >= 400) log.push(`HTTP ${r.status()}: ${r.url()}`); });
  const result = { ok: false, urls: [] };
  page.on('framenavigated', f => { if (f === page.mainFrame()) result.urls.push(f.url()); });
  try {
    // Signed out, the viewer sends the browser to the login form; the token goes in its body only.
    await page.goto(base + '/viewer', { waitUntil: 'load', timeout: 120000 });
    result.loginPage = page.url().startsWith(base + '/login');
    await page.fill('input[name=token]', token);
    await Promise.all([page.waitForNavigation({ timeout: 120000 }), page.click('button[type=submit]')]);
    await page.waitForFunction(u => document.body.innerText.includes(u), 'SYNTH0042', { timeout: 120000 });
    result.studyList = true;
    await page.screenshot({ path: out + '/ohif-study-list.png' });
    await page.goto(base + '/viewer/viewer?StudyInstanceUIDs=' + studyUID, { waitUntil: 'load', timeout: 120000 });
    const deadline = Date.now() + 150000;
    while (Date.now() < deadline) {
      const stats = await page.evaluate(() => {
        const canvases = [...document.querySelectorAll('canvas')].filter(c => c.width > 100 && c.height > 100);
        let best = 0;
        for (const c of canvases) {
          try {
            const probe = document.createElement('canvas');
            probe.width = 64; probe.height = 64;
            const ctx = probe.getContext('2d');
            ctx.drawImage(c, 0, 0, 64, 64);
            const d = ctx.getImageData(0, 0, 64, 64).data;
            let lit = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] + d[i + 1] + d[i + 2] > 60) lit++;
            best = Math.max(best, lit);
          } catch (e) {}
        }
        return { canvases: canvases.length, lit: best };
      });
      result.canvas = stats;
      if (stats.lit > 200) { result.ok = true; break; }
      await page.waitForTimeout(1000);
    }
    await page.screenshot({ path: out + '/ohif-viewer.png' });
  } catch (e) {
    result.error = String(e);
    try { await page.screenshot({ path: out + '/ohif-error.png' }); } catch (e2) {}
  }
  result.log = log.slice(-40);
  console.log(JSON.stringify(result));
  await context.close();
})();
"""


def _prepare_cache() -> Path:
    """The viewer tarball (npm pack) and playwright-core (npm install), cached under build/."""
    npm = require_program("npm")
    require_program("node")
    CACHE.mkdir(parents=True, exist_ok=True)
    if not (CACHE / "node_modules" / "playwright-core").is_dir():
        subprocess.run(
            [
                npm,
                "install",
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--prefix",
                str(CACHE),
                f"playwright-core@{PLAYWRIGHT_CORE}",
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
    return CACHE


@pytest.mark.chromium
@pytest.mark.slow
def test_ohif_end_to_end(fresh, tmp_path: Path) -> None:
    require_program("/usr/bin/chromium")
    cache = _prepare_cache()
    dist = fetch_viewer(tmp_path / "viewer", cache=cache / "tarballs")
    s = fresh(viewer_dir=dist)  # not dev mode: the viewer signs in, and calls DICOMweb with its cookie
    st = SyntheticStudy(patient=synthetic_patient(42), StudyDescription="CT E2E")
    for ds in ct_series(st, 20, rows=128, columns=128):
        s.archive.ingestor.ingest(encode(ds), source="test")
    ARTIFACTS.mkdir(exist_ok=True)
    script = cache / "e2e.js"
    script.write_text(E2E_SCRIPT)
    proc = subprocess.run(
        [
            "node",
            str(script),
            s.server.url,
            st.StudyInstanceUID,
            str(ARTIFACTS),
            str(tmp_path / "profile"),
            s.tokens["admin"],
        ],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=cache,
        env={**os.environ, "NODE_PATH": str(cache / "node_modules")},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(lines[-1])
    assert result.get("loginPage"), result
    assert result.get("studyList"), result
    assert result["ok"], result
    assert not any(s.tokens["admin"] in url for url in result["urls"])  # never in a URL
