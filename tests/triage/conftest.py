"""Fixtures for the triage tests. Test data: synthetic chest-CT phantoms (triage.training.phantom)
rendered into imaging.synthetic CT datasets; seeds fixed here, nothing downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydicom.dataset import Dataset

from imaging.synthetic import SyntheticStudy
from triage.pipeline import TriagePipeline, TriageResult
from triage.training.phantom import Phantom, random_phantom
from triage.training.synthetic_series import phantom_series, series_center_z
from triage.training.train import REFERENCE_BUNDLE

ROWS, COUNT, PIXEL, THICKNESS = 256, 100, 1.4, 2.5  # small but chest-sized: 358 mm field, 250 mm long


@pytest.fixture(scope="session", autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)  # the CI / dev machines are shared


@pytest.fixture(scope="session")
def reference_bundle() -> Path:
    return REFERENCE_BUNDLE


@pytest.fixture(scope="session")
def pipeline(reference_bundle: Path) -> TriagePipeline:
    return TriagePipeline.from_bundle(reference_bundle, device="cpu")


def planted_phantom(nodules: bool = True) -> Phantom:
    """A fixed training-distribution phantom with nodules of 6.5, 9 and 12 mm (positions: `.nodules`)."""
    return random_phantom(
        4242, z_center=series_center_z(COUNT, THICKNESS), nodule_diameters=(6.5, 9.0, 12.0) if nodules else ()
    )


@pytest.fixture(scope="session")
def study() -> SyntheticStudy:
    return SyntheticStudy()


@pytest.fixture(scope="session")
def nodule_phantom() -> Phantom:
    return planted_phantom()


@pytest.fixture(scope="session")
def nodule_series(nodule_phantom: Phantom, study: SyntheticStudy) -> list[Dataset]:
    return phantom_series(
        nodule_phantom,
        study=study,
        rows=ROWS,
        columns=ROWS,
        count=COUNT,
        pixel_spacing=PIXEL,
        slice_thickness=THICKNESS,
    )


@pytest.fixture(scope="session")
def clean_series(study: SyntheticStudy) -> list[Dataset]:
    return phantom_series(
        planted_phantom(nodules=False),
        study=study,
        rows=ROWS,
        columns=ROWS,
        count=COUNT,
        pixel_spacing=PIXEL,
        slice_thickness=THICKNESS,
        series_number=2,
        seed=7,
    )


@pytest.fixture(scope="session")
def nodule_result(pipeline: TriagePipeline, nodule_series: list[Dataset]) -> TriageResult:
    return pipeline.run(nodule_series)


@pytest.fixture(scope="session")
def clean_result(pipeline: TriagePipeline, clean_series: list[Dataset]) -> TriageResult:
    return pipeline.run(clean_series)
