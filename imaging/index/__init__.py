"""The index: SQLAlchemy schema, attribute extraction, matching, change log, metadata cache."""
