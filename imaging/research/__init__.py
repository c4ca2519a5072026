"""Research feature: projects (de-identified partitions with their own profile and key), publication of
clinical studies into them, cohorts (saved queries → manifest → zip or folder export) and their command
lines. The partition registry itself (table, key, Deidentifier) is in imaging.ingest.partitions, which the
ingest path and sharing use as well.

* `projects`    create / list projects; the optional re-identification table (beside the keys)
* `publication` publish_study: de-identify a clinical study into a project through the ingest path
* `cohorts`     saved queries, manifests, streamed zip and resumable folder export
* `cli`         `imaging project ...`, `imaging cohort ...`
* `api`         REST: /api/projects, /projects/{p}/cohorts
"""
