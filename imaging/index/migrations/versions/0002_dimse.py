"""issue 12 (DIMSE): a SOP Instance UID is unique in its partition; Begin Transferring's event code

Revision ID: 0002_dimse
Revises: 0001
Create Date: 2026-12-01

* instance.partition: the study's partition, repeated on the instance so that a unique index
  (uq_instance_uid: partition, SOPInstanceUID) keeps one instance per UID and partition, wherever it was sent.
  Rows that broke the rule before it existed (the same UID in two series or studies) keep the first stored, as
  the `reject` policy would have: the later rows leave the index, each recorded as a `rejected` storage event
  with its object key (the object stays in storage; `imaging fsck` lists it as unindexed), and the counters of
  the series and studies they were in are recomputed; emptied series, studies and patients go.
* audit_record: Begin Transferring DICOM Instances is DCM 110102 (PS3.15 A.5.3.3); it was written as 110100
  (Application Activity).
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0002_dimse"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "instance", sa.Column("partition", sa.String(length=64), nullable=False, server_default="clinical")
    )
    op.execute(
        "UPDATE instance SET partition = (SELECT study.partition FROM series JOIN study"
        " ON study.study_pk = series.study_pk WHERE series.series_pk = instance.series_pk)"
    )
    _drop_later_duplicates()
    op.create_index("uq_instance_uid", "instance", ["partition", "SOPInstanceUID"], unique=True)
    op.execute("UPDATE audit_record SET event_id = '110102' WHERE event_id = '110100'")


def downgrade() -> None:
    op.execute("UPDATE audit_record SET event_id = '110100' WHERE event_id = '110102'")
    op.drop_index("uq_instance_uid", table_name="instance")
    with op.batch_alter_table("instance") as batch:
        batch.drop_column("partition")


def _drop_later_duplicates() -> None:
    conn = op.get_bind()
    later = conn.execute(
        sa.text(
            "SELECT i.instance_pk, i.series_pk, i.\"SOPInstanceUID\", i.object_key FROM instance i"
            " WHERE EXISTS (SELECT 1 FROM instance j WHERE j.partition = i.partition"
            " AND j.\"SOPInstanceUID\" = i.\"SOPInstanceUID\" AND j.instance_pk < i.instance_pk)"
        )
    ).all()
    if not later:
        return
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for instance_pk, _series_pk, sop_instance_uid, object_key in later:
        conn.execute(
            sa.text(
                "INSERT INTO storage_event (kind, \"SOPInstanceUID\", old_key, new_key, source, created_at)"
                " VALUES ('rejected', :uid, '', :key, 'migration 0002_dimse', :now)"
            ),
            {"uid": sop_instance_uid, "key": object_key, "now": now},
        )
        conn.execute(sa.text("DELETE FROM instance WHERE instance_pk = :pk"), {"pk": instance_pk})
    series = sorted({row[1] for row in later})
    for series_pk in series:
        conn.execute(
            sa.text(
                "UPDATE series SET \"NumberOfSeriesRelatedInstances\" ="
                " (SELECT COUNT(*) FROM instance WHERE instance.series_pk = series.series_pk)"
                " WHERE series_pk = :pk"
            ),
            {"pk": series_pk},
        )
    studies = {
        row[0]
        for row in conn.execute(
            sa.text("SELECT study_pk FROM series WHERE series_pk IN (%s)" % ",".join(map(str, series)))
        )
    }
    conn.execute(
        sa.text(
            "DELETE FROM series WHERE \"NumberOfSeriesRelatedInstances\" = 0 AND series_pk IN (%s)"
            % ",".join(map(str, series))
        )
    )
    for study_pk in sorted(studies):
        rows = conn.execute(
            sa.text(
                "SELECT series.\"Modality\", instance.\"SOPClassUID\" FROM series JOIN instance"
                " ON instance.series_pk = series.series_pk WHERE series.study_pk = :pk"
            ),
            {"pk": study_pk},
        ).all()
        if not rows:
            conn.execute(sa.text("DELETE FROM study WHERE study_pk = :pk"), {"pk": study_pk})
            continue
        conn.execute(
            sa.text(
                "UPDATE study SET \"NumberOfStudyRelatedInstances\" = :instances,"
                " \"NumberOfStudyRelatedSeries\" = (SELECT COUNT(*) FROM series WHERE series.study_pk = :pk),"
                " \"ModalitiesInStudy\" = :modalities, \"SOPClassesInStudy\" = :classes, stable = :stable"
                " WHERE study_pk = :pk"
            ),
            {
                "pk": study_pk,
                "instances": len(rows),
                "modalities": "\\".join(sorted({m for m, _ in rows if m})),
                "classes": "\\".join(sorted({c for _, c in rows if c})),
                "stable": False,
            },
        )
    conn.execute(
        sa.text("DELETE FROM patient WHERE NOT EXISTS (SELECT 1 FROM study WHERE study.patient_pk = patient.patient_pk)")
    )
