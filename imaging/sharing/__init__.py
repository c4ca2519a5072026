"""Cross-site sharing (a feature): peers, policies, durable outbox and delivery, share links.

Flow: StudyStable / StudyPriority (change log) → `delivery.SharingConsumer` → `policies.jobs_for_study`
(stable clinical study, patient not opted out, rules match) → `outbox.enqueue_study` (one row per
instance x peer x project, unique) + a `share.deliver` job per peer x project x study in the same
transaction → `delivery.deliver_group` (consent re-checked, de-identify at delivery time with the
project's profile and key, send in a bounded thread pool, verify at the peer, audit; retried by the job
runner with exponential backoff and jitter) → rows `verified` | `failed` | `cancelled` | `quarantined`.

* `models`   tables: sharing_peer, sharing_policy, sharing_outbox, share_link, sharing_erasure
* `peers`    PeerClient protocol; DicomwebPeer (STOW-RS/QIDO-RS), DimsePeer (C-STORE/C-FIND),
             OrthancPeer (REST); peer registry (in the index; secrets in `<keys_path>/peers/`)
* `policies` rules → peers; `outbox` queueing, manual shares, status, retry, opt-out cancellation
* `delivery` the delivery job and its registration with the job runner
* `erasure`  on a withdrawal of consent (ConsentWithdrawn), delete requests to every peer that received
             the patient's instances, each confirmed by a query (`share.erase-plan`, `share.erase`)
* `links`    share links; `cli` the command lines; `api` the REST resources
The consent registry is below this package (imaging.consent); an opt-out reaches the outbox through the
PatientOptedOut event (`outbox.on_patient_opted_out`, subscribed at the composition root, imaging.app);
instances deleted or rejected here reach it through InstancesRemoved (`outbox.on_instances_removed`).
Peers are configured in the index (admin API `PUT /api/peers/{name}` or `imaging share peer add`), not in
Settings, so they can change while the server runs; Settings hold only the delivery tuning
(`share_concurrency`, `share_max_attempts`, `share_retry_base_seconds`, `share_link_max_days`).
"""
