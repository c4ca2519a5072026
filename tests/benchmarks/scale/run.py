"""Scale: the archive on PostgreSQL with 1,000,000 instances, and ingest by one and by two archive processes
sharing PostgreSQL and object storage.

    python tests/benchmarks/scale/run.py [--instances 1000000] [--repeat 50] [--ingest-count 400]
                                         [--skip-queries] [--skip-ingest]

Queries (`imaging serve` over HTTP with a bearer token, PostgreSQL on 127.0.0.1:5432, a fresh database):
* Bulk load: 10,000 studies (100 instances each: 2 series of 50, 8x8-pixel CT images with synthetic PHI)
  generated with pydicom in two processes, each object parsed by the archive's own parser
  (imaging.index.extract.parse: the rows and metadata cache entries are exactly what ingest writes), its
  bytes written under its content-addressed key in the filesystem store (no fsync per object: one sync at
  the end; a loader, not the archive's durable path), and the rows written with COPY. Then VACUUM ANALYZE,
  as after any bulk load. One more study with a 500-instance series goes through the real ingest path.
* Then, p50 and p95 over `--repeat` requests each: OHIF's study-list QIDO, a PatientName prefix search, a
  StudyDate range, and series /metadata of the 500-instance series.
Orthanc cannot be brought to 1M instances here (its index fills only through its own ingest, ~250/s:
over an hour), so these figures are the archive's; tests/benchmarks/dicomweb/run.py compares both at the
sizes Orthanc can load.

Ingest: `--ingest-count` synthetic 512x512 CT instances (~0.5 MB) sent by dcmtk's storescu over 4
associations (4 processes started together), to one `imaging serve` and then to two, sharing a fresh
PostgreSQL database and one radosgw bucket (tests/infra/s3_server.py). Each archive process runs one
gateway process (IMAGING_DIMSE_PROCESSES=1), so the comparison is one process against two. Every instance
must be acknowledged with Success; instances/s over the whole transfer.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from imaging.archive import Archive  # noqa: E402
from imaging.config import load_settings  # noqa: E402
from imaging.index.extract import parse  # noqa: E402
from imaging.index.schema import ApiToken  # noqa: E402
from imaging.storage.filesystem import FilesystemStore  # noqa: E402
from imaging.synthetic import SyntheticStudy, ct_series, synthetic_patient  # noqa: E402
from tests.benchmarks.ingest.run import generate  # noqa: E402
from tests.infra.process import free_port  # noqa: E402
from tests.infra.s3_server import CephS3Server  # noqa: E402

PG_ADMIN = os.environ.get("IMAGING_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
STORESCU = "/usr/bin/storescu"
# Instances per series (2 series per study): from the environment, so that the spawned loader processes
# see what --per-series set.
PER_SERIES, SERIES_PER_STUDY = int(os.environ.get("SCALE_PER_SERIES", "50")), 2
SURNAMES = ["SMITH", "JONES", "GARCIA", "MULLER", "ROSSI", "DUBOIS", "NOVAK", "SILVA", "KOWALSKI", "JANSEN"]
STUDY_LIST = "/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060"
UID_ROOT = "1.2.826.0.1.3680043.8.498"


# ------------------------------------------------------------------------------------------ databases
def create_database() -> str:

    name = f"imaging_scale_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return name


def drop_database(name: str) -> None:

    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def url_of(name: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


# ------------------------------------------------------------------------------------------ bulk load
def _study(
    index: int, objects: str
) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """One generated study: patient, study, series and instance rows (as ingest writes them) and its
    objects written under their keys in the filesystem store at `objects`.

    Each series is built with pydicom and parsed by the archive's parser once; its instances are that
    encoding with the values that differ (SOP Instance UID, Instance Number, the slice position: fixed
    widths) put in place, and their rows the parsed template's with the same values changed. `check_study`
    parses a whole generated study and compares, so the rows are those ingest would write."""
    config.settings.writing_validation_mode = config.IGNORE  # generated values: valid by construction
    store = FilesystemStore(Path(objects))
    patient, study = _patient_study(index)
    pixels = (np.arange(64, dtype=np.uint16) * (index % 7 + 1)).reshape(8, 8)
    series_rows, instance_rows = [], []
    for k in range(SERIES_PER_STUDY):
        series_rows.append(
            {
                "SeriesInstanceUID": f"{UID_ROOT}.2.{index}.{k + 1}",
                "Modality": "CT",
                "SeriesNumber": k + 1,
                "SeriesDescription": f"AXIAL {k + 1}",
                "BodyPartExamined": "CHEST",
            }
        )
        template = _encode(index, k, patient, study, series_rows[-1], pixels)
        parsed = parse(template)
        metadata = json.loads(zlib.decompress(parsed.metadata_json))
        offsets = {tag: template.index(tag) + 8 for tag in (_SOP_META, _SOP, _NUMBER, _POSITION)}
        for j in range(PER_SERIES):
            sop, number, position = _varying(index, k, j)
            data = bytearray(template)
            for tag, value in ((_SOP_META, sop), (_SOP, sop), (_NUMBER, number), (_POSITION, position)):
                data[offsets[tag] : offsets[tag] + len(value)] = value
            blob = bytes(data)
            key = f"clinical/{hashlib.sha256(blob).hexdigest()}"
            path = store.path_for(key)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(blob)  # one sync for all at the end (a loader, not the durable path)
            uid = sop.rstrip(b"\0").decode()
            metadata["00080018"]["Value"] = [uid]
            metadata["00200013"]["Value"] = [j + 1]
            metadata["00200032"]["Value"] = [0.0, 0.0, float(position.decode().split("\\")[2])]
            text = json.dumps(dict(sorted(metadata.items())), separators=(",", ":"), ensure_ascii=False)
            a = parsed.attributes
            instance_rows.append(
                {
                    "series": k,
                    "SOPInstanceUID": uid,
                    "SOPClassUID": a["SOPClassUID"],
                    "InstanceNumber": j + 1,
                    "ContentDate": a.get("ContentDate", ""),
                    "ContentTime": a.get("ContentTime", ""),
                    "Rows": a["Rows"],
                    "Columns": a["Columns"],
                    "BitsAllocated": a["BitsAllocated"],
                    "NumberOfFrames": a.get("NumberOfFrames"),
                    "TransferSyntaxUID": parsed.transfer_syntax,
                    "object_key": key,
                    "size": len(blob),
                    "metadata_json": zlib.compress(text.encode(), 1),
                    "pixel_offset": parsed.pixel_offset,
                    "pixel_length": parsed.pixel_length,
                }
            )
    return patient, study, series_rows, instance_rows


# The elements that differ between the instances of a generated series (explicit VR little endian headers).
_SOP_META, _SOP = b"\x02\x00\x03\x00UI", b"\x08\x00\x18\x00UI"
_NUMBER, _POSITION = b"\x20\x00\x13\x00IS", b"\x20\x00\x32\x00DS"


def _varying(index: int, k: int, j: int) -> tuple[bytes, bytes, bytes]:
    """SOP Instance UID, Instance Number and Image Position (Patient) of instance j as encoded, each in the
    same number of bytes for every j (so they replace the template's in place)."""
    sop = f"{UID_ROOT}.3.{index}.{k + 1}.{1001 + j}".encode()
    number = str(j + 1).encode().ljust(2)
    position = f"0\\0\\{-100.0 - 2.5 * j:.1f}".encode()
    return sop + b"\0" * (len(sop) % 2), number, position


def _patient_study(index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    surname = SURNAMES[index % len(SURNAMES)]
    patient = {
        "PatientID": f"SCALE{index:07d}",
        "PatientName": f"{surname}^PATIENT{index % 1000:03d}",
        "PatientBirthDate": f"19{40 + index % 60:02d}0101",
        "PatientSex": "MF"[index % 2],
    }
    study = {
        "StudyInstanceUID": f"{UID_ROOT}.1.{index}",
        "StudyDate": f"20{10 + index % 15:02d}{1 + index % 12:02d}{1 + index % 28:02d}",
        "StudyTime": f"{index % 24:02d}1500",
        "AccessionNumber": f"SC{index:08d}",
        "StudyID": "1",
        "ReferringPhysicianName": "HOUSE^GREGORY",
        "StudyDescription": f"CT CHEST {index % 50}",
    }
    return patient, study


def _encode(
    index: int, k: int, patient: dict[str, Any], study: dict[str, Any], series: dict[str, Any], pixels: Any
) -> bytes:
    """The first instance of series k, encoded by pydicom (8x8 pixels: the index is measured, not pixels)."""
    sop, number, position = (v.rstrip(b"\0").decode() for v in _varying(index, k, 0))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", sop
    for keyword, value in {**patient, **study, **series}.items():
        setattr(ds, keyword, value)
    ds.InstanceNumber = number.strip()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = position.split("\\")
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 2.5
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 16, 12, 11
    ds.PixelRepresentation, ds.RescaleIntercept, ds.RescaleSlope = 0, -1024, 1
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def check_study(index: int, objects: Path) -> None:
    """Every instance of generated study `index`, parsed as ingest parses it, gives the row generated."""
    _, _, _, rows = _study(index, str(objects))
    store = FilesystemStore(objects)
    for row in rows:
        parsed = parse(store.read(row["object_key"]))
        a = parsed.attributes
        assert parsed.metadata_json == row["metadata_json"], row["SOPInstanceUID"]
        assert (a["SOPInstanceUID"], a["InstanceNumber"]) == (row["SOPInstanceUID"], row["InstanceNumber"])
        assert (parsed.pixel_offset, parsed.pixel_length) == (row["pixel_offset"], row["pixel_length"])


def bulk_load(url: str, objects: Path, studies: int) -> None:
    """Generate `studies` studies in two processes and write their rows with COPY, in chunks."""

    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    check_study(0, objects)
    started = time.perf_counter()
    loaded = 0
    instance_columns = [
        "series_pk", "SOPInstanceUID", "SOPClassUID", "InstanceNumber", "ContentDate", "ContentTime", "Rows",
        "Columns", "BitsAllocated", "NumberOfFrames", "TransferSyntaxUID", "object_key", "size",
        "metadata_json", "pixel_offset", "pixel_length", "received_at",
    ]  # fmt: skip
    quoted = ", ".join(f'"{c}"' for c in instance_columns)
    context = multiprocessing.get_context("spawn")
    with psycopg.connect(dsn) as conn, context.Pool(2) as pool:
        pk = {"patient": 0, "study": 0, "series": 0}
        for patient, study, series_rows, instance_rows in pool.imap(
            _study_args, ((i, str(objects)) for i in range(studies)), chunksize=20
        ):
            with conn.cursor() as cur:
                pk["patient"] += 1
                cur.execute(
                    'INSERT INTO patient (patient_pk, partition, "PatientID", "IssuerOfPatientID", "PatientName", '
                    '"PatientBirthDate", "PatientSex") VALUES (%s, %s, %s, %s, %s, %s, %s)',
                    (pk["patient"], "clinical", patient["PatientID"], "", patient["PatientName"],
                     patient["PatientBirthDate"], patient["PatientSex"]),
                )  # fmt: skip
                pk["study"] += 1
                cur.execute(
                    'INSERT INTO study (study_pk, patient_pk, partition, "StudyInstanceUID", "StudyDate", "StudyTime", '
                    '"AccessionNumber", "StudyID", "ReferringPhysicianName", "StudyDescription", "ModalitiesInStudy", '
                    '"SOPClassesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", updated_at, '
                    "stable, priority) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now(), true, '')",
                    (pk["study"], pk["patient"], "clinical", study["StudyInstanceUID"], study["StudyDate"],
                     study["StudyTime"], study["AccessionNumber"], study["StudyID"], study["ReferringPhysicianName"],
                     study["StudyDescription"], "CT", "1.2.840.10008.5.1.4.1.1.2", SERIES_PER_STUDY,
                     SERIES_PER_STUDY * PER_SERIES),
                )  # fmt: skip
                series_pks = []
                for s in series_rows:
                    pk["series"] += 1
                    series_pks.append(pk["series"])
                    cur.execute(
                        'INSERT INTO series (series_pk, study_pk, "SeriesInstanceUID", "Modality", "SeriesNumber", '
                        '"SeriesDescription", "BodyPartExamined", "SeriesDate", "SeriesTime", '
                        '"PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", '
                        '"NumberOfSeriesRelatedInstances", last_received_at, stable) '
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, '', '', '', '', %s, now(), true)",
                        (pk["series"], pk["study"], s["SeriesInstanceUID"], s["Modality"], s["SeriesNumber"],
                         s["SeriesDescription"], s["BodyPartExamined"], PER_SERIES),
                    )  # fmt: skip
                with cur.copy(f"COPY instance ({quoted}) FROM STDIN") as copy:
                    for row in instance_rows:
                        copy.write_row(
                            [series_pks[row["series"]], *(row[c] for c in instance_columns[1:-1]), "now"]
                        )
            loaded += 1
            if loaded % 500 == 0:
                conn.commit()
                rate = loaded * SERIES_PER_STUDY * PER_SERIES / (time.perf_counter() - started)
                print(f"  {loaded}/{studies} studies, {rate:.0f} instances/s", flush=True)
        conn.commit()
        for table in ("patient", "study", "series", "instance"):
            conn.execute(  # the next keys after ours, for the real ingest that follows
                f"SELECT setval(pg_get_serial_sequence('{table}', '{table}_pk'), (SELECT max({table}_pk) FROM {table}))"
            )
        conn.commit()
    os.sync()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def _study_args(args: tuple[int, str]) -> Any:
    return _study(*args)


# ------------------------------------------------------------------------------------------ servers
def add_token(settings: Any) -> str:
    archive = Archive.open(settings)
    token = secrets.token_urlsafe(24)
    try:
        with archive.db.write() as s:
            s.add(ApiToken(token_hash=hashlib.sha256(token.encode()).hexdigest(), role="admin"))
    finally:
        archive.close()
    return token


def serve(work: Path, name: str, env: dict[str, str], http: bool) -> tuple[subprocess.Popen[bytes], int, int]:
    dicom_port, http_port = free_port(), free_port()
    command = [sys.executable, "-m", "imaging.cli", "serve", "--data-dir", str(work / name / "data")]
    command += ["--dicom-port", str(dicom_port), "--http-port", str(http_port)]
    if not http:
        command.append("--no-http")
    log = work / f"{name}.log"
    process = subprocess.Popen(
        command,
        env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while "DICOM gateway" not in log.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(log.read_text())
        time.sleep(0.2)
    if http:
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
    return process, dicom_port, http_port


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        p.terminate()
    for p in processes:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered) * 1e3, ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1e3


# ------------------------------------------------------------------------------------------ phases
def queries(work: Path, instances: int, repeat: int) -> None:

    studies = instances // (PER_SERIES * SERIES_PER_STUDY)
    database = create_database()
    try:
        env = {"IMAGING_DATABASE_URL": url_of(database), "IMAGING_WORKERS": "false",
               "IMAGING_TRIAGE_ENABLED": "false", "IMAGING_MIN_FREE_BYTES": "0"}  # fmt: skip
        data_dir = work / "queries" / "data"
        settings = load_settings(None, data_dir=data_dir, database_url=url_of(database), min_free_bytes=0)
        token = add_token(settings)  # (creates the schema)
        t = time.perf_counter()
        bulk_load(url_of(database), settings.objects_dir, studies)
        print(
            f"bulk-loaded {studies * PER_SERIES * SERIES_PER_STUDY} instances in {time.perf_counter() - t:.0f} s"
        )
        archive = Archive.open(settings)
        try:
            meta = SyntheticStudy(patient=synthetic_patient(77), StudyDescription="METADATA 500")
            series_uid = ""
            for ds in ct_series(meta, 500, rows=64, columns=64):
                series_uid = archive.ingestor.ingest_dataset(ds, source="import").series_instance_uid
        finally:
            archive.close()
        process, _, http_port = serve(work, "queries", env, http=True)
        root = f"http://127.0.0.1:{http_port}/dicomweb"
        headers = {"Authorization": f"Bearer {token}"}
        cases = {
            "study list (OHIF)": STUDY_LIST,
            "PatientName prefix": STUDY_LIST + "&PatientName=KOWAL*",
            "StudyDate range": STUDY_LIST + "&StudyDate=20150301-20150331",
            "series /metadata (500)": f"/studies/{meta.StudyInstanceUID}/series/{series_uid}/metadata",
        }
        try:
            with httpx.Client(headers=headers, timeout=120) as client:
                print(
                    f"\nQIDO / metadata at {studies * PER_SERIES * SERIES_PER_STUDY + 500} instances ({repeat} requests each):"
                )
                for label, path in cases.items():
                    first = client.get(root + path)
                    assert first.status_code == 200, (label, first.status_code, first.text[:200])
                    count = len(first.json())
                    times = []
                    for _ in range(repeat):
                        t = time.perf_counter()
                        response = client.get(root + path)
                        response.raise_for_status()
                        times.append(time.perf_counter() - t)
                    p50, p95 = percentiles(times)
                    print(
                        f"  {label:24} p50 {p50:7.2f} ms   p95 {p95:7.2f} ms   ({count} results)", flush=True
                    )
        finally:
            stop([process])
    finally:
        drop_database(database)


def ingest(work: Path, count: int) -> None:

    files = generate(work / "ct", count)
    chunks = [files[i::4] for i in range(4)]
    results: dict[int, float] = {}
    with CephS3Server(memory_limit_bytes=6 << 30) as s3:
        for processes in (1, 2):
            database = create_database()
            bucket = s3.create_bucket()
            env = {
                "IMAGING_DATABASE_URL": url_of(database), "IMAGING_WORKERS": "false",
                "IMAGING_TRIAGE_ENABLED": "false", "IMAGING_MIN_FREE_BYTES": "0", "IMAGING_DIMSE_PROCESSES": "1",
                "IMAGING_STORAGE_BACKEND": "s3", "IMAGING_S3_BUCKET": bucket,
                "IMAGING_S3_ENDPOINT_URL": s3.endpoint_url, "IMAGING_S3_REGION": "us-east-1",
                "IMAGING_S3_ACCESS_KEY_ID": s3.access_key, "IMAGING_S3_SECRET_ACCESS_KEY": s3.secret_key,
                "IMAGING_S3_ADDRESSING_STYLE": "path",
            }  # fmt: skip
            started = [serve(work, f"ingest{processes}-{n}", env, http=False) for n in range(processes)]
            try:
                t = time.perf_counter()
                senders = [
                    subprocess.Popen(
                        [
                            STORESCU,
                            "-aec",
                            "IMAGING",
                            "127.0.0.1",
                            str(started[i % processes][1]),
                            *map(str, chunk),
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                    for i, chunk in enumerate(chunks)
                ]
                for sender in senders:
                    _, err = sender.communicate()
                    assert sender.returncode == 0 and b"E:" not in err, err[-500:]
                results[processes] = count / (time.perf_counter() - t)
            finally:
                stop([p for p, _, _ in started])
                drop_database(database)
            print(f"  {processes} archive process(es): {results[processes]:6.1f} instances/s", flush=True)
    print(f"\ningest over 4 associations, shared PostgreSQL + radosgw: 1 process {results[1]:.1f}/s, "
          f"2 processes {results[2]:.1f}/s ({results[2] / results[1]:.2f}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--ingest-count", type=int, default=400)
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--per-series", type=int, default=PER_SERIES, help="instances per series (2 series per study)"
    )
    args = parser.parse_args()
    if args.per_series != PER_SERIES:  # re-read with the new value, here and in the loader processes
        os.environ["SCALE_PER_SERIES"] = str(args.per_series)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    work = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    try:
        if not args.skip_ingest:
            ingest(work, args.ingest_count)
        if not args.skip_queries:
            queries(work, args.instances, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
