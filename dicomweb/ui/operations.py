"""The site operator's overview: the readiness of each component as `/health` reports it and the health of
the durable state (dicomweb.ui.health), and storage and index
statistics — counts and bytes per partition (imaging.index.stats, as `imaging stats` prints them) and the
instances received per day — drawn as server-side SVG charts with their numbers beside them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from dicomweb.ui import charts
from dicomweb.ui.health import components, readiness
from dicomweb.ui.render import render, size
from imaging.access import Permission
from imaging.access.http import Caller, Require
from imaging.index.stats import PartitionCounts, instances_per_day, partition_counts

router = APIRouter(prefix="/ui/operations", include_in_schema=False)
Operator = Annotated[Caller, Depends(Require(Permission.OPERATIONS))]


@router.get("", summary="Health and statistics (page)")
def operations_page(
    request: Request, caller: Operator, days: Annotated[int, Query(ge=7, le=366)] = 30
) -> Response:
    with caller.archive.db.read() as session:
        partitions = partition_counts(session)
        per_day = instances_per_day(session, days)
    totals = PartitionCounts(
        "all",
        sum(p.patients for p in partitions),
        sum(p.studies for p in partitions),
        sum(p.series for p in partitions),
        sum(p.instances for p in partitions),
        sum(p.bytes for p in partitions),
    )
    per_day_chart = charts.columns(
        charts.bars(
            [(d.day.strftime("%m-%d"), d.instances) for d in per_day], lambda v: f"{v:.0f} instances"
        ),
        title="Instances received per day",
        ident="per-day",
        every=max(1, len(per_day) // 6),
    )
    partition_chart = charts.rows(
        charts.bars([(p.partition, p.bytes) for p in partitions], lambda v: size(int(v))),
        title="Bytes per partition",
        ident="per-partition",
    )
    ready, ready_components = readiness(getattr(request.app.state, "readiness", None))
    return render(
        request,
        caller,
        "operations.html",
        ready=ready,
        readiness=ready_components,
        health=components(caller.archive),
        partitions=partitions,
        totals=totals,
        days=per_day,
        per_day_chart=per_day_chart,
        partition_chart=partition_chart,
    )
