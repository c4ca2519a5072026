"""Child processes for the test servers: started in their own process group (so a server's workers go
with it), logged to a file that a failure quotes, and stopped with SIGTERM, then SIGKILL."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# Servers that refuse to run as root (llng-fastcgi-server) run as this user when the tests run as root,
# as they do in CI.
UNPRIVILEGED_USER = "www-data"


def running_as_root() -> bool:
    return os.geteuid() == 0


def chown_to_unprivileged(*paths: Path) -> None:
    """Give `paths` (recursively) to UNPRIVILEGED_USER when running as root, so that a server started by
    `start(..., unprivileged=True)` can write its state there."""
    if not running_as_root():
        return
    entry = pwd.getpwnam(UNPRIVILEGED_USER)
    for top in paths:
        for path in [top, *top.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port that is free on 127.0.0.1 now (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """One server program run as a foreground child; `log` holds its stdout and stderr."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        unprivileged: bool = False,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = env
        self.unprivileged = unprivileged and running_as_root()
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                process_group=0,
                user=UNPRIVILEGED_USER if self.unprivileged else None,
                group=UNPRIVILEGED_USER if self.unprivileged else None,
                extra_groups=[] if self.unprivileged else None,
            )

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""

    def check_running(self) -> None:
        if not self.running():
            code = None if self.popen is None else self.popen.returncode
            raise RuntimeError(f"{self.name} exited (status {code}); its log ends:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            _signal_group(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout)
        # Workers that outlived their parent (pre-forked FastCGI children) go with the group.
        _signal_group(self.popen.pid, signal.SIGKILL)
        self.popen = None


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signum)


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, processes: Sequence[ServerProcess] = ()
) -> None:
    """Poll `condition` until it holds; fail early with the log of a process that died."""
    deadline = time.monotonic() + timeout
    while True:
        for process in processes:
            process.check_running()
        if condition():
            return
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name} log:\n{p.log_tail()}" for p in processes)
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s\n{logs}")
        time.sleep(0.05)


def tcp_port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
