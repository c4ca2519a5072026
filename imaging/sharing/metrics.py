"""The sharing outbox in Prometheus metrics: deliveries per peer and status, read at scrape time
(registered through the composition root, imaging.app)."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from imaging.archive import Archive
from imaging.sharing.models import OutboxRow


def outbox_metrics(archive: Archive) -> Iterable[Metric]:
    gauge = GaugeMetricFamily(
        "imaging_outbox", "Instances in the sharing outbox per peer and status", labels=["peer", "status"]
    )
    with archive.db.read() as session:
        rows = session.execute(
            select(OutboxRow.peer, OutboxRow.status, func.count()).group_by(OutboxRow.peer, OutboxRow.status)
        ).all()
    for peer, status, count in rows:
        gauge.add_metric([peer, status], count)
    return [gauge]
