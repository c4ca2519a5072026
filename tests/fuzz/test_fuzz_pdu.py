"""The DIMSE gateway's PDU reader under fuzzing: raw bytes to a live `imaging serve` (its gateway processes
included) on loopback. Whatever arrives, the gateway answers with well-formed PDUs or nothing, closes the
connection once the input ends, logs no traceback, keeps its memory (RSS) bounded, and keeps serving
(C-ECHO). Inputs: noise, hostile PDU headers, a valid association followed by broken P-DATA, mutated valid
PDUs and the corpus; bounded in time (tests/fuzz/budget.py)."""

from __future__ import annotations

import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.control import current_build_context

from tests.archive_fixtures import echo, free_port, serve_subprocess
from tests.dimse.memory import tree_rss
from tests.fuzz.budget import SECONDS, corpus, expired, run_for, save_case
from tests.fuzz.strategies import pdu_streams
from tests.fuzz.wire import exchange, well_formed

pytestmark = [pytest.mark.fuzz, pytest.mark.slow]
MiB = 1 << 20


@pytest.fixture
def server(tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    proc = serve_subprocess(tmp_path / "data", port, log)
    yield proc, port, log
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except Exception:
        proc.kill()


def check(proc, port: int, data: bytes) -> None:
    try:
        answer = exchange(port, data)
        assert well_formed(answer), answer[:64]
        assert proc.poll() is None, "the server died"
    except Exception:
        if current_build_context().is_final:
            save_case("pdu", data)
        raise


def test_gateway_survives_hostile_pdus(server):
    proc, port, log = server
    assert echo(port)
    for _ in range(20):  # warm up: threads, buffers and caches the gateway keeps anyway
        exchange(port, b"\x04\x00\x00\x00\x00\x10")
    time.sleep(1.0)
    before = tree_rss(proc.pid)
    streams = pdu_streams([p.read_bytes() for p in corpus("pdu")])

    @settings(
        max_examples=100,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(streams)
    def batch(data: bytes) -> None:
        if expired():
            return
        tried.append(len(data))
        check(proc, port, data)

    tried: list[int] = []
    run_for(SECONDS, batch)
    time.sleep(1.0)
    grown = tree_rss(proc.pid) - before
    print(f"pdu: {len(tried)} inputs in {SECONDS:.0f} s, RSS {grown / MiB:+.0f} MiB")
    assert tried
    assert echo(port), "the gateway stopped serving"
    assert grown < 64 * MiB, f"RSS grew by {grown / MiB:.0f} MiB"
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "Exception in" not in text, text[-3000:]
