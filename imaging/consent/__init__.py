"""Consent registry (ground layer): patients who opted out of secondary use, keyed by (PatientID,
IssuerOfPatientID) of the clinical partition. Publication, de-identify-on-receive and sharing check it; an
opt-out publishes `imaging.events.PatientOptedOut` in the same transaction for features to react to."""

from imaging.consent.registry import ConsentOptOut, import_csv, is_opted_out, opt_out, withdraw_opt_out

__all__ = ["ConsentOptOut", "import_csv", "is_opted_out", "opt_out", "withdraw_opt_out"]
