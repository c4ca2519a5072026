"""Work after ingest, driven by durable state in the index: stability, change-log consumers, jobs."""
