"""Which consumers and job kinds the embedded runner has: each feature package registers its own."""

from __future__ import annotations

from imaging.archive import Archive
from imaging.jobs.runner import JobRunner


def build_runner(archive: Archive) -> JobRunner:
    runner = JobRunner(archive)
    from triage.worker import register as register_triage

    register_triage(runner, archive)
    from imaging.sharing.deliver import register as register_sharing

    register_sharing(runner, archive)
    return runner
