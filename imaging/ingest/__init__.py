"""The ingest layer: the one path by which anything enters the archive.

* `receive`    — `Receiver.receive(data, source=, called_ae=|partition=, expected=)`: what the protocol edges
                 (C-STORE, STOW-RS) call; decides the partition, de-identifies on receive for project-bound
                 AE titles and STOW roots, then ingests.
* `ingestor`   — `Ingestor.ingest(bytes)`: parse once → stage and fsync → publish → index (group commit) →
                 change log; Success only after all of it. Also used directly by in-process producers
                 (imports, AI results, published de-identified copies).
* `committer`  — group commit of concurrent ingests' index transactions (and `ingest_batch`: one sync and
                 one transaction for the parts of a STOW-RS request).
* `partitions` — research-project partitions: profile, key, the project's Deidentifier, the quarantine.
* `importer`   — files, folders and zip archives through the ingest path.
"""

from imaging.ingest.ingestor import BatchItem, Ingestor, IngestResult
from imaging.ingest.receive import ConsentRefused, Expected, Quarantined, Receiver

__all__ = ["BatchItem", "ConsentRefused", "Expected", "IngestResult", "Ingestor", "Quarantined", "Receiver"]
