"""Fuzzing the HTTP edge with Hypothesis, bounded in time for CI (about a minute in all): the STOW-RS
multipart reader, QIDO-RS parameters, rendered parameters, STOW-RS bodies and every route's path and query
parameters. No 5xx, no crash, the parser's memory bounded. A case that fails is saved (shrunk) to
tests/fuzz/corpus/http/ by `save_failure` so that test_corpus.py replays it for ever after.

Seeded from the archive's test study (tests/dicomweb/conftest.py); the Hypothesis example database is off,
so runs are reproducible from the corpus alone."""

from __future__ import annotations

import base64
import json
import re
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomweb.multipart import MAX_PART_HEADERS, MultipartError, MultipartParser
from dicomweb.route_table import entries
from tests.dicomweb.conftest import Seeded
from tests.fuzz.http.cases import QIDO_LEVELS, run_case

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "http"
FUZZ = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
QIDO_KEYS = [
    "PatientName", "PatientID", "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality", "00100010", "0020000D",
    "StudyDescription", "ScheduledProcedureStepPriority", "includefield", "limit", "offset",
    "fuzzymatching", "PatientBirthDate", "ReferringPhysicianName", "00081030", "NumberOfFrames",
    "InstanceNumber", "SeriesNumber", "Rows",
]  # fmt: skip
RENDER_KEYS = ["window", "viewport", "quality", "annotation", "charset"]
NUMBERISH = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "1e308", "-0", "0x10", "", " ", "1,2", "½", "١٢"]),
)
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=80)
# What a client can put in a header value (printable ASCII, no surrounding spaces: h11 refuses the rest).
HEADER_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=120).map(str.strip)
DATETIME = st.builds(
    lambda when, zone: when.isoformat() + zone,
    st.datetimes(),
    st.sampled_from(["", "Z", "+14:00", "-14:00", "+00:00", "+99:00"]),
)
VALUE = st.one_of(TEXT, NUMBERISH, DATETIME, st.lists(NUMBERISH, min_size=1, max_size=7).map(",".join))


def save_failure(case: dict[str, Any]) -> Path:
    """Keep a failing case for the corpus: Hypothesis replays the shrunk example last, so the file left is
    the minimal one (`found-<target>.json`; rename it to keep it beside the others)."""
    path = CORPUS / f"found-{case['target']}.json"
    path.write_text(json.dumps(case, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def check(case: dict[str, Any], seeded: Seeded, client: httpx.Client) -> None:
    try:
        status = run_case(case, seeded, client)
    except Exception:
        save_failure(case)
        raise
    if status is not None and status >= 500:
        save_failure(case)
        pytest.fail(f"{status} for {case}")


@pytest.fixture(scope="module")
def admin(seeded: Seeded) -> httpx.Client:
    client = httpx.Client(
        base_url=seeded.server.url, headers={"Authorization": f"Bearer {seeded.tokens['admin']}"}, timeout=60
    )
    yield client
    client.close()


@FUZZ
@given(
    level=st.sampled_from(QIDO_LEVELS),
    params=st.lists(st.tuples(st.sampled_from(QIDO_KEYS) | TEXT, VALUE), max_size=6),
)
def test_qido_parameters(
    seeded: Seeded, admin: httpx.Client, level: str, params: list[tuple[str, str]]
) -> None:
    check({"target": "qido", "level": level, "params": [list(p) for p in params]}, seeded, admin)


@FUZZ
@given(
    resource=st.sampled_from(["instance", "frames", "study", "thumbnail"]),
    params=st.lists(st.tuples(st.sampled_from(RENDER_KEYS), VALUE), max_size=4),
    accept=st.sampled_from(
        ["image/jpeg", "image/png", "*/*", "image/gif", "multipart/related; type=image/png"]
    ),
)
def test_rendered_parameters(
    seeded: Seeded, admin: httpx.Client, resource: str, params: list[tuple[str, str]], accept: str
) -> None:
    case = {"target": "rendered", "resource": resource, "params": [list(p) for p in params], "accept": accept}
    check(case, seeded, admin)


def _routes(seeded: Seeded) -> list[tuple[str, str]]:
    found = []
    for e in entries(seeded.server.app):
        if e.path.startswith(("/viewer", "/docs", "/redoc", "/shares/")) or e.path == "/openapi.json":
            continue
        for method in e.methods:
            found.append((method, e.path))
    return found


@FUZZ
@given(data=st.data())
def test_every_route_with_hostile_parameters(
    seeded: Seeded, admin: httpx.Client, data: st.DataObject
) -> None:
    method, path = data.draw(st.sampled_from(_routes(seeded)), label="route")
    # Each path parameter: a real value of the seed (filled later), or something hostile.
    hostile = st.one_of(
        TEXT.filter(lambda t: t and "/" not in t and t not in (".", "..")), NUMBERISH.filter(bool)
    )
    for name in re.findall(r"\{(\w+)\}", path):
        if data.draw(st.booleans(), label=f"hostile {name}"):
            value = data.draw(hostile, label=name)
            path = path.replace("{" + name + "}", urllib.parse.quote(value, safe="") or "x", 1)
    params = data.draw(
        st.lists(
            st.tuples(
                TEXT
                | st.sampled_from(
                    ["limit", "offset", "all", "after", "format", "priority", "since", "until", "event"]
                ),
                VALUE,
            ),
            max_size=4,
        ),
        label="params",
    )
    body = None
    content_type = None
    if method in ("POST", "PUT"):
        body = data.draw(
            st.one_of(
                st.none(),
                TEXT,
                st.recursive(
                    st.none() | st.booleans() | NUMBERISH | TEXT,
                    lambda c: (
                        st.lists(c, max_size=3)
                        | st.dictionaries(
                            TEXT
                            | st.sampled_from(
                                [
                                    "study_uids",
                                    "role",
                                    "project",
                                    "expires",
                                    "expires_in_days",
                                    "name",
                                    "options",
                                    "kind",
                                    "port",
                                    "filters",
                                ]
                            ),
                            c,
                            max_size=4,
                        )
                    ),
                    max_leaves=8,
                ).map(json.dumps),
            ),
            label="body",
        )
        content_type = "application/json"
    case = {
        "target": "route",
        "method": method,
        "path": path,
        "params": [list(p) for p in params],
        "body": body,
        "content_type": content_type,
    }
    check(case, seeded, admin)


@FUZZ
@given(
    content_type=st.one_of(
        st.sampled_from(
            [
                'multipart/related; type="application/dicom"; boundary=b0undary',
                'multipart/related; type=application/dicom; boundary="x"',
                "application/dicom",
                "multipart/related; boundary=b0undary",
                "multipart/related; type=application/dicom",
            ]
        ),
        HEADER_TEXT,
        HEADER_TEXT.map(lambda b: f'multipart/related; type="application/dicom"; boundary={b}'),
    ),
    body=st.one_of(
        st.binary(max_size=2000),
        st.lists(
            st.one_of(
                st.binary(max_size=200),
                st.sampled_from(
                    [
                        b"--b0undary",
                        b"\r\n",
                        b"--b0undary--",
                        b"Content-Type: application/dicom\r\n\r\n",
                        b"\x00" * 128 + b"DICM",
                    ]
                ),
            ),
            max_size=12,
        ).map(b"".join),
    ),
)
def test_stow_bodies(seeded: Seeded, admin: httpx.Client, content_type: str, body: bytes) -> None:
    case = {"target": "stow", "content_type": content_type, "body": base64.b64encode(body).decode()}
    check(case, seeded, admin)


@settings(max_examples=300, deadline=None, database=None)
@given(
    boundary=st.one_of(st.sampled_from(["b0undary", "a", "x" * 70]), TEXT),
    pieces=st.lists(
        st.one_of(
            st.binary(max_size=300),
            st.sampled_from(
                [
                    b"--b0undary",
                    b"\r\n--b0undary",
                    b"\r\n\r\n",
                    b"--",
                    b"\r\n",
                    b"Content-Type: application/dicom\r\n",
                ]
            ),
        ),
        max_size=30,
    ),
    cut=st.integers(1, 97),
)
def test_multipart_reader(boundary: str, pieces: list[bytes], cut: int) -> None:
    """Any bytes, in any chunking: parts or MultipartError, and the parser's buffer stays bounded."""
    body = b"".join(pieces)
    chunks = [body[i : i + cut] for i in range(0, len(body), cut)]
    with tempfile.TemporaryDirectory() as spool:
        try:
            parser = MultipartParser(boundary, spool_dir=spool)
        except MultipartError:
            return
        try:
            for chunk in chunks:
                parser.feed(chunk)
                assert len(parser._buffer) <= MAX_PART_HEADERS + cut + 512
            for part in parser.finish():
                assert len(part.read()) <= len(body)
        except MultipartError:
            pass
        except Exception:
            save_failure(
                {
                    "target": "multipart",
                    "boundary": boundary,
                    "chunks": [base64.b64encode(c).decode() for c in chunks],
                }
            )
            raise
        finally:
            parser.close()
