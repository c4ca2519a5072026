"""The Makefile's install: torch (the version the reference bundle records) before the project, from
TORCH_INDEX when it is set (PyTorch's CPU wheel index: a CPU-only install that never downloads CUDA wheels);
checked with `make -n`, which prints the commands without running them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.compose import REPO

BUNDLE = REPO / "triage" / "bundles" / "lung_nodule_reference" / "configs" / "metadata.json"


def dry_run(tmp_path: Path, *variables: str) -> list[str]:
    make = shutil.which("make")
    if make is None:
        pytest.fail("make is not installed (the README's two commands need it)")
    done = subprocess.run(
        [make, "-n", "setup", f"VENV={tmp_path / 'venv'}", *variables],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if "pip" in line and "install" in line]


def test_cpu_only_install_takes_torch_from_the_given_index(tmp_path: Path) -> None:
    version = json.loads(BUNDLE.read_text())["pytorch_version"]
    lines = dry_run(tmp_path, "TORCH_INDEX=https://wheels.example/cpu")
    torch_first = next(i for i, line in enumerate(lines) if f'"torch=={version}"' in line)
    project = next(i for i, line in enumerate(lines) if '-e ".[dev]"' in line)
    assert torch_first < project
    assert '--index-url "https://wheels.example/cpu"' in lines[torch_first]
    assert f'"torch=={version}"' in lines[project]  # the project install keeps that torch
    assert "--index-url" not in lines[project]


def test_default_install_uses_the_configured_indexes(tmp_path: Path) -> None:
    assert not any("--index-url" in line for line in dry_run(tmp_path))
