"""Retention feature: what leaves the archive, when, and on whose word.

* `deletion`  delete a study, series or instance (admin; CLI, REST and DICOMweb DELETE alike), audited as
              Study Deleted; storage reclaimed at once.
* `rules`     retention rules per partition (age since receipt, since last access, by modality), with a
              preview of what a rule would delete; applied daily by a durable job.
* `schedule`  the durable jobs: the purge of objects whose deletion is due (IOCM rejection delays, leftovers
              of an interrupted deletion), the daily rule runs, erasures.
* `erasure`   a withdrawal of consent (imaging.events.ConsentWithdrawn) erases the patient's de-identified
              copies in every project partition, and with them every cohort.
* `api`, `cli` REST and DICOMweb DELETE routes; `imaging delete ...`, `imaging retention ...`.

The index does the removing itself (imaging.index.removal, imaging.index.rejection: rejection notes take
effect in the ingest transaction); this feature decides what and when.
"""
