"""DICOM TLS (PS3.15 B.9) on its own port, with dcmtk's storescu and findscu in TLS mode (`+tls`), and C-GET
with pynetdicom over TLS (Debian's dcmtk 3.6.7 builds getscu and movescu without TLS): good, wrong and
missing client certificates, a certificate bound to another AE title, TLS below 1.2, and the plain port
refusing an AE bound to a certificate. The PKI is generated per test (tests/dimse/certificates.py)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelGet
from sqlalchemy import func, select

from imaging.audit import AuditEvent, AuditRecord
from imaging.config import CallingAE
from imaging.dimse.server import Gateway
from imaging.index.schema import Instance
from tests.archive_fixtures import ARCHIVE_AE, require_program, run, send_raw, write_synthetic_study
from tests.dimse.certificates import Authority

pytestmark = pytest.mark.dcmtk
EVERYTHING = ["store", "find", "get", "move"]


@pytest.fixture
def pki(tmp_path: Path):
    ca = Authority(tmp_path / "pki", "Synthetic Hospital CA")
    rogue = Authority(tmp_path / "rogue", "Rogue CA")
    return {
        "ca": ca,
        "server": ca.issue("archive.test", server=True),
        "modality": ca.issue("modality1", dns=("ct01.synthetic.test",)),
        "other": ca.issue("workstation9"),
        "rogue": rogue.issue("modality1"),
    }


@pytest.fixture
def tls_gateway(make_archive, pki):
    """A gateway with DICOM TLS (mutual) on an ephemeral port: TLSSCU bound to certificate name modality1,
    PLAINSCU (no certificate binding) on either port."""
    archive = make_archive(
        dev_mode=False,
        dicom_tls_port=0,
        dicom_tls_cert=pki["server"].cert,
        dicom_tls_key=pki["server"].key,
        dicom_tls_client_ca=pki["ca"].cert_file,
        calling_aes=[
            CallingAE(
                ae_title="TLSSCU", hosts=["127.0.0.1"], permissions=EVERYTHING, tls_names=["modality1"]
            ),
            CallingAE(ae_title="PLAINSCU", hosts=["127.0.0.0/8"], permissions=EVERYTHING),
        ],
    )
    gateway = Gateway(archive)
    port = gateway.start("127.0.0.1", 0, tls_port=0)
    assert gateway.tls_port
    yield archive, port, gateway.tls_port, gateway
    gateway.stop()


def _tls_args(pki, pair: str | None, aet: str = "TLSSCU") -> list[str]:
    args = ["-aet", aet, "-aec", ARCHIVE_AE, "+cf", str(pki["ca"].cert_file)]
    if pair is None:
        return ["+tla", *args]  # TLS without a client certificate
    return ["+tls", str(pki[pair].key), str(pki[pair].cert), "-pw", *args]  # -pw: the key has no password


def _count(archive) -> int:
    with archive.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Instance)) or 0)


def _alerts(archive, gateway, expect: str = "") -> list[str]:
    """The Security Alerts recorded, waiting (a while) for one that starts with `expect`: the gateway may
    record it after the client has already exited."""
    deadline = time.monotonic() + 10
    while True:
        gateway.audit.flush()
        with archive.db.read() as s:
            details = list(
                s.scalars(
                    select(AuditRecord.detail).where(AuditRecord.event_id == AuditEvent.SECURITY_ALERT.value)
                )
            )
        if any(d.startswith(expect) for d in details) or time.monotonic() > deadline:
            return details
        time.sleep(0.1)


def test_storescu_and_findscu_over_tls(tls_gateway, pki, tmp_path):
    archive, _, tls_port, gateway = tls_gateway
    files = write_synthetic_study(tmp_path / "study", series=1, per_series=3)
    stored = run(
        [
            require_program("/usr/bin/storescu"),
            "-v",
            *_tls_args(pki, "modality"),
            "127.0.0.1",
            str(tls_port),
            *map(str, files),
        ]
    )
    assert stored.returncode == 0, stored.stdout + stored.stderr
    assert (stored.stdout + stored.stderr).count("(Success)") == 3
    assert _count(archive) == 3
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    found = run(
        [
            require_program("/usr/bin/findscu"),
            "-v",
            "-S",
            *_tls_args(pki, "modality"),
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID",
            "127.0.0.1",
            str(tls_port),
        ]
    )
    assert found.returncode == 0, found.stdout + found.stderr
    assert study in found.stdout + found.stderr
    gateway.audit.flush()
    time.sleep(0.2)
    gateway.audit.flush()
    with archive.db.read() as s:
        users = set(s.scalars(select(AuditRecord.user)))
    assert "ae:TLSSCU tls:CN=modality1,O=Synthetic Hospital" in users, users


def test_c_get_over_tls_with_pynetdicom(tls_gateway, pki, tmp_path):
    _, plain_port, tls_port, _ = tls_gateway
    files = write_synthetic_study(tmp_path / "study", series=1, per_series=2)
    assert send_raw(plain_port, files, aet="PLAINSCU") == [0, 0]
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"].cert_file))
    context.load_cert_chain(pki["modality"].cert, pki["modality"].key)
    received: list[str] = []

    def on_store(event):
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="TLSSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate(
        "127.0.0.1",
        tls_port,
        ae_title=ARCHIVE_AE,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
        tls_args=(context, "localhost"),
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = dcmread(files[0], stop_before_pixels=True).StudyInstanceUID
    statuses = [
        st.Status for st, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet) if st
    ]
    assoc.release()
    assert statuses[-1] == 0x0000
    assert sorted(received) == sorted(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)


@pytest.mark.parametrize(
    ("pair", "why"),
    [("rogue", "a certificate from an untrusted CA"), (None, "no certificate (anonymous TLS)")],
)
def test_wrong_or_missing_certificate_refused(tls_gateway, pki, tmp_path, pair, why):
    archive, _, tls_port, gateway = tls_gateway
    files = write_synthetic_study(tmp_path / "study", series=1, per_series=1)
    result = run(
        [
            require_program("/usr/bin/storescu"),
            *_tls_args(pki, pair),
            "127.0.0.1",
            str(tls_port),
            *map(str, files),
        ]
    )
    assert result.returncode != 0, why
    assert _count(archive) == 0
    assert any(a.startswith("TLS handshake failed") for a in _alerts(archive, gateway, "TLS handshake")), why
    echo = run([require_program("/usr/bin/echoscu"), *_tls_args(pki, "modality"), "127.0.0.1", str(tls_port)])
    assert echo.returncode == 0, echo.stdout + echo.stderr  # and the listener keeps serving


def test_certificate_bound_to_another_ae_refused(tls_gateway, pki, tmp_path):
    """A valid certificate (the right CA) that does not bear the AE title's bound name: A-ASSOCIATE-RJ."""
    archive, _, tls_port, gateway = tls_gateway
    files = write_synthetic_study(tmp_path / "study", series=1, per_series=1)
    result = run(
        [
            require_program("/usr/bin/storescu"),
            "-v",
            *_tls_args(pki, "other"),
            "127.0.0.1",
            str(tls_port),
            *map(str, files),
        ]
    )
    assert result.returncode != 0
    assert "Association Rejected" in result.stdout + result.stderr
    assert _count(archive) == 0
    reason = "client certificate not bound to the calling AE title"
    assert reason in _alerts(archive, gateway, reason)
    with archive.db.read() as s:  # the refused caller named with its certificate
        users = set(s.scalars(select(AuditRecord.user).where(AuditRecord.detail == reason)))
    assert users == {"ae:TLSSCU tls:CN=workstation9,O=Synthetic Hospital"}


def test_bound_ae_refused_on_the_plain_port(tls_gateway, pki, tmp_path):
    archive, plain_port, _, gateway = tls_gateway
    result = run(
        [
            require_program("/usr/bin/echoscu"),
            "-aet",
            "TLSSCU",
            "-aec",
            ARCHIVE_AE,
            "127.0.0.1",
            str(plain_port),
        ]
    )
    assert result.returncode != 0
    reason = "calling AE title admitted over DICOM TLS only"
    assert reason in _alerts(archive, gateway, reason)
    ok = run(
        [
            require_program("/usr/bin/echoscu"),
            "-aet",
            "PLAINSCU",
            "-aec",
            ARCHIVE_AE,
            "127.0.0.1",
            str(plain_port),
        ]
    )
    assert ok.returncode == 0


def test_tls_below_1_2_refused(tls_gateway, pki):
    _, _, tls_port, _ = tls_gateway
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(pki["ca"].cert_file)
    context.load_cert_chain(pki["modality"].cert, pki["modality"].key)
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    with contextlib.suppress(ssl.SSLError):  # let this OpenSSL offer TLS 1.0/1.1 at all
        context.set_ciphers("ALL:@SECLEVEL=0")
    with (
        socket.create_connection(("127.0.0.1", tls_port), timeout=10) as raw_socket,
        pytest.raises(OSError),  # ssl.SSLError: the gateway's handshake refuses the version
        context.wrap_socket(raw_socket, server_hostname="localhost") as secured,
    ):
        secured.sendall(b"\x01")
        secured.recv(1)
