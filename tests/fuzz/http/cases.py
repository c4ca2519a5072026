"""The HTTP fuzz targets, shared by the Hypothesis tests (tests/fuzz/http/test_fuzz_http.py) and the replay
of the corpus of found cases (tests/fuzz/corpus/http/*.json, replayed by test_corpus.py).

A case is JSON: {"target": ..., ...}. Targets:
* `qido`: {"level": "studies"|"series"|"instances", "params": [[key, value], ...]} against /dicomweb;
* `rendered`: {"resource": "instance"|"study"|"frames", "params": [[key, value], ...], "accept": str};
* `route`: {"method": str, "path": str (with {study} etc. placeholders filled from the seed), "params":
  [[key, value], ...], "body": str | null, "content_type": str | null} against any route, as admin;
* `multipart`: {"boundary": str, "chunks": [base64, ...]} fed to dicomweb.multipart.MultipartParser;
* `stow`: {"content_type": str, "body": base64} POSTed to /dicomweb/studies.
Every answer must be a 2xx-4xx: never a 5xx, never a dropped connection.
"""

from __future__ import annotations

import base64
import re
import tempfile
from typing import Any

import httpx

from dicomweb.multipart import MultipartError, MultipartParser
from tests.dicomweb.conftest import Seeded

QIDO_LEVELS = ("studies", "series", "instances")


def fill(path: str, seeded: Seeded) -> str:
    study, series, sop = seeded.instances["ct1-0"]
    values = {"study": study, "series": series, "sop": sop, "project": "lung", "frames": "1"}
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), path)


def run_case(case: dict[str, Any], seeded: Seeded, client: httpx.Client) -> int | None:
    """Play one case; the HTTP status (None for the parser target). Raises on a crash."""
    target = case["target"]
    if target == "multipart":
        return _multipart(case)
    if target == "qido":
        response = client.get(f"/dicomweb/{case['level']}", params=case["params"])
    elif target == "rendered":
        study, series, sop = seeded.instances["ct1-0"]
        paths = {
            "instance": f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/rendered",
            "frames": f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1/rendered",
            "study": f"/dicomweb/studies/{study}/rendered",
            "thumbnail": f"/dicomweb/studies/{study}/thumbnail",
        }
        response = client.get(
            paths[case["resource"]], params=case["params"], headers={"Accept": case["accept"]}
        )
    elif target == "stow":
        response = client.post(
            "/dicomweb/studies",
            content=base64.b64decode(case["body"]),
            headers={"Content-Type": case["content_type"]},
        )
    elif target == "route":
        headers = {"Content-Type": case["content_type"]} if case.get("content_type") else {}
        body = case.get("body")
        response = client.request(
            case["method"],
            fill(case["path"], seeded),
            params=case.get("params") or [],
            content=body.encode("utf-8", "surrogatepass") if body is not None else None,
            headers=headers,
        )
    else:
        raise ValueError(f"unknown fuzz target {target}")
    return response.status_code


def _multipart(case: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as spool:
        try:
            parser = MultipartParser(case["boundary"], spool_dir=spool)
        except MultipartError:
            return None
        try:
            for chunk in case["chunks"]:
                parser.feed(base64.b64decode(chunk))
            for part in parser.finish():
                part.read()
        except MultipartError:
            pass
        finally:
            parser.close()
    return None
