"""The imaging archive: DIMSE gateway, durable storage, index, DICOMweb, de-identification, sharing, triage.

Layers, top to bottom (an import only points down; `lint-imports` checks it, contracts in pyproject.toml):
edges (`cli/`, `dimse/`, and the top-level `dicomweb` package) → composition (`app.py`) → features
(`sharing/`, `research/`, and the top-level `triage` package) → services (`jobs/`, `maintenance.py`,
`access/`, `console.py`, `web.py`) → `archive.py` → `ingest/` → `index/` → `storage/` → ground (`deid/`,
`consent/`, `audit/`, `config.py`, `errors.py`, `events.py`, `orm.py`, `partition.py`, `priority.py`).
"""

__version__ = "0.1.0"
