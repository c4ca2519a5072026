"""The Python side of the browser tests' remote control (tests/ui/driver.js): one Chromium for a test module,
pages in named contexts, each command a JSON line answered by one. A failed command raises BrowserError
with the driver's message, the page's recent errors, and a screenshot in test-artifacts/."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.dicomweb.test_viewer import ARTIFACTS, _prepare_cache

HERE = Path(__file__).parent
DRIVER = HERE / "driver.js"
AXE = HERE / "vendor" / "axe.min.js"
DESKTOP = (1280, 800)
TABLET = (768, 1024)


class BrowserError(AssertionError):
    pass


class Browser:
    def __init__(self) -> None:
        cache = _prepare_cache()  # playwright-core from npm, cached under build/ (no browser download)
        ARTIFACTS.mkdir(exist_ok=True)
        self.proc = subprocess.Popen(
            ["node", str(DRIVER), str(AXE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=cache,
            env={**os.environ, "NODE_PATH": str(cache / "node_modules")},
        )
        self._lock = threading.Lock()
        first = self._read(120)
        if not first.get("ready"):
            raise BrowserError(f"the driver did not start: {first}")
        self.version = first["version"]

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        if not result or not result[0]:
            stderr = ""
            if self.proc.poll() is not None and self.proc.stderr is not None:
                stderr = self.proc.stderr.read()[-2000:]
            raise BrowserError(f"no answer from the browser driver within {timeout} s {stderr}")
        answer: dict[str, Any] = json.loads(result[0])
        return answer

    def call(self, op: str, timeout: float = 120, **args: Any) -> dict[str, Any]:
        with self._lock:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
            answer = self._read(timeout)
        if not answer.get("ok"):
            page = args.get("page")
            detail = ""
            if page:
                shot = ARTIFACTS / f"ui-error-{page}-{op}.png"
                self.call_quietly("screenshot", page=page, path=str(shot), fullPage=True)
                detail = f"; page log: {self.call_quietly('logs', page=page).get('logs')}; screenshot {shot}"
            raise BrowserError(f"{op} {json.dumps(args)[:300]}: {answer.get('error')}{detail}")
        return answer

    def call_quietly(self, op: str, **args: Any) -> dict[str, Any]:
        try:
            return self.call(op, **args)
        except BrowserError:
            return {}

    def page(self, name: str, size: tuple[int, int] = DESKTOP) -> Page:
        self.call("context", name=name, width=size[0], height=size[1])
        return Page(self, name)

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


class Page:
    """One page of a context (or a tab it opened), with the driver's commands as methods."""

    def __init__(self, browser: Browser, name: str) -> None:
        self.browser, self.name = browser, name

    def __getattr__(self, op: str) -> Any:
        def command(**args: Any) -> dict[str, Any]:
            return self.browser.call(op, page=self.name, **args)

        return command

    def text_of(self, selector: str) -> str:
        return str(self.browser.call("text", page=self.name, selector=selector).get("text") or "")

    def shot(self, label: str, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"ui-{label}.png"
        self.browser.call("screenshot", page=self.name, path=str(path), fullPage=full_page)
        return path

    def both_widths(self, label: str) -> list[Path]:
        """Screenshots at 1280×800 and at tablet width (768×1024), and the page never scrolls sideways."""
        paths = []
        for size, suffix in ((DESKTOP, "desktop"), (TABLET, "tablet")):
            self.browser.call("viewport", page=self.name, width=size[0], height=size[1])
            overflow = self.browser.call("overflow", page=self.name)["value"]
            assert overflow <= 1, f"{label} scrolls sideways by {overflow} px at {size}"
            paths.append(self.shot(f"{label}-{suffix}"))
        self.browser.call("viewport", page=self.name, width=DESKTOP[0], height=DESKTOP[1])
        return paths

    def accessible(self) -> None:
        """axe-core (WCAG 2.0/2.1 A and AA) finds no violation on the page as it is now."""
        violations = self.browser.call("axe", page=self.name)["violations"]
        assert violations == [], json.dumps(violations, indent=1)[:4000]
