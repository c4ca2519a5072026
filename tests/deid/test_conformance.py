"""dciodvfy (dicom3tools) finds no error in the output that was not already in the input."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from imaging.deid import Deidentifier, DeidOption, DeidProfile
from imaging.synthetic import SyntheticStudy, ct_series
from tests.conftest import require_program
from tests.deid.conftest import KEY
from tests.deid.corpus import build

pytestmark = pytest.mark.dicom3tools


def _errors(dciodvfy: str, ds: Dataset, path: Path) -> set[str]:
    ds.save_as(path, enforce_file_format=True)
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    # Values differ between input and output by design: compare the messages without them.
    return {
        re.sub(r"<[^>]*>\s*=\s*.*$|value\s*=.*$", "", line).strip()
        for line in lines
        if line.startswith("Error")
    }


@pytest.mark.parametrize(
    "options",
    [frozenset(), None, frozenset({DeidOption.CLEAN_DESCRIPTORS, DeidOption.CLEAN_STRUCTURED_CONTENT})],
    ids=["basic", "default", "cleaning"],
)
def test_no_new_dciodvfy_errors(options: frozenset[DeidOption] | None, tmp_path: Path) -> None:
    dciodvfy = require_program("/usr/bin/dciodvfy")
    profile = DeidProfile() if options is None else DeidProfile(options=options)
    deid = Deidentifier(key=KEY, profile=profile)
    objects = dict(build().datasets)
    objects["synthetic-ct"] = next(ct_series(SyntheticStudy(), 1, rows=32, columns=32))
    for kind, ds in objects.items():
        before = _errors(dciodvfy, ds, tmp_path / f"{kind}-in.dcm")
        result = deid.deidentify(ds)
        assert result.dataset is not None, result.reasons
        after = _errors(dciodvfy, result.dataset, tmp_path / f"{kind}-out.dcm")
        assert after <= before, (kind, sorted(after - before))


def test_synthetic_ct_output_has_no_error_at_all(tmp_path: Path) -> None:
    dciodvfy = require_program("/usr/bin/dciodvfy")
    ds = next(ct_series(SyntheticStudy(), 1, rows=32, columns=32))
    ds.AcquisitionNumber = 1
    before = _errors(dciodvfy, ds, tmp_path / "in.dcm")
    out = Deidentifier(key=KEY).deidentify(ds).dataset
    assert out is not None
    assert _errors(dciodvfy, out, tmp_path / "out.dcm") == before == set()
