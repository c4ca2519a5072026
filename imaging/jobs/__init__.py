"""Work after ingest, driven by durable state in the index: series/study stability (`stability`), the job
runner with its change-log consumers and retries (`runner`), and scale-out through Dramatiq (`broker`).
Knows no feature by name: features register their job kinds at the composition root (imaging.app)."""
