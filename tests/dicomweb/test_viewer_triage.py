"""OHIF shows the AI triage results: a synthetic chest CT with planted nodules and the TID 1500 SR + BINARY
SEG made for it, filed into the same study.

* (marked chromium, slow) the real viewer in headless Chromium: the study browser lists the SEG and SR
  series, loading the SEG paints the segmentation overlay on the CT viewport (coloured pixels, which a
  grayscale CT never has), loading the SR draws its nodule measurement. Screenshots go to
  test-artifacts/ohif-triage-*.png.
* (no browser) what the viewer needs from the DICOMweb answers: the SEG's and SR's sequences (segments,
  per-frame references, SR content) inline in the metadata, never as BulkDataURIs.

The SR and SEG come from the reference bundle's pipeline when it loads and finds nodules; otherwise (a
bundle being retrained, a model that finds nothing at this small size) from findings placed at the planted
nodules, through the same `build_sr` / `build_seg`.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from dicomweb.viewer import fetch_viewer
from imaging.synthetic import SyntheticStudy, synthetic_patient
from tests.conftest import require_program
from tests.dicomweb.test_viewer import ARTIFACTS, _prepare_cache
from tests.triage.conftest import planted_phantom
from triage.bundle import BundleError
from triage.findings import Finding
from triage.masks import label_map
from triage.results import Producer, build_seg, build_sr
from triage.training.synthetic_series import phantom_series
from triage.volume import build_volume

# 128 x 128 x 60 at 2 mm x 3 mm: a 256 mm field, 177 mm long, holding all three planted nodules.
ROWS, COUNT, PIXEL, THICKNESS = 128, 60, 2.0, 3.0
MIN_COLOURED = 50  # canvas pixels with max(r,g,b) - min(r,g,b) > 40 once the SEG is shown (a CT has 0)


def chest_ct(study: SyntheticStudy) -> list[Dataset]:
    return phantom_series(
        planted_phantom(),
        study=study,
        rows=ROWS,
        columns=ROWS,
        count=COUNT,
        pixel_spacing=PIXEL,
        slice_thickness=THICKNESS,
    )


def planted_objects(series: list[Dataset]) -> tuple[Dataset, Dataset]:
    """SR and SEG for findings at the planted nodules (spheres of their diameters)."""
    volume = build_volume(series)
    findings = [
        Finding(n.center_lps, n.diameter_mm, 0.9, math.pi / 6 * n.diameter_mm**3)
        for n in planted_phantom().nodules
    ]
    producer = Producer("lung_nodule_reference", "e2e", hashlib.sha256(b"viewer e2e").hexdigest())
    seg = build_seg(label_map(findings, volume), findings, volume, producer)
    assert seg is not None
    return build_sr(findings, volume, producer), seg


def triage_objects(series: list[Dataset]) -> tuple[Dataset, Dataset, str]:
    """(SR, SEG, where they came from) for the series: the reference pipeline's when it loads and finds
    nodules, else `planted_objects`."""
    import torch

    from triage.pipeline import TriagePipeline
    from triage.training.train import REFERENCE_BUNDLE

    try:
        pipeline = TriagePipeline.from_bundle(REFERENCE_BUNDLE, device="cpu")
    except (BundleError, OSError) as error:
        reason = f"bundle did not load ({str(error)[:120]})"
    else:
        threads = torch.get_num_threads()
        torch.set_num_threads(min(threads, 2))  # shared machines
        try:
            result = pipeline.run(series)
        finally:
            torch.set_num_threads(threads)
        if result.seg is not None:
            return result.sr, result.seg, f"pipeline ({len(result.findings)} findings)"
        reason = "pipeline found no nodules"
    return (*planted_objects(series), f"planted findings: {reason}")


def _bulk_sequences(element: object, path: str = "") -> list[str]:
    """Paths of SQ elements answered as BulkDataURI, anywhere in a DICOM JSON object."""
    found = []
    if isinstance(element, dict):
        for tag, value in element.items():
            if isinstance(value, dict) and value.get("vr") == "SQ":
                if "BulkDataURI" in value:
                    found.append(path + tag)
                for item in value.get("Value", []):
                    found += _bulk_sequences(item, f"{path}{tag}/")
    return found


def test_triage_seg_and_sr_metadata_carry_their_sequences(fresh) -> None:
    """OHIF builds the SEG display set from SegmentSequence / ReferencedSeriesSequence / per-frame
    functional groups in the series metadata, and the SR's from its ContentSequence: large sequences must
    be answered inline (a sequence is never bulk data), or the SEG is missing from the study browser."""
    study = SyntheticStudy(patient=synthetic_patient(62), StudyDescription="CT CHEST TRIAGE METADATA")
    series = chest_ct(study)
    sr, seg = planted_objects(series)
    s = fresh()
    for ds in (*series, sr, seg):
        s.archive.ingestor.ingest_dataset(ds, source="test")
    with s.client() as client:
        seg_json = client.get(
            f"/studies/{study.StudyInstanceUID}/series/{seg.SeriesInstanceUID}/metadata"
        ).json()[0]
        sr_json = client.get(
            f"/studies/{study.StudyInstanceUID}/series/{sr.SeriesInstanceUID}/metadata"
        ).json()[0]
        frames = client.get(
            f"/studies/{study.StudyInstanceUID}/series/{seg.SeriesInstanceUID}"
            f"/instances/{seg.SOPInstanceUID}/frames/1",
            headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"},
        )
    assert _bulk_sequences(seg_json) == [] and _bulk_sequences(sr_json) == []
    segments = seg_json["00620002"]["Value"]  # SegmentSequence
    assert [item["00620004"]["Value"] for item in segments] == [[1], [2], [3]]
    referenced = seg_json["00081115"]["Value"][0]  # ReferencedSeriesSequence
    assert referenced["0020000E"]["Value"] == [str(series[0].SeriesInstanceUID)]
    per_frame = seg_json["52009230"]["Value"]  # PerFrameFunctionalGroupsSequence
    assert len(per_frame) == int(seg.NumberOfFrames) == seg_json["00280008"]["Value"][0]
    assert "BulkDataURI" in seg_json["7FE00010"]  # the pixels stay bulk data
    assert len(sr_json["0040A730"]["Value"]) == len(sr.ContentSequence)  # ContentSequence
    assert frames.status_code == 200


E2E_TRIAGE_SCRIPT = r"""
const { chromium } = require('playwright-core');
(async () => {
  const [base, studyUID, out, profile, minColoured] = process.argv.slice(2);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium', headless: true, viewport: { width: 1280, height: 900 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] || await context.newPage();
  const log = [];
  page.on('console', m => { const t = m.text(); if (!/WebGL|matchImages|preview, skipping/.test(t)) log.push(`console ${m.type()}: ${t}`.slice(0, 300)); });
  page.on('pageerror', e => log.push(`pageerror: ${String(e).slice(0, 300)}`));
  page.on('requestfailed', r => log.push(`failed: ${r.url()}`));
  page.on('response', r => { if (r.status() >= 400) log.push(`HTTP ${r.status()}: ${r.url()}`); });
  const result = { series: [], seg: {}, sr: {} };
  const shot = async name => { try { await page.screenshot({ path: `${out}/ohif-triage-${name}.png` }); } catch (e) {} };

  // Coloured / lit pixels of the largest cornerstone canvas (the image; annotations are SVG above it).
  const canvasStats = () => page.evaluate(() => {
    let best = { coloured: 0, lit: 0, width: 0 };
    for (const c of document.querySelectorAll('canvas')) {
      if (c.width < 200 || c.height < 200) continue;
      try {
        const probe = document.createElement('canvas');
        probe.width = c.width; probe.height = c.height;
        const ctx = probe.getContext('2d');
        ctx.drawImage(c, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        let coloured = 0, lit = 0;
        for (let i = 0; i < d.length; i += 4) {
          const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
          if (hi - lo > 40) coloured++;
          if (hi > 60) lit++;
        }
        if (c.width > best.width) best = { coloured, lit, width: c.width };
      } catch (e) {}
    }
    return best;
  });
  const modalities = () => page.evaluate(() =>
    [...document.querySelectorAll('[data-cy="series-modality-label"]')].map(e => e.innerText.trim()));
  const thumbnail = modality => page.locator('[data-cy^="study-browser-thumbnail"]').filter({
    has: page.locator('[data-cy="series-modality-label"]', { hasText: new RegExp(`^${modality}$`) }) });
  const skipTour = async () => {
    const skip = page.getByText('Skip all', { exact: true });
    if (await skip.count()) { try { await skip.first().click({ timeout: 3000 }); } catch (e) {} }
  };
  const until = async (what, seconds, step) => {
    const deadline = Date.now() + seconds * 1000;
    while (Date.now() < deadline) {
      const value = await step();
      if (value) return value;
      await page.waitForTimeout(1000);
    }
    throw new Error(`timed out: ${what}`);
  };

  try {
    const url = base + '/viewer/viewer?StudyInstanceUIDs=' + studyUID;
    await page.goto(url, { waitUntil: 'load', timeout: 120000 });
    // (1) The study browser lists the CT, SEG and SR series (one reload if the UI comes up incomplete).
    for (let attempt = 0; ; attempt++) {
      try {
        await until('series in the study browser', 90, async () => {
          result.series = await modalities();
          return ['CT', 'SEG', 'SR'].every(m => result.series.includes(m));
        });
        break;
      } catch (e) {
        if (attempt >= 1) throw e;
        await page.reload({ waitUntil: 'load', timeout: 120000 });
      }
    }
    result.studyBrowser = await page.locator('[data-cy="studyBrowser-panel"]').innerText();
    await until('the CT on the canvas', 120, async () => (await canvasStats()).lit > 2000);
    await skipTour();
    await page.waitForTimeout(1000);
    result.baseline = await canvasStats();
    await shot('ct');

    // (2) Load the SEG: double-click its thumbnail, accept "Do you want to open this Segmentation?".
    let lastClick = 0, clicks = 0;
    await until('the segmentation overlay', 240, async () => {
      if (Date.now() - lastClick > 60000 && clicks < 3) {
        await skipTour();
        await thumbnail('SEG').first().dblclick({ timeout: 30000 });
        lastClick = Date.now(); clicks++;
      }
      const yes = page.locator('[data-cy="yes-hydrate-btn"]');
      if (await yes.count() && await yes.first().isVisible()) {
        await yes.first().click({ timeout: 10000 });
        result.seg.hydrated = true;
      }
      result.seg.canvas = await canvasStats();
      const shown = result.seg.canvas.coloured >= Number(minColoured);
      // Done once the prompt was accepted, or when none has come 20 s after the double-click.
      return shown && (result.seg.hydrated || (Date.now() - lastClick > 20000 && !(await yes.count())));
    });
    await page.waitForTimeout(2000);
    result.seg.canvas = await canvasStats();
    result.seg.viewport = await page.locator('[data-cy="viewport-pane"]').first().innerText();
    await shot('seg');

    // (3) Load the SR: its nodule circle and measurement text are drawn (SVG) on the image. The SR viewport
    // opens on its first measurement's slice, except now and then (headless) when it stays on the slice
    // shown before: its "next measurement" arrow then goes to one, as a reader would click it.
    clicks = 0; lastClick = 0;
    let arrowed = 0;
    await until('the SR measurement', 180, async () => {
      if (Date.now() - lastClick > 60000 && clicks < 3) {
        await skipTour();
        await thumbnail('SR').first().dblclick({ timeout: 30000 });
        lastClick = arrowed = Date.now(); clicks++;
      }
      const svg = await page.evaluate(() => {
        const layers = [...document.querySelectorAll('svg.svg-layer')];
        return {
          shapes: layers.reduce((n, s) => n + s.querySelectorAll('circle, ellipse, path, polyline').length, 0),
          text: layers.map(s => s.textContent).join(' ').slice(0, 300),
        };
      });
      result.sr.svg = svg;
      if (svg.shapes > 0 && /Diameter/.test(svg.text)) return true;
      const next = page.locator('[data-cy="viewport-action-arrows-right"] svg');
      if (Date.now() - arrowed > 10000 && await next.count()) {
        await next.first().click({ timeout: 10000 });
        arrowed = Date.now();
        result.sr.arrowClicks = (result.sr.arrowClicks || 0) + 1;
      }
      return false;
    });
    await page.waitForTimeout(1000);
    await shot('sr');
    result.ok = true;
  } catch (e) {
    result.error = String(e).slice(0, 500);
    await shot('error');
  }
  result.log = log.slice(-60);
  console.log(JSON.stringify(result));
  await context.close();
})();
"""


@pytest.mark.chromium
@pytest.mark.slow
def test_ohif_shows_triage_seg_and_sr(fresh, tmp_path: Path) -> None:
    require_program("/usr/bin/chromium")
    cache = _prepare_cache()
    dist = fetch_viewer(tmp_path / "viewer", cache=cache / "tarballs")
    study = SyntheticStudy(patient=synthetic_patient(61), StudyDescription="CT CHEST TRIAGE E2E")
    series = chest_ct(study)
    sr, seg, origin = triage_objects(series)
    assert seg.SegmentationType == "BINARY" and int(seg.NumberOfFrames) > 0
    s = fresh(dev_mode=True, viewer_dir=dist)
    for ds in series:
        s.archive.ingestor.ingest_dataset(ds, source="test")
    for ds in (sr, seg):
        filed = s.archive.ingestor.ingest_dataset(ds, source="triage")
        assert filed.study_instance_uid == study.StudyInstanceUID

    ARTIFACTS.mkdir(exist_ok=True)
    script = cache / "e2e-triage.js"
    script.write_text(E2E_TRIAGE_SCRIPT)
    proc = subprocess.run(
        [
            "node",
            str(script),
            s.server.url,
            study.StudyInstanceUID,
            str(ARTIFACTS),
            str(tmp_path / "profile"),
            str(MIN_COLOURED),
        ],
        capture_output=True,
        text=True,
        timeout=560,
        cwd=cache,
        env={**os.environ, "NODE_PATH": str(cache / "node_modules")},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(lines[-1])
    context = f"objects from {origin}; browser: {json.dumps(result)[:6000]}"
    # (1) The study browser lists the SEG and SR series beside the CT.
    assert {"CT", "SEG", "SR"} <= set(result["series"]), context
    assert "AI nodules SEG" in result.get("studyBrowser", ""), context
    # The CT alone is grayscale: the colour counted below is the overlay's.
    assert result.get("baseline", {}).get("lit", 0) > 2000, context
    assert result["baseline"]["coloured"] < MIN_COLOURED // 5, context
    # (2) Loading the SEG paints its segments on the CT.
    assert result["seg"].get("canvas", {}).get("coloured", 0) >= MIN_COLOURED, context
    # (3) Loading the SR draws its nodule measurement.
    assert result.get("ok"), context
