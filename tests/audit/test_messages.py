"""Audit records as DICOM audit messages (PS3.15 A.5.1) and RFC 5424 syslog messages; the queued writer of
the hot paths (coalescing, flush, retry)."""

from __future__ import annotations

import base64
import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from imaging import audit
from imaging.archive import Archive
from imaging.audit.syslog import rfc5424
from imaging.config import load_settings


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    a = Archive.open(load_settings(data_dir=tmp_path / "data"))
    yield a
    a.close()


def _message(archive: Archive, event: audit.AuditEvent, **fields: object) -> ET.Element:
    with archive.db.write() as s:
        row = audit.record(s, event, **fields)  # type: ignore[arg-type]
        s.flush()
        return ET.fromstring(audit.to_xml(row, "ARCHIVE-1"))


def _code(element: ET.Element | None) -> tuple[str | None, str | None, str | None]:
    assert element is not None
    return element.get("csd-code"), element.get("codeSystemName"), element.get("originalText")


def test_query_message(archive: Archive) -> None:
    msg = _message(
        archive,
        audit.AuditEvent.QUERY,
        user="oidc:rtyler",
        action="E",
        access_point="10.1.2.3",
        detail="QIDO-RS studies?PatientName=DOE*",
    )
    ident = msg.find("EventIdentification")
    assert (
        ident is not None
        and ident.get("EventActionCode") == "E"
        and ident.get("EventOutcomeIndicator") == "0"
    )
    assert ident.get("EventDateTime", "").endswith("Z")
    assert _code(ident.find("EventID")) == ("110112", "DCM", "Query")
    requestor, archive_side = msg.findall("ActiveParticipant")
    assert requestor.get("UserID") == "oidc:rtyler" and requestor.get("UserIsRequestor") == "true"
    assert (
        requestor.get("NetworkAccessPointID") == "10.1.2.3"
        and requestor.get("NetworkAccessPointTypeCode") == "2"
    )
    assert _code(requestor.find("RoleIDCode"))[0] == "110152"  # Destination: the query's answers go there
    assert archive_side.get("UserID") == "ARCHIVE-1" and _code(archive_side.find("RoleIDCode"))[0] == "110153"
    assert msg.find("AuditSourceIdentification").get("AuditSourceID") == "ARCHIVE-1"
    (query_object,) = msg.findall("ParticipantObjectIdentification")
    assert query_object.get("ParticipantObjectTypeCodeRole") == "24"
    assert _code(query_object.find("ParticipantObjectIDTypeCode"))[0] == "110181"
    assert (
        base64.b64decode(query_object.findtext("ParticipantObjectQuery", ""))
        == b"QIDO-RS studies?PatientName=DOE*"
    )
    # Element order of the A.5.1 schema.
    assert [c.tag for c in msg] == [
        "EventIdentification",
        "ActiveParticipant",
        "ActiveParticipant",
        "AuditSourceIdentification",
        "ParticipantObjectIdentification",
    ]


def test_transfer_login_and_alert_messages(archive: Archive) -> None:
    stored = _message(
        archive, audit.AuditEvent.INSTANCES_TRANSFERRED, user="token:3:ingest", action="C", study_uid="1.2.3",
        patient_ref="PSEUDO-9", detail="STOW-RS: 2 of 2 instances stored",
    )  # fmt: skip
    requestor = stored.findall("ActiveParticipant")[0]
    assert _code(requestor.find("RoleIDCode"))[0] == "110153"  # the sender is the source of a store
    study, patient = stored.findall("ParticipantObjectIdentification")
    assert (
        study.get("ParticipantObjectID"),
        study.get("ParticipantObjectTypeCode"),
        study.get("ParticipantObjectTypeCodeRole"),
    ) == ("1.2.3", "2", "3")
    assert _code(study.find("ParticipantObjectIDTypeCode"))[0] == "110180"
    assert base64.b64decode(study.find("ParticipantObjectDetail").get("value")).startswith(b"STOW-RS")
    assert (patient.get("ParticipantObjectID"), patient.get("ParticipantObjectTypeCode")) == ("PSEUDO-9", "1")

    login = _message(
        archive, audit.AuditEvent.USER_AUTHENTICATION, user="unknown", action="E",
        outcome=audit.Outcome.MINOR_FAILURE, event_type="110122", detail="login refused",
    )  # fmt: skip
    ident = login.find("EventIdentification")
    assert _code(ident.find("EventID"))[0] == "110114" and ident.get("EventOutcomeIndicator") == "4"
    assert _code(ident.find("EventTypeCode")) == ("110122", "DCM", "Login")

    # A code as the detail's first word (older callers) becomes the EventTypeCode too.
    alert = _message(archive, audit.AuditEvent.SECURITY_ALERT, user="cli", action="U", source="share-link:4",
                     detail="110135 Object Security Attributes Changed: share link 4 revoked")  # fmt: skip
    assert _code(alert.find("EventIdentification/EventTypeCode"))[0] == "110135"
    described = alert.find("ParticipantObjectIdentification")
    assert described.get("ParticipantObjectID") == "share-link:4"


def test_rfc5424_framing(archive: Archive) -> None:
    with archive.db.write() as s:
        row = audit.record(s, audit.AuditEvent.QUERY, user="u", detail="x")
        s.flush()
        row.created_at = dt.datetime(2026, 1, 2, 3, 4, 5, 678901)
        message = rfc5424(row, hostname="archive host")
    header, _, body = message.partition(b"\xef\xbb\xbf")
    fields = header.decode().split(" ")
    assert fields[0] == "<85>1" and fields[1] == "2026-01-02T03:04:05.678901Z"
    assert fields[2] == "archivehost" and fields[3] == "imaging-archive" and fields[5] == "DICOM+RFC3881"
    assert fields[6] == "-" and ET.fromstring(body).tag == "AuditMessage"


def test_writer_coalesces_flushes_and_retries(archive: Archive) -> None:
    failures = {"left": 2}

    @contextmanager
    def flaky():  # the index refuses the first two writes (say, a full disk), then recovers
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("disk full")
        with archive.db.write() as session:
            yield session

    writer = audit.AuditWriter(flaky, interval=0.05)
    threads = [
        threading.Thread(
            target=lambda: [
                writer.submit(audit.AuditEvent.INSTANCES_TRANSFERRED, user="oidc:a", study_uid="1.2", detail="WADO-RS frames of series 9")
                for _ in range(50)
            ]
        )
        for _ in range(4)
    ]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.submit(audit.AuditEvent.QUERY, user="oidc:b", detail="QIDO-RS studies")
    assert writer.flush(10)
    writer.close()
    with archive.db.read() as s:
        rows = audit.query(s)
    assert {r.user for r in rows} == {"oidc:a", "oidc:b"}
    frames = [r for r in rows if r.user == "oidc:a"]
    assert sum(int(r.detail.rsplit("×", 1)[1].rstrip(")")) if "×" in r.detail else 1 for r in frames) == 200
    assert len(frames) < 200  # coalesced
