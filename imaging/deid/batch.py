"""De-identify files and folders into a destination tree named only by new identifiers."""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from imaging.deid import part10
from imaging.deid.engine import Deidentifier

_SAFE_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


@dataclass
class BatchReport:
    """Counts and outputs of one batch; quarantined instances are listed by opaque identifiers only."""

    written: int = 0
    unchanged: int = 0  # already our output (sealed): written again as is
    quarantined: int = 0
    skipped: int = 0  # not DICOM / unreadable
    outputs: list[Path] = field(default_factory=list)
    quarantine: dict[str, list[str]] = field(default_factory=dict)  # opaque id -> reasons (no PHI)
    uid_map: dict[str, str] = field(default_factory=dict)  # re-identification table: keep it apart


def iter_files(sources: list[Path]) -> Iterator[Path]:
    """Every file under `sources` (files or folders), in a stable order; DICOMDIR files are skipped
    (they repeat identifiers of the instances and are rebuilt, not copied)."""
    for source in sources:
        candidates = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
        for path in candidates:
            if path.name.upper() != "DICOMDIR":
                yield path


def _path_part(uid: str, deidentifier: Deidentifier) -> str:
    # Retain UIDs may leave a source UID here: only digits and dots can become a path component.
    if _SAFE_UID.fullmatch(uid) and len(uid) <= 64:
        return uid
    return deidentifier.pseudonyms.uid_for("path:" + uid)


def read_file(path: Path) -> pydicom.Dataset:
    """A DICOM file: parsed directly when it is Explicit VR Little Endian or encapsulated (most),
    else by pydicom's reader."""
    data = path.read_bytes()
    return part10.read(data) or pydicom.dcmread(io.BytesIO(data))


def output_path(destination: Path, study: str, series: str, sop: str, deidentifier: Deidentifier) -> Path:
    parts = [_path_part(u or "unknown", deidentifier) for u in (study, series, sop)]
    return destination / parts[0] / parts[1] / f"{parts[2]}.dcm"


def _write_atomic(ds: pydicom.Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            part10.write(ds, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def deidentify_paths(
    sources: list[Path],
    destination: Path,
    deidentifier: Deidentifier,
    progress: Callable[[int, int], None] | None = None,
) -> BatchReport:
    """De-identify every DICOM file under `sources` into destination/<Study>/<Series>/<SOP>.dcm.

    progress(done, total) is called after each file.
    """
    files = list(iter_files(sources))
    report = BatchReport()
    pseudonyms = deidentifier.pseudonyms
    for done, path in enumerate(files, start=1):
        try:
            ds = read_file(path)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            report.skipped += 1
            if progress:
                progress(done, len(files))
            continue
        result = deidentifier.deidentify(ds)
        if result.quarantined or result.dataset is None:
            report.quarantined += 1
            sop = str(ds.get("SOPInstanceUID", "") or "")
            # Keyed, so the list never shows a source UID (even under Retain UIDs) nor a file name.
            opaque = pseudonyms.uid_for(sop) if sop else "file-" + pseudonyms.short_code("file", str(path))
            report.quarantine[opaque] = result.reasons
        else:
            out = result.dataset
            target = output_path(
                destination,
                str(out.get("StudyInstanceUID", "")),
                str(out.get("SeriesInstanceUID", "")),
                str(out.get("SOPInstanceUID", "")),
                deidentifier,
            )
            _write_atomic(out, target)
            report.outputs.append(target)
            if result.uid_map or not deidentifier.is_sealed(ds):
                report.written += 1
            else:
                report.unchanged += 1
            report.uid_map.update(result.uid_map)
        if progress:
            progress(done, len(files))
    return report
