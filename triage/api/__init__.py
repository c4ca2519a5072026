"""REST resources of the triage feature: the worklist (`worklist`) and a study's findings (`results`)."""

from triage.api import results, worklist

routers = (worklist.router, results.router)
