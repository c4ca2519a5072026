"""The route × role contract (issue 12): every HTTP route declares its permission, and the application
answers each credential — no token, each role's token, a share link — as the permission table says:
refused (401/403) exactly where the table says so, never a 5xx. The README carries the same table."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from dicomweb.route_table import CREDENTIALS, allowed, entries, markdown
from imaging.sharing.links import create_link
from tests.dicomweb.conftest import Seeded

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- route-table:start -->", "<!-- route-table:end -->"


def test_every_route_declares_its_permission(seeded: Seeded) -> None:
    undeclared = [f"{e.methods} {e.path}" for e in entries(seeded.server.app) if not e.declared]
    assert undeclared == []
    assert len(entries(seeded.server.app)) > 80  # the walk sees the DICOMweb roots and every feature


def test_readme_carries_the_generated_table(seeded: Seeded) -> None:
    text = README.read_text()
    section = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert section == markdown(seeded.server.app).strip(), (
        "README's route table is out of date: python -m dicomweb.route_table"
    )


def _fill(path: str, seeded: Seeded, share: str, method: str = "GET") -> str:
    study, series, sop = seeded.instances["ct1-0"]
    if method == "DELETE":  # a deletion that passes its checks must not remove what later requests read
        study, series, sop = (
            "1.2.826.0.1.3680043.8.498.1",
            "1.2.826.0.1.3680043.8.498.2",
            "1.2.826.0.1.3680043.8.498.3",
        )
    values = {
        "study": study,
        "series": series,
        "sop": sop,
        "frames": "1",
        "tag": "7FE00010",
        "project": "lung",
        "share_token": share,
        "name": "contract-test",
        "link_id": "999999",
        "token_id": "999999",
        "request_id": "999999",
        "request_uid": "00000000-0000-4000-8000-000000000000",
        "request_pk": "999999",
        "uid": "00000000-0000-4000-8000-000000000000",
        "export_id": "999999",
        "path": "index.html",
    }
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values[m.group(1)], path)


def test_each_credential_gets_what_the_table_says(seeded: Seeded) -> None:
    share, _ = create_link(seeded.archive, study_uids=[seeded.studies["ct"]])
    bearer = {
        "none": None,
        "ingest": seeded.tokens["ingest"],
        "clinician": seeded.tokens["clinician"],
        "researcher": seeded.tokens["researcher"],
        "admin": seeded.tokens["admin"],
        "share link": None,
    }
    mismatches, errors = [], []
    with httpx.Client(base_url=seeded.server.url, timeout=60, follow_redirects=False) as client:
        for entry in entries(seeded.server.app):
            for credential in CREDENTIALS:
                token = share if credential == "share link" else "shl_not-a-link"
                headers = {"Authorization": f"Bearer {bearer[credential]}"} if bearer[credential] else {}
                for method in entry.methods:
                    url = _fill(entry.path, seeded, token, method)
                    status = client.request(method, url, headers=headers).status_code
                    # A share link's unknown study and a peer API with federation off answer 404.
                    refused = status in (401, 403) or (
                        (entry.share_link or entry.credential) and status == 404
                    )
                    if status >= 500:
                        errors.append(f"{credential} {method} {url}: {status}")
                    if refused == allowed(entry, credential):
                        mismatches.append(f"{credential} {method} {entry.path}: {status}")
    assert errors == []
    assert mismatches == []
