"""dciodvfy (dicom3tools) finds no error in the output that was not already in the input.

Three sets of objects: the corpus with planted PHI, pydicom's bundled test files (real objects of many
IODs, origin: pydicom's test data), and objects of each IOD with every attribute filled (iod_fill.py:
a representative set here, every IOD highdicom describes in the slow test).
"""

from __future__ import annotations

import io
import re
import subprocess
import warnings
from functools import lru_cache
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from imaging.deid import Deidentifier, DeidOption, DeidProfile
from imaging.synthetic import SyntheticStudy, ct_series
from tests.archive_fixtures import bundled_testdata_files
from tests.conftest import require_program
from tests.deid import iod_fill
from tests.deid.conftest import KEY
from tests.deid.corpus import build
from tests.deid.test_leaks import PROFILES

pytestmark = pytest.mark.dicom3tools
# Values differ between input and output by design: messages are compared without them.
_VALUE = re.compile(r"<[^>]*>\s*=\s*.*$|value\s*=.*$")
_UID = re.compile(r"<[0-9.]+>|\b\d+(\.\d+){2,}\b|(?<=UID )\S+")
CONFORMANCE_PROFILES = {
    **PROFILES,
    "cleaning+pixels": DeidProfile(options=PROFILES["cleaning"].options | {DeidOption.CLEAN_PIXEL_DATA}),
}


def _errors(dciodvfy: str, ds: Dataset, path: Path) -> set[str]:
    ds.save_as(path, enforce_file_format=True)
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    return {_UID.sub("<uid>", _VALUE.sub("", line)).strip() for line in lines if line.startswith("Error")}


class Checker:
    """dciodvfy before and after; each input is checked once per module (inputs are not modified)."""

    def __init__(self, dciodvfy: str, tmp: Path) -> None:
        self.dciodvfy, self.tmp = dciodvfy, tmp
        self._before: dict[int, set[str]] = {}
        self._engines: dict[DeidProfile, Deidentifier] = {}

    def new_errors(self, objects: dict[str, Dataset], profile: DeidProfile) -> dict[str, list[str]]:
        """{object: errors its de-identified output has and it had not}; quarantined objects skipped."""
        if profile not in self._engines:
            self._engines[profile] = Deidentifier(key=KEY, profile=profile)
        deid = self._engines[profile]
        new: dict[str, list[str]] = {}
        for kind, ds in objects.items():
            result = deid.deidentify(ds)
            if result.dataset is None:
                continue  # withheld (burned-in text risk under a profile without Clean Pixel Data)
            if id(ds) not in self._before:  # the object sets are cached: one input, one check
                self._before[id(ds)] = _errors(self.dciodvfy, ds, self.tmp / "in.dcm")
            after = _errors(self.dciodvfy, result.dataset, self.tmp / "out.dcm")
            if after - self._before[id(ds)]:
                new[kind] = sorted(after - self._before[id(ds)])
        return new


@pytest.fixture(scope="module")
def checker(tmp_path_factory: pytest.TempPathFactory) -> Checker:
    return Checker(require_program("/usr/bin/dciodvfy"), tmp_path_factory.mktemp("dciodvfy"))


@lru_cache(maxsize=1)
def _corpus() -> dict[str, Dataset]:
    objects = dict(build().datasets)
    objects["synthetic-ct"] = next(ct_series(SyntheticStudy(), 1, rows=32, columns=32))
    return objects


@lru_cache(maxsize=2)
def _filled(every: bool) -> dict[str, Dataset]:
    if every:
        return {sop: iod_fill.build(sop) for sop in iod_fill.sop_classes()}
    return {kind: iod_fill.build(sop) for sop, kind in iod_fill.REPRESENTATIVE.items()}


@lru_cache(maxsize=1)
def _bundled() -> dict[str, Dataset]:
    """pydicom's test files that are Part 10 instances pydicom can write back as they are."""
    objects = {}
    for path in bundled_testdata_files():
        if path.suffix != ".dcm" or "truncated" in path.name:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's odd files warn about themselves
            try:
                ds = pydicom.dcmread(path)
                if "SOPClassUID" not in ds or "file_meta" not in ds.__dict__:
                    continue
                ds.save_as(io.BytesIO(), enforce_file_format=True)
            except Exception:  # not Part 10, or deliberately broken
                continue
        objects[path.name] = ds
    return objects


@pytest.mark.parametrize("name", sorted(CONFORMANCE_PROFILES))
def test_no_new_dciodvfy_errors_on_the_corpus(name: str, checker: Checker) -> None:
    assert not checker.new_errors(_corpus(), CONFORMANCE_PROFILES[name])


@pytest.mark.parametrize("name", ["basic", "default", "cleaning+pixels"])
def test_no_new_dciodvfy_errors_on_every_attribute_of_representative_iods(
    name: str, checker: Checker
) -> None:
    """Each Type 1C/2C condition between attributes survives de-identification (issue 16: Responsible
    Person Role and Ethics Committee Name were left present when the table removed their subject)."""
    assert not checker.new_errors(_filled(False), CONFORMANCE_PROFILES[name])


@pytest.mark.slow
def test_no_new_dciodvfy_errors_on_every_attribute_of_every_iod(checker: Checker) -> None:
    """Every IOD highdicom describes (about 180), each under one of three option sets in turn."""
    objects = _filled(True)
    assert len(objects) > 150
    names = ("basic", "default", "cleaning+pixels")
    new: dict[str, list[str]] = {}
    for i, (sop, ds) in enumerate(objects.items()):
        new.update(checker.new_errors({sop: ds}, CONFORMANCE_PROFILES[names[i % len(names)]]))
    assert not new


@pytest.mark.parametrize(
    "name", ["basic", "retain-all", pytest.param("cleaning+pixels", marks=pytest.mark.slow)]
)
def test_no_new_dciodvfy_errors_on_pydicoms_test_files(name: str, checker: Checker) -> None:
    """Real objects of many IODs and transfer syntaxes (the pixel profile OCRs every SC: slow)."""
    objects = _bundled()
    assert len(objects) > 40
    assert not checker.new_errors(objects, CONFORMANCE_PROFILES[name])


def test_synthetic_ct_output_has_no_error_at_all(tmp_path: Path) -> None:
    dciodvfy = require_program("/usr/bin/dciodvfy")
    ds = next(ct_series(SyntheticStudy(), 1, rows=32, columns=32))
    ds.AcquisitionNumber = 1
    before = _errors(dciodvfy, ds, tmp_path / "in.dcm")
    out = Deidentifier(key=KEY).deidentify(ds).dataset
    assert out is not None
    assert _errors(dciodvfy, out, tmp_path / "out.dcm") == before == set()
