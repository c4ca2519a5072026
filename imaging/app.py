"""Composition root: the one module that names every feature and wires it into the core.

Each feature is declared here once — its job kinds and change-log consumers, the domain events it listens
to, its command-line sub-apps, its HTTP routers and its metrics — and the core (jobs, ingest, index, storage) never
imports a feature. The edges ask this module for what to mount: `imaging.cli` for the sub-apps,
`dicomweb.app` for the routers, `imaging serve` / `imaging worker` for the job runner. Importing this module
also defines every table of the index (each feature's models are imported with it), which is what
Alembic's autogeneration needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import typer
from fastapi import APIRouter
from prometheus_client.core import Metric

import triage.api
import triage.cli
import triage.worker
from imaging.archive import Archive
from imaging.events import ConsentWithdrawn, InstancesRemoved, PatientOptedOut, subscribe
from imaging.federation import api as federation_api
from imaging.federation import cli as federation_cli
from imaging.jobs.runner import JobRunner
from imaging.research import api as research_api
from imaging.research import cli as research_cli
from imaging.retention import api as retention_api
from imaging.retention import cli as retention_cli
from imaging.retention import erasure as retention_erasure
from imaging.retention import jobs as retention_jobs
from imaging.retention import schedule as retention_schedule
from imaging.sharing import api as sharing_api
from imaging.sharing import cli as sharing_cli
from imaging.sharing import delivery, erasure, outbox
from imaging.sharing import metrics as sharing_metrics


@dataclass(frozen=True)
class Feature:
    name: str
    # Registers the feature's job kinds and change-log consumers with a runner (may decline, e.g. triage
    # when its bundle does not load).
    register_jobs: Callable[[JobRunner, Archive], None] | None = None
    # (event type, handler(session, event)): run inside the publisher's transaction.
    subscriptions: tuple[tuple[type, Callable[..., None]], ...] = ()
    commands: tuple[tuple[str, typer.Typer, str], ...] = ()  # (name, sub-app, help)
    routers: tuple[APIRouter, ...] = field(default_factory=tuple)
    # Prometheus metrics the feature reads from the index at scrape time (imaging.observability).
    metrics: tuple[Callable[[Archive], Iterable[Metric]], ...] = ()


FEATURES: tuple[Feature, ...] = (
    Feature(
        "federation",
        commands=(
            (
                "federation",
                federation_cli.federation_app,
                "Federated cohort discovery and access requests across sites.",
            ),
        ),
        routers=federation_api.routers,
    ),
    Feature(
        "research",
        commands=(
            ("project", research_cli.project_app, "Research projects (de-identified partitions)."),
            ("cohort", research_cli.cohort_app, "Cohorts: saved queries, exported with a manifest."),
        ),
        routers=research_api.routers,
    ),
    Feature(
        "retention",
        register_jobs=retention_jobs.register,
        subscriptions=(
            (InstancesRemoved, retention_schedule.on_instances_removed),
            (ConsentWithdrawn, retention_erasure.on_consent_withdrawn),
        ),
        commands=(
            ("delete", retention_cli.delete_app, "Delete a study, series or instance (audited)."),
            ("retention", retention_cli.retention_app, "Retention rules, previews, pending deletions."),
        ),
        routers=retention_api.routers,
    ),
    Feature(
        "sharing",
        register_jobs=delivery.register,
        subscriptions=(
            (PatientOptedOut, outbox.on_patient_opted_out),
            (InstancesRemoved, outbox.on_instances_removed),
            (ConsentWithdrawn, erasure.on_consent_withdrawn),
        ),
        commands=(
            ("share", sharing_cli.share_app, "Cross-site sharing: peers, policies, the outbox, links."),
        ),
        routers=sharing_api.routers,
        metrics=(sharing_metrics.outbox_metrics,),
    ),
    Feature(
        "triage",
        register_jobs=triage.worker.register,
        commands=(("triage", triage.cli.app, "AI triage with MONAI bundles."),),
        routers=triage.api.routers,
    ),
)


def compose() -> None:
    """Subscribe every feature's event handlers (idempotent). Called on import: whoever imports the
    composition root gets a fully wired archive."""
    for feature in FEATURES:
        for event_type, handler in feature.subscriptions:
            subscribe(event_type, handler)


def build_runner(archive: Archive, *, kinds: list[str] | None = None) -> JobRunner:
    """The job runner with every feature's job kinds (only `kinds`, when given: e.g. a GPU node's worker)."""
    runner = JobRunner(archive)
    for feature in FEATURES:
        if feature.register_jobs is not None:
            feature.register_jobs(runner, archive)
    if kinds:
        runner.kinds = {k: v for k, v in runner.kinds.items() if k in kinds}
    return runner


def commands() -> list[tuple[str, typer.Typer, str]]:
    return [command for feature in FEATURES for command in feature.commands]


def routers() -> list[APIRouter]:
    return [router for feature in FEATURES for router in feature.routers]


def metrics() -> list[Callable[[Archive], Iterable[Metric]]]:
    return [collect for feature in FEATURES for collect in feature.metrics]


def describe() -> dict[str, Any]:
    """What is wired, for `imaging --version`-style introspection and tests."""
    return {f.name: {"commands": [c[0] for c in f.commands], "routers": len(f.routers)} for f in FEATURES}


compose()
