"""AI triage (a feature): run a pinned MONAI bundle on stable series, file TID 1500 SR + BINARY SEG into the
source study and give the study a priority. Entry point: triage.pipeline.TriagePipeline; the archive's job
in `worker`, the command line in `cli`, the worklist and findings REST in `api/`."""
