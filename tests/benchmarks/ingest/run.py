"""C-STORE ingest benchmark: this archive vs Orthanc, side by side, same client, same data, same machine.

    python tests/benchmarks/ingest/run.py [--count 300] [--repeats 5] [--associations 1 4] [--dimse-processes N]
                                          [--studies] [--workers]

Generates N synthetic 512x512 16-bit CT instances (imaging.synthetic, synthetic PHI, ~0.5 MB each), then for
each server and each association count sends all of them with dcmtk's /usr/bin/storescu (one process per
association, the files split evenly) to a freshly started server with an empty data dir:

* archive: `imaging serve --no-http` with its defaults (embedded SQLite index, durable: every Success is
  fsynced + committed; one gateway process per core), or `--dimse-processes N` (IMAGING_DIMSE_PROCESSES)
* Orthanc: Debian /usr/sbin/Orthanc with its default SQLite index and file storage, temp config.

Every instance must be acknowledged with Success. Repeats alternate between the two servers. Prints instances/s
and MB/s (median of the repeats), the archive/Orthanc ratio of the medians and the ratios repeat by repeat.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STORESCU = "/usr/bin/storescu"
ORTHANC = "/usr/sbin/Orthanc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def generate(folder: Path, count: int, studies: int = 1) -> list[Path]:
    """`count` CT slices: one series, or `studies` studies (one patient and one series each) of
    count/studies slices, the files of study k at positions k, k + studies, ... (send() deals them out
    round robin: with as many associations as studies, each association sends one whole study)."""
    from imaging.synthetic import SyntheticStudy, ct_slice, synthetic_patient

    folder.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    series = [
        (SyntheticStudy(patient=synthetic_patient(42 + k)), f"1.2.826.0.1.3680043.8.498.1.{stamp}.{k + 1}")
        for k in range(studies)
    ]
    paths = []
    for i in range(count):
        study, series_uid = series[i % studies]
        ds = ct_slice(study, series_uid, 1, i // studies)
        path = folder / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def start_archive(
    work: Path, port: int, processes: int = 0, workers: bool = False
) -> tuple[subprocess.Popen[bytes], str]:
    env = {
        **os.environ,
        "IMAGING_WORKERS": "true" if workers else "false",
        "IMAGING_MIN_FREE_BYTES": "0",
    }
    if processes:
        env["IMAGING_DIMSE_PROCESSES"] = str(processes)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "imaging.cli",
            "serve",
            "--no-http",
            "--dev",
            "--data-dir",
            str(work / "data"),
            "--dicom-port",
            str(port),
        ],
        stdout=(work / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    wait_port(port, proc)
    deadline = time.monotonic() + 60  # the port opens first; every gateway process is ready after this line
    while b"DICOM gateway" not in (work / "server.log").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc, "IMAGING"


def start_orthanc(work: Path, port: int) -> tuple[subprocess.Popen[bytes], str]:
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "orthanc-storage"),
        "IndexDirectory": str(work / "orthanc-index"),
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "HttpPort": free_port(),
        "HttpServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "Plugins": [],
        "ConcurrentJobs": 2,
        "DicomThreadsCount": 8,
    }
    path = work / "orthanc.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [ORTHANC, str(path)], stdout=(work / "orthanc.log").open("wb"), stderr=subprocess.STDOUT
    )
    wait_port(port, proc)
    return proc, "ORTHANC"


def send(port: int, aec: str, files: list[Path], associations: int) -> float:
    chunks = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [STORESCU, "-v", "-aet", "BENCH", "-aec", aec, "127.0.0.1", str(port), *map(str, chunk)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for chunk in chunks
    ]
    outputs = [p.communicate()[0].decode(errors="replace") for p in procs]
    elapsed = time.perf_counter() - start
    ok = sum(o.count("Received Store Response (Success)") for o in outputs)
    if ok != len(files):
        raise RuntimeError(f"only {ok}/{len(files)} acknowledged with Success:\n" + outputs[0][-2000:])
    return elapsed


def run_one(
    kind: str, files: list[Path], associations: int, processes: int = 0, workers: bool = False
) -> float:
    work = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    port = free_port()
    if kind == "archive":
        proc, aec = start_archive(work, port, processes, workers)
    else:
        proc, aec = start_orthanc(work, port)
    try:
        time.sleep(0.5)
        return send(port, aec, files, associations)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--associations", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--only", choices=["archive", "orthanc"], default=None)
    parser.add_argument(
        "--dimse-processes",
        type=int,
        default=0,
        help="archive gateway processes (IMAGING_DIMSE_PROCESSES; default: the archive's, one per core)",
    )
    parser.add_argument(
        "--studies",
        action="store_true",
        help="one study per association (count/associations slices each) instead of one series for all",
    )
    parser.add_argument(
        "--workers",
        action="store_true",
        help="the archive runs its job runner (stability, change-log consumers), as `imaging serve` does by default",
    )
    args = parser.parse_args()
    for program in (STORESCU, ORTHANC):
        if not shutil.which(program):
            sys.exit(f"{program} not installed")
    data = Path(tempfile.mkdtemp(prefix="bench-data-"))
    try:
        files = generate(data, args.count, max(args.associations) if args.studies else 1)
        megabytes = sum(f.stat().st_size for f in files) / 1e6
        print(
            f"{args.count} instances, {megabytes:.1f} MB, {os.cpu_count()} CPUs, "
            f"archive with {args.dimse_processes or 'one per core'} gateway process(es)"
            f"{', its job runner on' if args.workers else ''}"
            f"{', one study per association' if args.studies else ', one series'}",
            flush=True,
        )
        kinds = [args.only] if args.only else ["archive", "orthanc"]
        for associations in args.associations:
            # Repeats alternate between the servers: this machine's speed drifts by tens of percent over a
            # minute, and alternating spreads the drift over both instead of favouring one.
            times: dict[str, list[float]] = {kind: [] for kind in kinds}
            for _ in range(args.repeats):
                for kind in kinds:
                    times[kind].append(run_one(kind, files, associations, args.dimse_processes, args.workers))
            for kind in kinds:
                t = statistics.median(times[kind])
                print(
                    f"{kind:8s} {associations} assoc: {args.count / t:7.1f} inst/s {megabytes / t:7.1f} MB/s "
                    f"(median of {[round(x, 2) for x in times[kind]]} s)",
                    flush=True,
                )
            if not args.only:
                ratio = statistics.median(times["orthanc"]) / statistics.median(times["archive"])
                paired = sorted(o / a for a, o in zip(times["archive"], times["orthanc"], strict=True))
                print(
                    f"archive/Orthanc instance rate at {associations} association(s): {ratio:.2f}x "
                    f"(repeat by repeat: {', '.join(f'{r:.2f}' for r in paired)})",
                    flush=True,
                )
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
