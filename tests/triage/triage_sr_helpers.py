"""Reading back what the triage SR says, by walking its content tree (independent of highdicom)."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset


def content_items(ds: Dataset) -> Iterator[Dataset]:
    for item in getattr(ds, "ContentSequence", []):
        yield item
        yield from content_items(item)


def concept(item: Dataset) -> str:
    return str(item.ConceptNameCodeSequence[0].CodeMeaning) if "ConceptNameCodeSequence" in item else ""


def measurement_groups(sr: Dataset) -> list[Dataset]:
    return [i for i in content_items(sr) if i.ValueType == "CONTAINER" and concept(i) == "Measurement Group"]


def numbers(group: Dataset, name: str) -> list[float]:
    return [
        float(i.MeasuredValueSequence[0].NumericValue)
        for i in content_items(group)
        if i.ValueType == "NUM" and concept(i) == name
    ]


def scoords(group: Dataset, value_type: str) -> list[Dataset]:
    return [i for i in content_items(group) if i.ValueType == value_type]
