"""Testing a peer's connection (`echo_peer`, the web page's "Test connection", POST /api/peers/{name}/echo):
C-ECHO to our own gateway as a DIMSE peer, GET /system of a real Orthanc and QIDO-RS of its DICOMweb
plugin; a peer that is down or refuses our credentials is an answer that says so, not an error."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from imaging.archive import Archive
from imaging.sharing.peers import add_peer, echo_peer
from tests.archive_fixtures import free_port
from tests.sharing.conftest import ORTHANC_PASSWORD, ORTHANC_USER, OrthancServer


def test_dimse_peer_echo(site_a: Archive, site_b: Archive, start_gateway: Callable[[Archive], int]) -> None:
    port = start_gateway(site_b)
    add_peer(site_a, "site-b", "dimse", ae_title="SITEB", host="127.0.0.1", port=port, timeout=5)
    answer = echo_peer(site_a, "site-b")
    assert answer["ok"] is True and answer["detail"] == "C-ECHO status 0x0000 from SITEB"
    add_peer(site_a, "nobody", "dimse", ae_title="NOBODY", host="127.0.0.1", port=free_port(), timeout=2)
    down = echo_peer(site_a, "nobody")
    assert down["ok"] is False and "association" in down["detail"]


def test_dicomweb_peer_down(site_a: Archive) -> None:
    add_peer(site_a, "gone", "dicomweb", url=f"http://127.0.0.1:{free_port()}/dicomweb", timeout=2)
    down = echo_peer(site_a, "gone")
    assert down["ok"] is False and down["detail"].startswith("gone: Connect")


@pytest.mark.orthanc
def test_orthanc_rest_and_dicomweb_echo(site_a: Archive, orthanc: OrthancServer) -> None:
    credentials = {"auth": "basic", "username": ORTHANC_USER}
    add_peer(site_a, "orthanc", "orthanc", url=orthanc.url, secret=ORTHANC_PASSWORD, **credentials)
    add_peer(
        site_a,
        "orthanc-web",
        "dicomweb",
        url=f"{orthanc.url}/dicom-web",
        secret=ORTHANC_PASSWORD,
        **credentials,
    )
    add_peer(site_a, "orthanc-bad", "orthanc", url=orthanc.url, secret="not-the-password", **credentials)
    rest = echo_peer(site_a, "orthanc")
    assert rest["ok"] is True and rest["detail"].startswith("Orthanc 1.")
    web = echo_peer(site_a, "orthanc-web")
    assert web["ok"] is True and web["detail"] in ("QIDO-RS HTTP 200", "QIDO-RS HTTP 204")
    refused = echo_peer(site_a, "orthanc-bad")
    assert refused["ok"] is False and "HTTP 401" in refused["detail"]
    assert ORTHANC_PASSWORD not in str([rest, web, refused]) and "not-the-password" not in str(refused)
