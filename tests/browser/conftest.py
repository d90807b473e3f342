"""Fixtures of the dashboard's browser test: `streamguard up --no-demo` (API + real worker on
SQLite, file:// artifacts and the filesystem broker) and Debian's Chromium driven by Playwright.

No browser is downloaded: Playwright starts /usr/bin/chromium (CI installs Debian's package).
A missing Chromium or Devign file FAILS the test; nothing here skips.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.harness import VENV_BIN, Proc, base_env, dump_logs, free_port

CHROMIUM = Path(os.environ.get("STREAMGUARD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
KEY_LINE = re.compile(r"API key for tenant 'dev': (sg_\S+)")


@dataclass
class Service:
    base_url: str
    key: str
    up: Proc

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=60.0,
                            headers={"Authorization": f"Bearer {self.key}"})

    def get(self, path: str, **params: Any) -> Any:
        with self.client() as c:
            r = c.get(path, params=params)
        assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
        return r.json()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`streamguard up --no-demo` on a free port; its printed development key."""
    tmp = tmp_path_factory.mktemp("up")
    port = free_port()
    up = Proc("streamguard-up", [str(VENV_BIN / "streamguard"), "up", "--no-demo",
                                 "--port", str(port), "--data-dir", str(tmp / "sg")],
              base_env(), tmp / "up.log", capture_stdout=True)
    try:
        up.wait_for_output("serving; Ctrl-C to stop", 180)
        match = next(m for line in up.lines if (m := KEY_LINE.search(line)))
        yield Service(f"http://127.0.0.1:{port}", match.group(1), up)
    except BaseException:
        dump_logs([up])
        raise
    finally:
        up.stop()
        for name in ("api", "worker"):
            log = tmp / "sg" / "logs" / f"{name}.log"
            if log.exists():
                print(f"\n===== {name} log (end) =====\n"  # noqa: T201
                      + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright (never `playwright install`)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"Chromium missing at {CHROMIUM}: apt-get install chromium "
                    "(or set STREAMGUARD_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """Where screenshots go: $STREAMGUARD_TEST_ARTIFACTS (kept by CI), else tmp_path."""
    folder = Path(os.environ.get("STREAMGUARD_TEST_ARTIFACTS", tmp_path)) / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class PageWatch:
    """What a page did: console errors, uncaught exceptions and every request made."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)  # expected refusals only

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on("request", lambda request: self.requests.append(request))

    def _console(self, msg: Any) -> None:
        if msg.type != "error":
            return
        text = f"{msg.text} @ {msg.location.get('url', '')}"
        if not any(p.search(text) for p in self.allowed):
            self.console_errors.append(text)
