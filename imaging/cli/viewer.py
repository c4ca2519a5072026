"""`imaging viewer fetch`: the prebuilt OHIF viewer, served at /viewer."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dicomweb.viewer import OHIF_VERSION, fetch_viewer, viewer_dir
from imaging.console import ConfigOpt, DataDirOpt, console, settings

app = typer.Typer(no_args_is_help=True)


@app.command("fetch")
def viewer_fetch(
    version: Annotated[str, typer.Option(help="@ohif/app version (default: the tested one)")] = "",
    dest: Annotated[Path | None, typer.Option(help="folder (default: settings.viewer_dir)")] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Download the prebuilt OHIF viewer from the npm registry (`npm pack`) and unpack it."""
    target = dest or viewer_dir(settings(config, data_dir))
    console.print(f"fetching @ohif/app@{version or OHIF_VERSION} into {target}")
    fetch_viewer(target, version or OHIF_VERSION)
    console.print("done: `imaging serve` now serves it at /viewer")
