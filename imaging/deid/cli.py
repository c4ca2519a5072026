"""`imaging deid SRC... DST`: de-identify files/folders with a project key (registered by imaging.cli)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from imaging.deid.batch import deidentify_paths
from imaging.deid.engine import Deidentifier
from imaging.deid.options import DeidOption, DeidProfile, parse_option

console = Console(stderr=True)
_HEX = set("0123456789abcdefABCDEF")


def read_key(path: Path) -> bytes:
    """The project secret: a hex text file (64 hex digits, say) or raw bytes."""
    data = path.read_bytes()
    text = data.strip()
    if text and len(text) % 2 == 0 and set(text.decode("latin-1")) <= _HEX:
        return bytes.fromhex(text.decode("ascii"))
    return data


def default_key_path(destination: Path) -> Path:
    return destination.parent / f"{destination.name}.key"


def create_key(path: Path) -> bytes:
    """A new 32-byte key written as hex to `path`, readable by the owner only (0600)."""
    key = secrets.token_bytes(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(handle, "w") as stream:
        stream.write(key.hex() + "\n")
    return key


def deid(
    src: Annotated[list[Path], typer.Argument(help="files or folders to de-identify", exists=True)],
    dst: Annotated[Path, typer.Argument(help="destination folder (<Study>/<Series>/<SOP>.dcm)")],
    key_file: Annotated[
        Path | None,
        typer.Option(
            "--key-file", "-k", help="project secret (hex or raw bytes); created next to DST if absent"
        ),
    ] = None,
    option: Annotated[
        list[str],
        typer.Option(
            "--option",
            "-o",
            help="Annex E option, e.g. retain-uids, clean-descriptors (repeat); default: "
            + ", ".join(sorted(o.name.lower().replace("_", "-") for o in DeidProfile().options)),
        ),
    ] = [],  # noqa: B006 - typer reads the default from the signature
    basic_only: Annotated[
        bool, typer.Option("--basic-only", help="Basic Profile without any option")
    ] = False,
    uid_map_file: Annotated[
        Path | None,
        typer.Option("--uid-map", help="write the original -> new UID table here (keep it apart from DST)"),
    ] = None,
) -> None:
    """De-identify DICOM files per PS3.15 Annex E with keyed, consistent pseudonyms."""
    try:
        options = frozenset(parse_option(o) for o in option)
        profile = (
            DeidProfile(options=frozenset[DeidOption]())
            if basic_only
            else (DeidProfile(options=options) if options else DeidProfile())
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if uid_map_file is not None and uid_map_file.resolve().is_relative_to(dst.resolve()):
        raise typer.BadParameter("the UID map must not be written inside the destination")
    if key_file is None:
        key_file = default_key_path(dst)
        if key_file.exists():
            console.print(f"using the project key at {key_file}")
            key = read_key(key_file)
        else:
            key = create_key(key_file)
            console.print(f"created a new project key at {key_file} (mode 0600): keep it apart from the data")
    else:
        key = read_key(key_file)
    deidentifier = Deidentifier(key=key, profile=profile)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("de-identifying", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = deidentify_paths(src, dst, deidentifier, progress=progress)
    if uid_map_file is not None:
        uid_map_file.write_text(json.dumps(report.uid_map, indent=1, sort_keys=True))
    console.print(
        f"written {report.written}, unchanged {report.unchanged}, quarantined {report.quarantined}, "
        f"skipped {report.skipped} (not DICOM)"
    )
    for opaque, reasons in report.quarantine.items():
        console.print(f"quarantined {opaque}: {'; '.join(reasons)}")
