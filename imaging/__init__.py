"""Core archive: DIMSE gateway, durable storage, index, de-identification, sharing, jobs."""

__version__ = "0.1.0"
