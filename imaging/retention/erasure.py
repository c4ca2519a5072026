"""Erasure on withdrawal of consent (GDPR Art. 17), the local part: the patient's de-identified copies leave
every research project partition, and so every cohort (a cohort is a query over its project's partition).

A project holds the patient under the pseudonym its key derives from the clinical (PatientID,
IssuerOfPatientID) — for published copies and for what was de-identified on receive alike — so each
project's key finds them without any table linking the two. The handler records the step and queues the
durable job `retention.erase` in the withdrawal's own transaction; the job removes the copies (audited as
Study Deleted by the requester), deletes their objects and marks the step done with what it erased. The
re-identification table and the audit trail are kept, as the law allows: they are not copies of the images.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from imaging.archive import Archive
from imaging.consent import ErasureRequest, record_step
from imaging.events import ConsentWithdrawn
from imaging.index.removal import purge, remove_instances, select_removable
from imaging.index.schema import Patient, Study
from imaging.ingest.partitions import Project, deidentifier_for
from imaging.jobs.runner import enqueue
from imaging.retention.schedule import ERASE

STEP = "projects"


def on_consent_withdrawn(session: Session, event: ConsentWithdrawn) -> None:
    """Subscribed at the composition root: record the step and queue its job, in the withdrawal's transaction."""
    record_step(session, event.request_pk, STEP, "pending", "de-identified copies in research projects")
    enqueue(session, ERASE, f"erase:{event.request_pk}", {"request": event.request_pk})


def run_erasure(archive: Archive, payload: dict[str, Any]) -> dict[str, Any]:
    """The `retention.erase` job (idempotent: what is gone stays gone, a second run finds nothing)."""
    request_pk = int(payload["request"])
    with archive.db.read() as session:
        request = session.get(ErasureRequest, request_pk)
        if request is None:
            return {"skipped": "no such request"}
        patient_id, issuer, user = request.PatientID, request.IssuerOfPatientID, request.requested_by
        projects = list(session.scalars(select(Project.name).order_by(Project.name)))
    erased: dict[str, int] = {}
    keys: list[str] = []
    for project in projects:
        pseudonym = deidentifier_for(archive.db, archive.settings.keys_path, project).pseudonym_for(
            patient_id, issuer
        )

        def work(session: Session, project: str = project, pseudonym: str = pseudonym) -> list[str]:
            studies = session.scalars(
                select(Study.StudyInstanceUID)
                .join(Patient, Patient.patient_pk == Study.patient_pk)
                .where(Patient.partition == project, Patient.PatientID == pseudonym)
            ).all()
            taken: list[str] = []
            for study in studies:
                rows = select_removable(session, project, study)
                removed = remove_instances(
                    session,
                    project,
                    rows,
                    reason="erased",
                    user=user or "system",
                    detail=f"erasure request {request_pk}: consent withdrawn (GDPR Art. 17)",
                )
                erased[project] = erased.get(project, 0) + removed.instances
                taken += removed.keys
            return taken

        keys += archive.db.transaction(work, attempts=1)
    purge(archive.db, archive.store, keys=keys)
    detail = (
        ", ".join(f"{count} instances from project {name}" for name, count in sorted(erased.items()))
        or "no copies in any project"
    )
    archive.db.transaction(lambda s: record_step(s, request_pk, STEP, "done", f"erased {detail}"))
    return {"erased": erased}
