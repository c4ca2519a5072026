"""Consent registry (ground layer): patients who opted out of secondary use, keyed by (PatientID,
IssuerOfPatientID) of the clinical partition, and withdrawals of consent with erasure. Publication,
de-identify-on-receive and sharing check it; an opt-out publishes `imaging.events.PatientOptedOut`, a
withdrawal `imaging.events.ConsentWithdrawn`, in the same transaction, for features to react to."""

from imaging.consent.registry import (
    ConsentOptOut,
    ErasureRequest,
    ErasureStep,
    erasure_status,
    import_csv,
    is_opted_out,
    opt_out,
    opt_out_count,
    recent_erasures,
    record_step,
    revoke_opt_out,
    withdraw_consent,
    withdraw_opt_out,
)

__all__ = [
    "ConsentOptOut",
    "ErasureRequest",
    "ErasureStep",
    "erasure_status",
    "import_csv",
    "is_opted_out",
    "opt_out",
    "opt_out_count",
    "recent_erasures",
    "record_step",
    "revoke_opt_out",
    "withdraw_consent",
    "withdraw_opt_out",
]
