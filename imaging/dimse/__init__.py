"""DICOM gateway over DIMSE (an edge, pynetdicom): C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET (transcoding
where the peer refused the stored syntax: `transcode`) and Storage Commitment (`commitment_scp`). The SCP handlers
translate DIMSE to domain calls (C-STORE → `Receiver.receive`) and domain errors to DIMSE statuses; the
gateway (`server`), its extra processes (`processes`) and the C-STORE fast paths (`provider`,
`receive_socket`, `part10`) carry the protocol. Trust (issue 12): bounded, checked PDUs (`upper_layer`),
who may do what (`access`), DICOM TLS (`tls`), the audit trail (`audit_trail`)."""
