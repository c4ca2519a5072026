"""Series-selection rules."""

from __future__ import annotations

import pydantic
import pytest
from pydicom.dataset import Dataset

from imaging.synthetic import ct_series
from tests.triage.chest_series import ChestSeries
from triage.selection import SelectionRules


def series(count: int = 40, **changes: object) -> list[Dataset]:
    datasets = list(ct_series(count=count, rows=8, columns=8))
    for ds in datasets:
        for keyword, value in changes.items():
            setattr(ds, keyword, value)
    return datasets


def test_axial_chest_ct_is_selected() -> None:
    decision = SelectionRules().evaluate(series())
    assert decision.selected and decision.reasons == ()


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"Modality": "MR"}, "modality"),
        ({"BodyPartExamined": "HEAD"}, "body part"),
        ({"ImageOrientationPatient": [0, 1, 0, 0, 0, -1]}, "not axial"),  # sagittal
        ({"SliceThickness": 8.0}, "slice thickness"),
        ({"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}, "image type has"),
        ({"ImageType": ["DERIVED", "SECONDARY", "AXIAL"]}, "image type lacks"),
        ({"SeriesDescription": "Topogram 0.6 T20f"}, "exclude pattern"),
    ],
)
def test_each_rule_rejects(changes: dict[str, object], reason: str) -> None:
    decision = SelectionRules().evaluate(series(**changes))
    assert not decision.selected
    assert any(reason in r for r in decision.reasons), decision.reasons


def test_too_few_slices_and_empty_series() -> None:
    assert not SelectionRules().evaluate(series(count=10))
    assert SelectionRules(min_slices=10).evaluate(series(count=10))
    assert SelectionRules().evaluate([]).reasons == ("empty series",)


def test_slightly_tilted_gantry_is_still_axial() -> None:
    tilted = [1, 0, 0, 0, 0.9848, -0.1736]  # 10 degrees
    assert SelectionRules().evaluate(series(ImageOrientationPatient=tilted))


def test_missing_body_part_passes_unless_required() -> None:
    datasets = series()
    for ds in datasets:
        del ds.BodyPartExamined
    assert SelectionRules().evaluate(datasets)
    assert not SelectionRules(require_body_part=True).evaluate(datasets)


def test_description_include_regex_and_attribute_mappings() -> None:
    rules = SelectionRules(description_include=[r"(?i)lung|thorax"], min_slices=1)
    assert not rules.evaluate(series(count=1, SeriesDescription="AXIAL 1.25"))
    mapping = {
        "Modality": "CT",
        "SeriesDescription": "Thorax 1.0 B70f",
        "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
        "SliceThickness": "1.0",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
    }
    assert rules.evaluate([mapping])


def test_invalid_regex_is_rejected_when_configured() -> None:
    with pytest.raises(pydantic.ValidationError):
        SelectionRules(description_include=["(unclosed"])


def test_enhanced_ct_is_judged_on_its_frames_and_functional_groups() -> None:
    enhanced = ChestSeries(rows=8, columns=8, slices=40).enhanced()
    assert "SliceThickness" not in enhanced and "ImageOrientationPatient" not in enhanced
    decision = SelectionRules().evaluate([enhanced])
    assert decision.selected, decision.reasons
    short = ChestSeries(rows=8, columns=8, slices=12).enhanced()
    assert SelectionRules().evaluate([short]).reasons == ("12 slices < 30",)
