"""Checks on written output: every byte of the file is scanned, not only the parsed dataset."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from imaging.deid import DeidProfile
from tests.deid.corpus import Corpus


def file_bytes(ds: Dataset) -> bytes:
    """The dataset as a DICOM file (preamble, file meta, dataset) exactly as it would be written."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write(ds: Dataset, path: Path) -> bytes:
    data = file_bytes(ds)
    path.write_bytes(data)
    return path.read_bytes()


def leaks(data: bytes, corpus: Corpus, profile: DeidProfile) -> dict[str, str]:
    """Planted tokens found anywhere in `data` that no selected Retain option allows."""
    return {
        token: where
        for token, where in corpus.tokens.items()
        if token.encode("ascii") in data and corpus.retained_by.get(token) not in profile.options
    }


def walk(ds: Dataset) -> Iterator[pydicom.DataElement]:
    """Every element at every depth (file meta included)."""
    if hasattr(ds, "file_meta"):
        yield from ds.file_meta
    for elem in ds:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item)


def uids(ds: Dataset) -> set[str]:
    """Every UI value at every depth."""
    found: set[str] = set()
    for elem in walk(ds):
        if elem.VR == "UI" and elem.value:
            values = (
                elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]
            )
            found.update(str(v) for v in values)
    return found
