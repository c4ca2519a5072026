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


# --- issue 12 (DIMSE): the gateway on localhost unless calling AEs are listed; TLS settings hang together
def test_gateway_listens_on_localhost_by_default(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path / "data")
    assert s.dicom_host == "127.0.0.1" and s.dimse_on_loopback_only()
    assert s.calling_aes == [] and s.dicom_tls_port is None


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "pacs.example.org", ""])
def test_open_gateway_needs_calling_aes(host: str) -> None:
    with pytest.raises(ValidationError, match="calling_aes"):
        load_settings(dicom_host=host)
    assert load_settings(dicom_host=host, dev_mode=True).dicom_host == host  # dev mode: allowed (warned)
    listed = [{"ae_title": "CT01", "hosts": ["10.1.2.0/24"], "permissions": ["store"]}]
    assert load_settings(dicom_host=host, calling_aes=listed).calling_ae("CT01 ") is not None


def test_tls_listener_beyond_localhost_needs_calling_aes(tmp_path: Path) -> None:
    tls = {"dicom_tls_port": 2762, "dicom_tls_cert": tmp_path / "c.pem", "dicom_tls_key": tmp_path / "k.pem"}
    assert load_settings(**tls).dimse_on_loopback_only()
    with pytest.raises(ValidationError, match="calling_aes"):
        load_settings(dicom_tls_host="0.0.0.0", **tls)
    with pytest.raises(ValidationError, match="dicom_tls_cert"):
        load_settings(dicom_tls_port=2762)


def test_calling_ae_entries_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = [
        [{"ae_title": "CT01", "hosts": [], "permissions": ["store"]}],  # no host
        [{"ae_title": "CT01", "hosts": ["10.1.2.300"], "permissions": ["store"]}],  # not an address
        [{"ae_title": "CT01", "hosts": ["10.0.0.1"], "permissions": ["delete"]}],  # no such service
        [{"ae_title": "THIS_AE_TITLE_IS_TOO_LONG", "hosts": ["10.0.0.1"], "permissions": ["store"]}],
        [
            {"ae_title": "CT01", "hosts": ["10.0.0.1"], "permissions": ["store"], "tls_names": ["ct01"]}
        ],  # no CA
        [{"ae_title": "CT01", "hosts": ["10.0.0.1"], "permissions": ["store"]}] * 2,  # listed twice
    ]
    for entries in bad:
        with pytest.raises(ValidationError):
            load_settings(calling_aes=entries)
    monkeypatch.setenv(
        "IMAGING_CALLING_AES",
        '[{"ae_title": "PACS", "hosts": ["10.0.0.5", "fd00::/8"], "permissions": ["find"]}]',
    )
    monkeypatch.setenv("IMAGING_DICOM_HOST", "0.0.0.0")
    entry = load_settings().calling_ae("PACS")
    assert entry is not None and [str(n) for n in entry.networks()] == ["10.0.0.5/32", "fd00::/8"]


def test_allowed_calling_aets_is_replaced() -> None:
    with pytest.raises(ValidationError, match="calling_aes"):
        load_settings(allowed_calling_aets=["CT01"], dev_mode=True)
