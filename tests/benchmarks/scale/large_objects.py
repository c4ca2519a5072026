"""Memory of the archive while it receives a very large object, through C-STORE and through STOW-RS.

    python tests/benchmarks/scale/large_objects.py [--size-gib 2]

Writes a synthetic multi-frame object of `--size-gib` GiB (tests/large_object.py; frames generated as they
are written), starts `imaging serve` (one gateway process, so that one process does everything), sends the
object with dcmtk's storescu, then another one of the same size with STOW-RS (streamed from the file), and
samples the server's resident memory (VmRSS, every 20 ms) throughout. Prints the growth of the peak over
the idle server for each protocol, the time taken, and checks both objects were stored whole (size and
SHA-256 through the storage Protocol). Target: growth under 200 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from imaging.archive import Archive  # noqa: E402
from imaging.config import load_settings  # noqa: E402
from imaging.index.schema import ApiToken, Instance  # noqa: E402
from tests.infra.process import free_port  # noqa: E402
from tests.large_object import write_multiframe  # noqa: E402

STORESCU = "/usr/bin/storescu"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Sampler:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            time.sleep(0.02)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def file_chunks(path: Path, prefix: bytes, suffix: bytes) -> Iterator[bytes]:
    yield prefix
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            yield chunk
    yield suffix


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="large-objects-"))
    size = int(args.size_gib * (1 << 30))
    server = None
    try:
        t = time.perf_counter()
        first, _ = write_multiframe(work / "cstore.dcm", size, patient=910)
        second, _ = write_multiframe(work / "stow.dcm", size, patient=911)
        print(f"wrote 2 objects of {size / (1 << 30):.2f} GiB in {time.perf_counter() - t:.0f} s", flush=True)
        data_dir = work / "data"
        settings = load_settings(None, data_dir=data_dir, min_free_bytes=0)
        archive = Archive.open(settings)
        token = secrets.token_urlsafe(24)
        with archive.db.write() as s:
            s.add(ApiToken(token_hash=hashlib.sha256(token.encode()).hexdigest(), role="admin"))
        archive.close()
        dicom_port, http_port = free_port(), free_port()
        env = {**os.environ, "IMAGING_WORKERS": "false", "IMAGING_MIN_FREE_BYTES": "0"}
        env |= {"IMAGING_DIMSE_PROCESSES": "1", "IMAGING_TRIAGE_ENABLED": "false", "PYTHONPATH": str(REPO)}
        log = (work / "server.log").open("wb")
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "imaging.cli", "serve", "--data-dir", str(data_dir)),
                *("--dicom-port", str(dicom_port), "--http-port", str(http_port)),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit((work / "server.log").read_text())
            time.sleep(0.2)
        time.sleep(1)
        idle = rss_kib(server.pid)
        results = {}
        with Sampler(server.pid) as sampler:
            t = time.perf_counter()
            done = subprocess.run(
                [STORESCU, "-aec", "IMAGING", "127.0.0.1", str(dicom_port), str(work / "cstore.dcm")],
                capture_output=True,
                text=True,
            )
            assert done.returncode == 0, done.stderr
            results["C-STORE"] = (sampler.peak - idle, time.perf_counter() - t)
        idle_stow = rss_kib(server.pid)
        with Sampler(server.pid) as sampler:
            t = time.perf_counter()
            boundary = "largeobject"
            response = httpx.post(
                f"{base}/dicomweb/studies",
                content=file_chunks(
                    work / "stow.dcm",
                    f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(),
                    f"\r\n--{boundary}--\r\n".encode(),
                ),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                },
                timeout=3600,
            )
            assert response.status_code == 200, response.text
            results["STOW-RS"] = (sampler.peak - idle_stow, time.perf_counter() - t)
        server.terminate()
        server.wait(30)
        server = None
        archive = Archive.open(settings)
        try:
            for sop in (first, second):
                with archive.db.read() as s:
                    key = s.query(Instance.object_key).filter(Instance.SOPInstanceUID == sop).scalar()
                digest = hashlib.sha256()
                for chunk in archive.store.stream(key):
                    digest.update(chunk)
                assert digest.hexdigest() == key.split("/")[1], "stored object differs from its key"
        finally:
            archive.close()
        print(f"idle server RSS {idle / 1024:.0f} MiB; object {size / (1 << 30):.2f} GiB")
        for name, (growth, seconds) in results.items():
            verdict = "ok" if growth < 200 * 1024 else "OVER 200 MB"
            print(
                f"{name:8} peak RSS growth {growth / 1024:7.1f} MiB  ({seconds:5.1f} s, {size / seconds / 1e6:6.1f} MB/s)  {verdict}"
            )
    finally:
        if server is not None:
            server.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
