"""Observability of a running archive: readiness of each component (`health`) and the Prometheus
collectors that read the index and the store at scrape time (`collectors`). The metrics observed where
things happen are defined in imaging.metrics (ground layer)."""
