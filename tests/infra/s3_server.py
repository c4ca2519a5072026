"""A real S3 server for the tests: Ceph's RADOS Gateway (Debian's radosgw) on a one-node Ceph cluster that
the fixture builds in a temporary directory and runs as foreground children: one monitor (ceph-mon), one
OSD keeping its objects in memory (ceph-osd with memstore) and radosgw (beast frontend) on 127.0.0.1.

No manager daemon (radosgw does not need one), no cephx (auth none on loopback; the S3 API still checks
AWS signatures with the user's keys), one replica, small placement groups. It starts in about 6-8 s and
holds about 200 MB of memory (RSS of the three daemons) plus what is stored.

Usage:

    with CephS3Server() as s3:
        client = s3.client()                      # boto3, path-style, signed with s3.access_key/secret_key
        s3.create_bucket("dicom")
        ...  # or give s3.endpoint_url, s3.access_key, s3.secret_key to the code under test
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config

from tests.conftest import require_program
from tests.infra.process import ServerProcess, free_port, tcp_port_open, wait_until

CEPH_MON = "/usr/bin/ceph-mon"
CEPH_OSD = "/usr/bin/ceph-osd"
RADOSGW = "/usr/bin/radosgw"
RADOSGW_ADMIN = "/usr/bin/radosgw-admin"
MONMAPTOOL = "/usr/bin/monmaptool"
CEPH = "/usr/bin/ceph"
PROGRAMS = (CEPH_MON, CEPH_OSD, RADOSGW, RADOSGW_ADMIN, MONMAPTOOL, CEPH)
REGION = "us-east-1"  # radosgw's default zonegroup answers to any region; botocore needs one to sign


class CephS3Server:
    """radosgw on a throw-away Ceph cluster; `endpoint_url`, `access_key`, `secret_key`; a context manager."""

    def __init__(self, memory_limit_bytes: int = 2 << 30) -> None:
        self.memory_limit_bytes = memory_limit_bytes
        self.access_key = "ARCHIVE" + uuid.uuid4().hex[:13].upper()
        self.secret_key = uuid.uuid4().hex + uuid.uuid4().hex[:8]
        self.root: Path | None = None
        self.mon_port = 0
        self.port = 0
        self._processes: list[ServerProcess] = []

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CephS3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, secret_key: str | None = None, **config: Any) -> Any:
        """A boto3 S3 client for this server (path-style addressing: there is no DNS for bucket names);
        `secret_key` signs with another secret, to test refusals."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}, **config),
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    # -- lifecycle ------------------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ceph-"))
        self.mon_port, self.port = free_port(), free_port()
        for sub in ("mon", "osd", "run", "log", "rgw"):
            (self.root / sub).mkdir()
        conf = self.root / "ceph.conf"
        fsid = str(uuid.uuid4())
        conf.write_text(self._config(fsid))
        deadline = time.monotonic() + timeout
        try:
            self._run(
                MONMAPTOOL,
                "--create",
                "--fsid",
                fsid,
                "--addv",
                "a",
                f"[v2:127.0.0.1:{self.mon_port}]",
                str(self.root / "monmap"),
                with_conf=False,
            )
            self._run(CEPH_MON, "--mkfs", "-i", "a", "--monmap", str(self.root / "monmap"))
            mon = self._daemon("ceph-mon", CEPH_MON, "-i", "a")
            wait_until(lambda: tcp_port_open(self.mon_port), 10, "ceph-mon", [mon])
            osd_id = self._run(CEPH, "osd", "create", "--connect-timeout", "20").strip()
            self._run(CEPH_OSD, "-i", osd_id, "--mkfs")
            self._daemon("ceph-osd", CEPH_OSD, "-i", osd_id)
            # radosgw creates its pools at start, which waits for the OSD to be up and its PGs active.
            self._daemon("radosgw", RADOSGW, "-n", "client.rgw")
            wait_until(self._gateway_ready, deadline - time.monotonic(), "radosgw", self._processes)
            self._run(
                RADOSGW_ADMIN,
                "-n",
                "client.admin",
                "user",
                "create",
                "--uid",
                "archive-tests",
                "--display-name",
                "imaging-archive tests",
                "--access-key",
                self.access_key,
                "--secret-key",
                self.secret_key,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        # radosgw first, the monitor last: daemons shut down cleanly while the monitor still answers.
        for process in reversed(self._processes):
            process.stop()
        self._processes = []
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def memory_rss_kib(self) -> dict[str, int]:
        """Resident memory of each daemon, in KiB (for the report on the fixture's footprint)."""
        sizes = {}
        for process in self._processes:
            if process.popen is not None:
                status = Path(f"/proc/{process.popen.pid}/status").read_text()
                line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
                sizes[process.name] = int(line.split()[1])
        return sizes

    # -- helpers --------------------------------------------------------------------------------------

    def _gateway_ready(self) -> bool:
        try:
            return httpx.get(self.endpoint_url + "/", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def _run(self, program: str, *args: str, with_conf: bool = True) -> str:
        assert self.root is not None
        argv = [program, *(("-c", str(self.root / "ceph.conf")) if with_conf else ()), *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def _daemon(self, name: str, program: str, *args: str) -> ServerProcess:
        assert self.root is not None
        process = ServerProcess(
            name,
            [program, "-c", str(self.root / "ceph.conf"), "-f", *args],
            self.root / "log" / f"{name}.out",
            cwd=self.root,
        )
        self._processes.append(process)
        process.start()
        return process

    def _config(self, fsid: str) -> str:
        assert self.root is not None
        root = self.root
        return f"""# Generated by tests/infra/s3_server.py: a one-node cluster on loopback.
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{self.mon_port}
public network = 127.0.0.0/8
ms bind ipv6 = false
# No cephx: everything is on loopback and thrown away. Without cephx only the crc connection mode exists.
auth cluster required = none
auth service required = none
auth client required = none
ms cluster mode = crc
ms service mode = crc
ms client mode = crc
ms mon cluster mode = crc
ms mon service mode = crc
ms mon client mode = crc
# One OSD: one replica, few placement groups, no PG autoscaler (it lives in the absent manager).
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
osd crush chooseleaf type = 0
run dir = {root / "run"}
admin socket = {root / "run"}/$name.asok
pid file = {root / "run"}/$name.pid
log file = {root / "log"}/$name.log
log to stderr = false
err to stderr = true
[mon]
mon data = {root / "mon"}
mon cluster log file = {root / "log"}/cluster.log
mon data avail warn = 1
mon data avail crit = 0
# Each map change (pool creation: radosgw makes seven) waits for the next Paxos proposal, 1 s by default.
paxos propose interval = 0.02
paxos min wait = 0.01
[osd]
osd data = {root / "osd"}
osd objectstore = memstore
memstore device bytes = {self.memory_limit_bytes}
osd max object name len = 460
osd max object namespace len = 64
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:{self.port}
rgw data = {root / "rgw"}
rgw dns name = 127.0.0.1
"""


def require_ceph() -> None:
    for program in PROGRAMS:
        require_program(program)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[CephS3Server]:
    """One radosgw for the session (each test makes its own bucket with `create_bucket`)."""
    require_ceph()
    with CephS3Server() as server:
        yield server
