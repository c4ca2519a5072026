"""A real syslog collector for the tests: rsyslogd (Debian's rsyslog + rsyslog-gnutls) as a foreground child,
listening on 127.0.0.1 for RFC 5426 syslog over UDP (imudp) and RFC 5425 syslog over TLS (imtcp with the
gtls driver, octet-counted framing), writing each message it receives, raw, to a file the test reads.

Its configuration, work directory, pid file, certificates and output are in a temporary directory. The CA
and the server certificate are generated per collector (tests.infra.certificates); with
`require_client_cert=True` the TLS listener accepts only clients with a certificate from that CA
(`client_cert`).

Usage:

    with SyslogCollector() as collector:
        send_udp(collector.udp_port, b"<110>1 2024-01-01T00:00:00Z host app - - - hello")
        context = collector.ca.client_context()          # trusts collector.ca_cert_path
        ...                                              # TLS to collector.tls_port, octet-counted frames
        collector.wait_for_messages(2)                   # [Received(transport="udp", raw="<110>1 ..."), ...]
        collector.stop(); ...; collector.start()         # same ports: test a sender's buffering
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require_program
from tests.infra.certificates import CertificateFiles, TestCA
from tests.infra.process import ServerProcess, free_port, wait_until

RSYSLOGD = "/usr/sbin/rsyslogd"
GTLS_DRIVER = Path("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so")
MAX_MESSAGE_SIZE = 64 * 1024  # DICOM audit messages (XML) are larger than rsyslog's default of 8 KiB


@dataclass(frozen=True)
class Received:
    transport: str  # "udp" or "tls"
    raw: str  # the message as received, without the transport's framing


def _listening(port: int, protocol: str) -> bool:
    """Whether a socket is bound to 127.0.0.1:`port` (UDP) or listening there (TCP), from /proc/net: a
    probe connection would show up in the collector's own log as a failed TLS handshake."""
    wanted_address = f"0100007F:{port:04X}"
    with open(f"/proc/net/{protocol}") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == wanted_address and (protocol == "udp" or fields[3] == "0A"):  # 0A: LISTEN
                return True
    return False


class SyslogCollector:
    """rsyslogd on 127.0.0.1: `udp_port`, `tls_port`; a context manager; restartable on the same ports."""

    def __init__(self, require_client_cert: bool = False) -> None:
        self.require_client_cert = require_client_cert
        self.root = Path(tempfile.mkdtemp(prefix="rsyslog-"))
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tls_port = free_port()
        self.ca = TestCA(self.root / "pki")
        self.server_cert = self.ca.issue("syslog-server", server=True)
        self.client_cert: CertificateFiles = self.ca.issue("syslog-client", server=False)
        self.output = self.root / "messages.jsonl"
        self.config = self.root / "rsyslog.conf"
        (self.root / "work").mkdir()
        self.config.write_text(self._config())
        self._process: ServerProcess | None = None

    @property
    def ca_cert_path(self) -> Path:
        return self.ca.ca_cert

    def __enter__(self) -> SyslogCollector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, timeout: float = 10.0) -> None:
        if self._process is not None:
            raise RuntimeError("the collector is already running")
        process = ServerProcess(
            "rsyslogd",
            [RSYSLOGD, "-n", "-f", str(self.config), "-i", str(self.root / "rsyslogd.pid")],
            self.root / "rsyslogd.log",
        )
        self._process = process
        process.start()
        try:
            wait_until(
                lambda: _listening(self.udp_port, "udp") and _listening(self.tls_port, "tcp"),
                timeout,
                "rsyslogd listeners",
                [process],
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop rsyslogd (what it received stays in the output file); `start` brings it back."""
        if self._process is not None:
            self._process.stop()
            self._process = None
            (self.root / "rsyslogd.pid").unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def messages(self) -> list[Received]:
        """Every message received so far, oldest first."""
        try:
            lines = self.output.read_text(encoding="utf-8", errors="surrogateescape").splitlines()
        except FileNotFoundError:
            return []
        received = []
        for line in lines:
            record = json.loads(line)
            received.append(Received("udp" if record["input"] == "imudp" else "tls", record["raw"]))
        return received

    def wait_for_messages(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The messages once at least `count` have arrived."""
        deadline = time.monotonic() + timeout
        while len(found := self.messages()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(found)} of {count} syslog messages received after {timeout} s")
            time.sleep(0.05)
        return found

    def log(self) -> str:
        """rsyslogd's own messages (TLS handshake failures, for instance)."""
        return (self.root / "rsyslogd.log").read_text(errors="replace")

    def _config(self) -> str:
        auth_mode = "x509/certvalid" if self.require_client_cert else "anon"
        return f"""# Generated by tests/infra/syslog_collector.py
global(
  workDirectory="{self.root / "work"}"
  maxMessageSize="{MAX_MESSAGE_SIZE}"
  parser.escapeControlCharactersOnReceive="off"
  defaultNetstreamDriverCAFile="{self.ca.ca_cert}"
  defaultNetstreamDriverCertFile="{self.server_cert.cert}"
  defaultNetstreamDriverKeyFile="{self.server_cert.key}"
)
# rsyslogd's own messages go to stderr (its log file), not to the output.
module(load="imudp")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="{auth_mode}"
       gnutlsPriorityString="SECURE256:+SECURE128:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2")

template(name="raw_json" type="list") {{
  constant(value="{{")
  property(outname="input" name="inputname" format="jsonf")
  constant(value=",")
  property(outname="raw" name="rawmsg" format="jsonf")
  constant(value="}}\\n")
}}

ruleset(name="collect") {{
  action(type="omfile" file="{self.output}" template="raw_json")
}}

input(type="imudp" address="127.0.0.1" port="{self.udp_port}" ruleset="collect")
input(type="imtcp" address="127.0.0.1" port="{self.tls_port}" ruleset="collect")
"""


def send_udp(port: int, message: bytes) -> None:
    """One syslog message in one datagram (RFC 5426)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(message, ("127.0.0.1", port))


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 §4.3 framing: MSG-LEN SP SYSLOG-MSG."""
    return str(len(message)).encode() + b" " + message


@pytest.fixture
def syslog_collector() -> Iterator[SyslogCollector]:
    """A collector per test (a test may stop and restart it), started in about 0.1 s."""
    require_program(RSYSLOGD)
    if not GTLS_DRIVER.exists():
        require_program(str(GTLS_DRIVER))  # rsyslog-gnutls is missing: fail in CI, skip locally
    with SyslogCollector() as collector:
        yield collector
