"""AI triage: run a pinned MONAI bundle on stable series, file TID 1500 SR + BINARY SEG into the source
study and give the series a priority. Entry point: triage.pipeline.TriagePipeline."""
