"""DICOMweb side by side: this archive vs Orthanc + its DICOMweb plugin, same data, one run.

    python tests/benchmarks/dicomweb/run.py [--bulk 100000] [--studies 200] [--frames-slices 300]

Measured (medians; QIDO also p95):
* QIDO study search with OHIF's queries (study list, and a PatientName wildcard filter);
* series /metadata of a 500-instance series;
* every frame of a 300-slice 512x512 CT fetched the way OHIF does (parallel frame requests,
  `transfer-syntax=*`);
* STOW-RS throughput (batches of 10 instances per request; median of `--stow-rounds` rounds of 100).
With `--bulk N` the archive's index is also bulk-loaded with N instances (rows inserted directly; not
feasible for Orthanc) and the QIDO figures at that size are reported separately, archive only.

Both servers run as separate processes on 127.0.0.1; the archive answers with a bearer token (as in
production), Orthanc without authentication. Data is synthetic (imaging.synthetic).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import hashlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from imaging.archive import Archive  # noqa: E402
from imaging.config import load_settings  # noqa: E402
from imaging.index.schema import ApiToken  # noqa: E402
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient  # noqa: E402

OHIF_STUDY_LIST = "/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060"
OHIF_FILTERED = OHIF_STUDY_LIST + "&PatientName=*SYNTH01*"
FRAME_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"
ORTHANC_PLUGIN_DIRS = ["/usr/share/orthanc/plugins", "/usr/lib/orthanc"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def encode(ds) -> bytes:  # type: ignore[no-untyped-def]
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def wait_http(url: str, timeout: float = 60, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


# ----------------------------------------------------------------------------------------- servers
def start_archive(data_dir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    settings = load_settings(None, data_dir=data_dir, min_free_bytes=0, qido_max_results=1000)
    archive = Archive.open(settings)
    token = secrets.token_urlsafe(24)
    with archive.db.write() as s:
        s.add(ApiToken(token_hash=hashlib.sha256(token.encode()).hexdigest(), role="admin"))
    archive.close()
    port = free_port()
    code = (
        "import uvicorn; from imaging.archive import Archive; from imaging.config import load_settings; "
        "from dicomweb.app import create_app; from imaging.lifecycle import configure_server_process; "
        "configure_server_process(); "  # as `imaging serve` runs it
        f"a = Archive.open(load_settings(None, data_dir={str(data_dir)!r}, min_free_bytes=0, qido_max_results=1000)); "
        f"uvicorn.run(create_app(a), host='127.0.0.1', port={port}, log_level='warning')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    wait_http(f"http://127.0.0.1:{port}/health/live")
    return proc, f"http://127.0.0.1:{port}/dicomweb", token


def orthanc_plugin() -> Path:
    for d in ORTHANC_PLUGIN_DIRS:
        for p in sorted(Path(d).glob("libOrthancDicomWeb.so*")):
            return p
    raise SystemExit("Orthanc DICOMweb plugin not found (Debian package orthanc-dicomweb)")


def start_orthanc(work: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "storage"),
        "IndexDirectory": str(work / "index"),
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(orthanc_plugin())],
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        },
        "HttpThreadsCount": 16,
        "StorageCompression": False,
    }
    work.mkdir(parents=True, exist_ok=True)
    (work / "orthanc.json").write_text(json.dumps(config))
    log = (work / "orthanc.log").open("wb")
    proc = subprocess.Popen(["Orthanc", str(work / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{http_port}/system")
    return proc, f"http://127.0.0.1:{http_port}/dicom-web", f"http://127.0.0.1:{http_port}"


# ----------------------------------------------------------------------------------------- data
def make_data(
    studies: int, metadata_instances: int, frame_slices: int, stow_rounds: int = 1
) -> dict[str, object]:
    small = []
    for n in range(studies):
        st = SyntheticStudy(
            patient=synthetic_patient(n),
            StudyDate=f"20{10 + n % 15:02d}0{1 + n % 9}15",
            StudyDescription=f"CT STUDY {n}",
            AccessionNumber=f"ACC{n:05d}",
        )
        small += [encode(ds) for ds in ct_series(st, 1, rows=16, columns=16)]
    meta_study = SyntheticStudy(patient=synthetic_patient(501), StudyDescription="METADATA 500")
    meta = [encode(ds) for ds in ct_series(meta_study, metadata_instances, rows=64, columns=64)]
    frame_study = SyntheticStudy(patient=synthetic_patient(502), StudyDescription="CT 300")
    frames = [encode(ds) for ds in ct_series(frame_study, frame_slices, rows=512, columns=512)]
    stow = []  # one study of 100 instances per round, each round new instances for both servers
    for round_ in range(stow_rounds):
        stow_study = SyntheticStudy(patient=synthetic_patient(503 + round_), StudyDescription="STOW")
        stow.append([encode(ds) for ds in ct_series(stow_study, 100, rows=256, columns=256)])
    from pydicom import dcmread

    def uids(data: bytes) -> tuple[str, str, str]:
        ds = dcmread(BytesIO(data), stop_before_pixels=True)
        return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)

    return {
        "small": small,
        "meta": meta,
        "frames": frames,
        "stow": stow,
        "meta_uids": uids(meta[0]),
        "frame_uids": [uids(d) for d in frames],
    }


def load_archive(data_dir: Path, blobs: list[bytes]) -> None:
    archive = Archive.open(load_settings(None, data_dir=data_dir, min_free_bytes=0))
    try:
        for data in blobs:
            archive.ingestor.ingest(data, source="bench")
    finally:
        archive.close()


def load_orthanc(rest: str, blobs: list[bytes]) -> None:
    with httpx.Client(timeout=120) as c, cf.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda b: c.post(f"{rest}/instances", content=b).raise_for_status(), blobs))


# ----------------------------------------------------------------------------------------- timing
def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    fn()  # warm-up
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def qido(root: str, headers: dict[str, str], path: str, repeat: int) -> list[float]:
    with httpx.Client(headers={**headers, "Accept": "application/dicom+json"}, timeout=60) as c:

        def run() -> None:
            r = c.get(root + path)
            r.raise_for_status()

        return timed(run, repeat)


def metadata(
    root: str, headers: dict[str, str], uids: tuple[str, str, str], repeat: int
) -> tuple[list[float], int]:
    study, series, _ = uids
    last: list[httpx.Response] = []
    with httpx.Client(headers={**headers, "Accept": "application/dicom+json"}, timeout=300) as c:

        def run() -> None:
            r = c.get(f"{root}/studies/{study}/series/{series}/metadata")
            r.raise_for_status()
            last[:] = [r]

        # Timed: request until the whole body is received. The client's JSON decoding (about 100 ms for
        # 1.3 MB in Python, the same work for either server) is done once, outside the timing.
        times = timed(run, repeat)
        return times, len(last[0].json())


def frames(
    root: str, headers: dict[str, str], uids: list[tuple[str, str, str]], repeat: int, workers: int = 8
) -> list[float]:
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    with httpx.Client(headers={**headers, "Accept": FRAME_ACCEPT}, timeout=120, limits=limits) as c:

        def one(u: tuple[str, str, str]) -> int:
            r = c.get(f"{root}/studies/{u[0]}/series/{u[1]}/instances/{u[2]}/frames/1")
            r.raise_for_status()
            return len(r.content)

        def run() -> None:
            with cf.ThreadPoolExecutor(workers) as pool:
                total = sum(pool.map(one, uids))
            assert total >= len(uids) * 512 * 512 * 2

        return timed(run, repeat)


def stow(root: str, headers: dict[str, str], blobs: list[bytes], batch: int = 10) -> float:
    """Instances per second (sequential batches of `batch` instances per request)."""
    boundary = "benchboundary"
    ct = f'multipart/related; type="application/dicom"; boundary={boundary}'
    bodies = []
    for i in range(0, len(blobs), batch):
        body = b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + b + b"\r\n"
            for b in blobs[i : i + batch]
        )
        bodies.append(body + f"--{boundary}--\r\n".encode())
    with httpx.Client(
        headers={**headers, "Content-Type": ct, "Accept": "application/dicom+json"}, timeout=300
    ) as c:
        t = time.perf_counter()
        for body in bodies:
            r = c.post(f"{root}/studies", content=body)
            assert r.status_code == 200, (r.status_code, r.text[:300])
        return len(blobs) / (time.perf_counter() - t)


# ----------------------------------------------------------------------------------------- bulk load
def bulk_load(
    data_dir: Path, template: bytes, total: int, per_series: int = 50, series_per_study: int = 2
) -> None:
    """Insert `total` instances (rows only: index-scale QIDO) straight into the index."""
    from sqlalchemy import insert

    from imaging.index.extract import parse
    from imaging.index.schema import Instance, Patient, Series, Study

    parsed = parse(template)
    blob = parsed.metadata_json
    archive = Archive.open(load_settings(None, data_dir=data_dir, min_free_bytes=0))
    per_study = per_series * series_per_study
    studies = total // per_study
    try:
        with archive.db.write() as s:
            conn = s.connection()
            conn.execute(
                insert(Patient),
                [
                    {
                        "patient_pk": 1_000_000 + i,
                        "partition": "clinical",
                        "PatientID": f"BULK{i:07d}",
                        "IssuerOfPatientID": "",
                        "PatientName": f"BULK{i:05d}^PATIENT",
                        "PatientBirthDate": "19700101",
                        "PatientSex": "MF"[i % 2],
                    }
                    for i in range(studies)
                ],
            )
            conn.execute(
                insert(Study),
                [
                    {
                        "study_pk": 1_000_000 + i,
                        "patient_pk": 1_000_000 + i,
                        "partition": "clinical",
                        "StudyInstanceUID": f"2.25.{9000000 + i}",
                        "StudyDate": f"20{10 + i % 15:02d}{1 + i % 12:02d}{1 + i % 28:02d}",
                        "StudyTime": f"{i % 24:02d}0000",
                        "AccessionNumber": f"B{i:07d}",
                        "StudyID": "1",
                        "ReferringPhysicianName": "",
                        "StudyDescription": f"BULK CT {i}",
                        "ModalitiesInStudy": "CT",
                        "SOPClassesInStudy": "1.2.840.10008.5.1.4.1.1.2",
                        "NumberOfStudyRelatedSeries": series_per_study,
                        "NumberOfStudyRelatedInstances": per_study,
                    }
                    for i in range(studies)
                ],
            )
            conn.execute(
                insert(Series),
                [
                    {
                        "series_pk": 1_000_000 + i * series_per_study + k,
                        "study_pk": 1_000_000 + i,
                        "SeriesInstanceUID": f"2.25.{9000000 + i}.{k + 1}",
                        "Modality": "CT",
                        "SeriesNumber": k + 1,
                        "SeriesDescription": "AXIAL",
                        "BodyPartExamined": "CHEST",
                        "NumberOfSeriesRelatedInstances": per_series,
                    }
                    for i in range(studies)
                    for k in range(series_per_study)
                ],
            )
            rows = []
            for i in range(studies):
                for k in range(series_per_study):
                    for j in range(per_series):
                        rows.append(
                            {
                                "series_pk": 1_000_000 + i * series_per_study + k,
                                "SOPInstanceUID": f"2.25.{9000000 + i}.{k + 1}.{j + 1}",
                                "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
                                "InstanceNumber": j + 1,
                                "Rows": 512,
                                "Columns": 512,
                                "BitsAllocated": 16,
                                "TransferSyntaxUID": "1.2.840.10008.1.2.1",
                                "object_key": "clinical/" + "0" * 64,
                                "size": 0,
                                "metadata_json": blob,
                            }
                        )
                        if len(rows) >= 20000:
                            conn.execute(insert(Instance), rows)
                            rows = []
            if rows:
                conn.execute(insert(Instance), rows)
    finally:
        archive.close()


# ----------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--studies", type=int, default=200, help="small studies in the common dataset")
    parser.add_argument("--metadata-instances", type=int, default=500)
    parser.add_argument("--frames-slices", type=int, default=300)
    parser.add_argument(
        "--bulk", type=int, default=0, help="also bulk-load the archive index with N instances"
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--stow-rounds", type=int, default=5, help="STOW rounds of 100 new instances")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dicomweb-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, float]] = {}
    try:
        t = time.perf_counter()
        data = make_data(args.studies, args.metadata_instances, args.frames_slices, args.stow_rounds)
        blobs = data["small"] + data["meta"] + data["frames"]  # type: ignore[operator]
        print(f"generated {len(blobs)} instances in {time.perf_counter() - t:.1f}s", flush=True)
        t = time.perf_counter()
        load_archive(work / "archive", blobs)
        print(f"archive loaded in {time.perf_counter() - t:.1f}s", flush=True)
        proc, ours, token = start_archive(work / "archive")
        procs.append(proc)
        oproc, theirs, rest = start_orthanc(work / "orthanc")
        procs.append(oproc)
        t = time.perf_counter()
        load_orthanc(rest, blobs)
        print(f"orthanc loaded in {time.perf_counter() - t:.1f}s", flush=True)
        ours_h = {"Authorization": f"Bearer {token}"}
        for name, root, headers in (("archive", ours, ours_h), ("orthanc", theirs, {})):
            r: dict[str, float] = {}
            q = qido(root, headers, OHIF_STUDY_LIST, args.repeat)
            r["qido_p50_ms"], r["qido_p95_ms"] = pct(q, 0.5) * 1e3, pct(q, 0.95) * 1e3
            q = qido(root, headers, OHIF_FILTERED, args.repeat)
            r["qido_filtered_p50_ms"], r["qido_filtered_p95_ms"] = pct(q, 0.5) * 1e3, pct(q, 0.95) * 1e3
            m, n = metadata(root, headers, data["meta_uids"], max(3, args.repeat // 5))  # type: ignore[arg-type]
            assert n == args.metadata_instances, n
            r["metadata_series_ms"] = statistics.median(m) * 1e3
            f = frames(root, headers, data["frame_uids"], 3)  # type: ignore[arg-type]
            r["frames_all_s"] = statistics.median(f)
            r["stow_instances_per_s"] = statistics.median(
                stow(root, headers, blobs)
                for blobs in data["stow"]  # type: ignore[attr-defined]
            )
            results[name] = r
            print(name, json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)
        print()
        print(f"{'measure':28} {'archive':>12} {'orthanc':>12} {'ratio':>22}")
        for key in results["archive"]:
            a, o = results["archive"][key], results["orthanc"][key]
            if key.endswith("_per_s"):
                ratio = f"{a / o:.2f}x faster" if a >= o else f"{o / a:.2f}x slower"
            else:
                ratio = f"{o / a:.2f}x faster" if a <= o else f"{a / o:.2f}x slower"
            print(f"{key:28} {a:12.2f} {o:12.2f} {ratio:>22}")
        for p in procs:
            p.terminate()
            p.wait(10)
        procs.clear()
        if args.bulk:
            t = time.perf_counter()
            bulk_load(work / "archive", data["small"][0], args.bulk)  # type: ignore[index]
            print(
                f"\nbulk-loaded {args.bulk} instances into the archive index in {time.perf_counter() - t:.1f}s"
            )
            proc, ours, token = start_archive_existing(work / "archive")
            procs.append(proc)
            headers = {"Authorization": f"Bearer {token}"}
            for label, path in (
                ("study list", OHIF_STUDY_LIST),
                ("PatientName filter", OHIF_FILTERED),
                ("StudyDate range", OHIF_STUDY_LIST + "&StudyDate=20150101-20161231"),
                ("PatientID", OHIF_STUDY_LIST + "&00100020=BULK0000123"),
            ):
                q = qido(ours, headers, path, args.repeat)
                print(
                    f"archive QIDO at {args.bulk} instances, {label:20}: p50 {pct(q, 0.5) * 1e3:6.2f} ms  "
                    f"p95 {pct(q, 0.95) * 1e3:6.2f} ms"
                )
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def start_archive_existing(data_dir: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    return start_archive(data_dir)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
