"""Shared fixtures: every test gets its own store folder and a clean RUNTEL_* environment."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import runtel

#: Captured by default, off in tests that do not check them (their artifacts and descriptors), from
#: import on so that module- and session-scoped fixtures start their runs without them too; the tests
#: of the captures (test_repro.py, test_console*.py) turn them on.
CAPTURES_OFF = {"RUNTEL_CAPTURE_ENVIRONMENT": "off", "RUNTEL_CONSOLE": "off"}
os.environ.update(CAPTURES_OFF)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RUNTEL_* from outside, and each test in its own working directory: libraries that write
    beside the caller by default (MLflow's ./mlruns artifact root) never write into the checkout."""
    for key in list(os.environ):
        if key.startswith("RUNTEL_") or key in ("TRACEPARENT", "TRACESTATE"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("RUNTEL_SYSTEM_INTERVAL", "0")
    for key, value in CAPTURES_OFF.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest.fixture
def run(base_dir: Path) -> Iterator[runtel.Run]:
    active = runtel.init(project="tests", name="fixture-run", base_dir=str(base_dir))
    yield active
    active.finish()


def run_python(code: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter (a real second process); return its stdout.

    A wandb service that an earlier test started in this process is not inherited
    (``WANDB_SERVICE``): it would resolve the child's relative paths against its own cwd.
    """
    inherited = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**inherited, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


#: Debian's Chromium as root, without a GPU, never resolving a host other than the test's own servers.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for every browser test of the session: Playwright's sync API allows one
    driver per thread, and a page load costs about 2 s (mostly parsing plotly.min.js)."""
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        executable = shutil.which("chromium")
        assert executable, "needs Debian's chromium (bash .ci/test installs it)"
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


#: Screenshots of browser tests, for looking at a failure afterwards.
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@contextmanager
def watched_tab(browser: Any, height: int, screenshot: str | None = None) -> Iterator[Any]:
    """A fresh tab that fails the test on any server error (HTTP 5xx) it saw; ``screenshot`` names the
    full-page PNG kept in ``test-artifacts/`` when the tab closes."""
    tab = browser.new_page(viewport={"width": 1400, "height": height})
    failures: list[str] = []
    tab.on("response", lambda response: failures.append(response.url) if response.status >= 500 else None)
    yield tab
    if screenshot is not None:
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"ui-{screenshot}.png"), full_page=True)
    tab.close()
    assert not failures, f"server errors: {failures}"
