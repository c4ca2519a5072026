"""Bulk import of files, folders and zip archives through the single ingest path."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from imaging.errors import ArchiveError
from imaging.index.writer import Disposition
from imaging.ingest.ingestor import Ingestor


@dataclass
class ImportReport:
    stored: int = 0
    duplicates: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # "path: reason" (paths are the operator's own)


def sources(paths: list[Path]) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(name, reader) for every candidate file; zip members are read lazily."""
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if zipfile.is_zipfile(file):
                with zipfile.ZipFile(file) as archive:
                    for info in archive.infolist():
                        if not info.is_dir():
                            yield f"{file}:{info.filename}", lambda a=archive, i=info: a.read(i)  # type: ignore[misc]
            else:
                yield str(file), file.read_bytes


def count_sources(paths: list[Path]) -> int:
    return sum(1 for _ in sources(paths))


def import_paths(
    ingestor: Ingestor, paths: list[Path], *, progress: Callable[[], None] | None = None
) -> ImportReport:
    report = ImportReport()
    for name, read in sources(paths):
        try:
            data = read()
            if len(data) < 132 or data[128:132] != b"DICM":
                raise ArchiveError("not a DICOM Part 10 file")
            result = ingestor.ingest(data, source="import")
        except ArchiveError as exc:
            report.failed += 1
            report.failures.append(f"{name}: {exc}")
        else:
            if result.disposition is Disposition.DUPLICATE:
                report.duplicates += 1
            else:
                report.stored += 1
        if progress:
            progress()
    return report
