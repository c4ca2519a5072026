"""Regenerates the reference bundle (`python -m triage.training.train`) and evaluates it
(`python -m triage.training.evaluate`) on synthetic chest-CT phantoms."""
