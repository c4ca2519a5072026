"""Settings precedence (defaults < TOML < environment < flags) and refusal of insecure combinations."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from imaging.config import OverwritePolicy, load_settings


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "imaging.toml"
    toml.write_text(
        'ae_title = "FROMFILE"\ndicom_port = 1000\nhttp_port = 2000\noverwrite_policy = "overwrite"\n'
    )
    monkeypatch.setenv("IMAGING_DICOM_PORT", "3000")
    s = load_settings(toml, http_port=4000)
    assert s.ae_title == "FROMFILE"  # file beats default
    assert s.dicom_port == 3000  # environment beats file
    assert s.http_port == 4000  # flag beats all
    assert s.overwrite_policy is OverwritePolicy.OVERWRITE


def test_remote_aes_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGING_REMOTE_AES", '[{"ae_title": "PACS", "host": "127.0.0.1", "port": 104}]')
    s = load_settings()
    remote = s.remote_ae("PACS ")
    assert remote is not None and remote.port == 104
    assert s.remote_ae("OTHER") is None


def test_refuses_bad_values() -> None:
    with pytest.raises(ValidationError):
        load_settings(ae_title="THIS_AE_TITLE_IS_TOO_LONG")
    with pytest.raises(ValidationError):
        load_settings(log_phi=True)  # PHI in logs only in dev mode
    assert load_settings(log_phi=True, dev_mode=True).log_phi


def test_default_database_and_keys_are_apart(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path / "data")
    assert s.db_url.endswith("/data/index.sqlite")
    assert not str(s.keys_path).startswith(str((tmp_path / "data").resolve()) + "/")
