"""The index (below ingest, above storage): the SQLAlchemy schema (`schema`, columns named by DICOM
keyword), attribute extraction from received bytes (`extract`, `json_model`, `attributes`), matching and
queries for QIDO and C-FIND (`matching`, `query`), the write path (`writer`, `prepared`), the read API for
"instances of a study/series" (`reads`), counts (`stats`), the database and its migrations (`db`,
`migrations/`); instances leaving the index and their pending deletions (`removal`), IOCM rejection notes
(`rejection`), and when each study was last read (`access`)."""
