"""Retrieve coverage: how many stored objects an SCU that accepts only uncompressed syntaxes gets back, from
this archive and from Orthanc, same objects, same client.

    python tests/benchmarks/retrieve/run.py

The objects are those of the DIMSE tests (tests/dimse/retrieve_data.py): one pydicom bundled file per transfer
syntax (implicit, explicit, big endian, deflated, RLE, JPEG baseline, JPEG extended 12-bit, JPEG-LS, two
JPEG 2000), an RT Plan and a generated big endian Segmentation. Each server gets them by C-STORE (pynetdicom,
stored as sent) and is then asked for each study with dcmtk's /usr/bin/getscu and its default proposal
(uncompressed syntaxes only); the figure is how many objects getscu wrote. Both servers run with empty
storage: the archive in process on its embedded SQLite index, Orthanc (/usr/sbin/Orthanc) from a temp config.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from pydicom import dcmread

import imaging.app  # noqa: F401  (composition root)
from imaging.archive import Archive
from imaging.config import load_settings
from imaging.dimse.server import Gateway
from tests.archive_fixtures import quiet, send_raw
from tests.dimse.retrieve_data import retrieve_objects
from tests.sharing.conftest import OrthancServer

GETSCU = "/usr/bin/getscu"


def get_all(port: int, called: str, files: list[Path], out: Path) -> list[str]:
    """getscu (default proposal) for each object, one call per object; returns the names of the objects
    that came back."""
    out.mkdir(parents=True)
    got = []
    for path in files:
        before = sum(1 for _ in out.iterdir())
        ds = dcmread(path, stop_before_pixels=True)
        subprocess.run(
            [
                GETSCU,
                "-aet",
                "GETSCU",
                "-aec",
                called,
                "-od",
                str(out),
                "-k",
                "QueryRetrieveLevel=IMAGE",
                "-k",
                f"StudyInstanceUID={ds.StudyInstanceUID}",
                "-k",
                f"SeriesInstanceUID={ds.SeriesInstanceUID}",
                "-k",
                f"SOPInstanceUID={ds.SOPInstanceUID}",
                "127.0.0.1",
                str(port),
            ],
            capture_output=True,
            timeout=120,
        )
        if sum(1 for _ in out.iterdir()) > before:
            got.append(path.name)
    return got


def store_each(port: int, called: str, files: list[Path]) -> list[str]:
    """C-STORE each object on its own association (a peer that aborts on one loses only that one); returns
    the names of the objects stored."""
    stored = []
    for path in files:
        try:
            if send_raw(port, [path], called=called) == [0]:
                stored.append(path.name)
        except (AssertionError, RuntimeError):
            continue
    return stored


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp_name, quiet():
        tmp = Path(tmp_name)
        files = retrieve_objects(tmp / "objects")

        archive = Archive.open(load_settings(None, data_dir=tmp / "archive", dev_mode=True, min_free_bytes=0))
        gateway = Gateway(archive)
        port = gateway.start(host="127.0.0.1", port=0)
        try:
            stored = store_each(port, "IMAGING", files)
            ours = get_all(port, "IMAGING", files, tmp / "from-archive")
        finally:
            gateway.stop()
            archive.close()

        orthanc = OrthancServer(tmp / "orthanc")
        config = orthanc.config
        orthanc.config = lambda: {**config(), "DicomAlwaysAllowGet": True}  # type: ignore[method-assign]
        orthanc.start()
        try:
            orthanc_stored = store_each(orthanc.dicom_port, "ORTHANC", files)
            theirs = get_all(orthanc.dicom_port, "ORTHANC", files, tmp / "from-orthanc")
        finally:
            orthanc.stop()

    names = [p.name for p in files]
    print(f"objects: {len(files)}")
    for who, kept, back in (("archive", stored, ours), ("Orthanc", orthanc_stored, theirs)):
        print(f"{who}: stored {len(kept)}, returned {len(back)} to getscu (uncompressed syntaxes only)")
        print(f"  not stored: {', '.join(n for n in names if n not in kept) or '-'}")
        print(f"  stored, not returned: {', '.join(n for n in kept if n not in back) or '-'}")
    print(f"ratio archive/Orthanc: {len(ours) / len(theirs):.2f}" if theirs else "Orthanc returned none")


if __name__ == "__main__":
    main()
