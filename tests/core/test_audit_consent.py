"""Audit records (PS3.15 A.5 event codes, XML export) and the consent registry."""

from pathlib import Path
from xml.etree import ElementTree as ET

from imaging import audit, consent
from imaging.archive import Archive
from imaging.config import load_settings


def test_audit_record_query_and_xml(tmp_path: Path) -> None:
    archive = Archive.open(load_settings(data_dir=tmp_path / "d"))
    with archive.db.write() as s:
        audit.record(
            s, audit.AuditEvent.QUERY, user="token:clinician", study_uid="1.2.3", detail="StudyDate=2024"
        )
        audit.record(
            s,
            audit.AuditEvent.INSTANCES_TRANSFERRED,
            user="system",
            source="peer:B",
            study_uid="1.2.3",
            patient_ref="PSEUDO1",
            outcome=audit.Outcome.SERIOUS_FAILURE,
        )
    with archive.db.read() as s:
        rows = audit.query(s, study_uid="1.2.3")
        assert [r.event_id for r in rows] == ["110112", "110104"]
        only = audit.query(s, event=audit.AuditEvent.INSTANCES_TRANSFERRED)
        xml = ET.fromstring(audit.to_xml(only[0]))
    assert xml.find("EventIdentification").get("EventOutcomeIndicator") == "8"
    assert xml.find("EventIdentification/EventID").get("csd-code") == "110104"
    ids = [p.get("ParticipantObjectID") for p in xml.findall("ParticipantObjectIdentification")]
    assert ids == ["1.2.3", "PSEUDO1"]
    archive.close()


def test_consent_registry(tmp_path: Path) -> None:
    archive = Archive.open(load_settings(data_dir=tmp_path / "d"))
    csv_file = tmp_path / "optouts.csv"
    csv_file.write_text("PatientID,IssuerOfPatientID\nP1,\nP2,HOSP\nP1,\n")
    with archive.db.write() as s:
        assert consent.import_csv(s, csv_file) == 2  # the duplicate row is not counted twice
        assert consent.is_opted_out(s, "P2", "HOSP")
        assert not consent.is_opted_out(s, "P2")  # another issuer's P2 is another patient
        assert not consent.opt_out(s, "P1")
        assert consent.withdraw_opt_out(s, "P1")
        assert not consent.is_opted_out(s, "P1")
    archive.close()
