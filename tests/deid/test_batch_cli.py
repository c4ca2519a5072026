"""Batch over files/folders and the `deid` command: names hold only new identifiers, keys stay secret."""

from __future__ import annotations

import copy
import json
import stat
from pathlib import Path

import pydicom
import pytest
import typer
from typer.testing import CliRunner

from imaging.deid import Deidentifier
from imaging.deid.batch import deidentify_paths
from imaging.deid.cli import deid, read_key
from tests.deid.checker import leaks
from tests.deid.conftest import KEY
from tests.deid.corpus import Corpus


def _source_tree(corpus: Corpus, root: Path) -> Path:
    """Files named after PHI (as PACS exports often are), one at-risk image, one non-DICOM file."""
    source = root / "ZQXFAMILY_ZQXMRN001"
    (source / "nested").mkdir(parents=True)
    for kind, ds in corpus.datasets.items():
        ds.save_as(source / "nested" / f"{kind}_ZQXMRN001.dcm", enforce_file_format=True)
    at_risk = copy.deepcopy(corpus.datasets["ct"])
    at_risk.Modality = "US"  # ultrasound without regions: quarantined
    at_risk.SOPInstanceUID = at_risk.file_meta.MediaStorageSOPInstanceUID = at_risk.SOPInstanceUID + ".9"
    at_risk.save_as(source / "us_ZQXMRN001.dcm", enforce_file_format=True)
    (source / "notes_ZQXMRN001.txt").write_text("not dicom")
    (source / "DICOMDIR").write_bytes(b"ZQXFAMILY")
    return source


def test_batch_writes_outputs_named_by_new_identifiers(corpus: Corpus, tmp_path: Path) -> None:
    source = _source_tree(corpus, tmp_path / "in")
    destination = tmp_path / "out"
    calls: list[tuple[int, int]] = []
    deidentifier = Deidentifier(key=KEY)
    report = deidentify_paths([source], destination, deidentifier, progress=lambda d, t: calls.append((d, t)))
    assert (report.written, report.quarantined, report.skipped) == (4, 1, 1)
    assert calls[-1] == (6, 6)
    for path in destination.rglob("*"):
        relative = str(path.relative_to(destination))
        assert "ZQX" not in relative and "1.2.826.0.1.3680043.10.543" not in relative
        if path.is_file():
            ds = pydicom.dcmread(path)
            assert path.name == f"{ds.SOPInstanceUID}.dcm"
            assert path.parent.name == ds.SeriesInstanceUID and path.parent.parent.name == ds.StudyInstanceUID
            assert not leaks(path.read_bytes(), corpus, deidentifier.profile)
    # The quarantine list uses opaque ids and reasons only.
    listing = json.dumps(report.quarantine)
    assert "ZQX" not in listing and "1.2.826.0.1.3680043.10.543" not in listing
    (opaque,) = report.quarantine
    assert opaque.startswith("2.25.")
    # The re-identification table maps original to new UIDs, and is only in the report.
    assert report.uid_map[corpus.datasets["ct"].SOPInstanceUID] in {p.stem for p in report.outputs}


def test_batch_twice_is_stable(corpus: Corpus, tmp_path: Path) -> None:
    source = _source_tree(corpus, tmp_path / "in")
    first = deidentify_paths([source], tmp_path / "a", Deidentifier(key=KEY))
    second = deidentify_paths([tmp_path / "a"], tmp_path / "b", Deidentifier(key=KEY))
    assert second.unchanged == 4 and second.written == 0
    assert sorted(p.relative_to(tmp_path / "a") for p in first.outputs) == sorted(
        p.relative_to(tmp_path / "b") for p in second.outputs
    )
    for a in first.outputs:
        assert (tmp_path / "b" / a.relative_to(tmp_path / "a")).read_bytes() == a.read_bytes()


def _app() -> typer.Typer:
    app = typer.Typer()
    app.command()(deid)

    @app.command()
    def other() -> None:  # a second command keeps typer from collapsing the app into `deid`
        pass

    return app


def test_cli_creates_a_private_key_and_never_prints_it(corpus: Corpus, tmp_path: Path) -> None:
    source = _source_tree(corpus, tmp_path / "in")
    destination = tmp_path / "share" / "out"
    run = CliRunner().invoke(_app(), ["deid", str(source), str(destination), "-o", "clean-descriptors"])
    assert run.exit_code == 0, run.output
    key_file = tmp_path / "share" / "out.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = read_key(key_file)
    assert len(key) == 32 and key.hex() not in run.output and str(key_file) in run.output
    assert "quarantined 1" in run.output and "ZQX" not in run.output
    # A second run reuses the key: identical names.
    again = CliRunner().invoke(
        _app(),
        [
            "deid",
            str(source),
            str(tmp_path / "share" / "out2"),
            "-k",
            str(key_file),
            "-o",
            "clean-descriptors",
        ],
    )
    assert again.exit_code == 0, again.output
    names = sorted(p.name for p in destination.rglob("*.dcm"))
    assert names == sorted(p.name for p in (tmp_path / "share" / "out2").rglob("*.dcm")) and len(names) == 4
    ds = pydicom.dcmread(next(destination.rglob("*.dcm")))
    assert "113105" in [i.CodeValue for i in ds.DeidentificationMethodCodeSequence]


def test_cli_key_file_hex_or_raw_and_uid_map_kept_apart(corpus: Corpus, tmp_path: Path) -> None:
    source = _source_tree(corpus, tmp_path / "in")
    hex_key = tmp_path / "hex.key"
    hex_key.write_text(KEY.hex() + "\n")
    raw_key = tmp_path / "raw.key"
    raw_key.write_bytes(KEY)
    assert read_key(hex_key) == read_key(raw_key) == KEY
    inside = CliRunner().invoke(
        _app(),
        [
            "deid",
            str(source),
            str(tmp_path / "o"),
            "-k",
            str(hex_key),
            "--uid-map",
            str(tmp_path / "o" / "m"),
        ],
    )
    assert inside.exit_code != 0
    uid_map = tmp_path / "uids.json"
    run = CliRunner().invoke(
        _app(), ["deid", str(source), str(tmp_path / "o"), "-k", str(raw_key), "--uid-map", str(uid_map)]
    )
    assert run.exit_code == 0, run.output
    table = json.loads(uid_map.read_text())
    new = Deidentifier(key=KEY).uid_for(corpus.datasets["ct"].SOPInstanceUID)
    assert table[corpus.datasets["ct"].SOPInstanceUID] == new
    assert list((tmp_path / "o").rglob(f"{new}.dcm"))


def test_cli_rejects_unknown_options(tmp_path: Path) -> None:
    run = CliRunner().invoke(_app(), ["deid", str(tmp_path), str(tmp_path / "o"), "-o", "keep-everything"])
    assert run.exit_code != 0


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")  # pydicom warns, as it should
def test_hostile_uids_never_become_paths(corpus: Corpus, tmp_path: Path) -> None:
    from imaging.deid import DeidOption, DeidProfile

    ds = copy.deepcopy(corpus.datasets["ct"])
    source = tmp_path / "in.dcm"
    ds.SeriesInstanceUID = "../../../escape"
    ds.save_as(source, enforce_file_format=True)
    deidentifier = Deidentifier(key=KEY, profile=DeidProfile(options=frozenset({DeidOption.RETAIN_UIDS})))
    report = deidentify_paths([source], tmp_path / "out", deidentifier)
    (output,) = report.outputs
    assert output.resolve().is_relative_to((tmp_path / "out").resolve())
    assert ".." not in output.relative_to(tmp_path / "out").parts and "escape" not in str(output)
