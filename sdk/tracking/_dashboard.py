"""A real ``tensorboard`` server for a log folder: on a port proven free, stopped with its owner."""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from runtel.errors import ConfigError, MissingExtraError, PortInUseError

logger = logging.getLogger("runtel")


class TensorBoardServer:
    """``tensorboard --logdir <log_dir>`` on 127.0.0.1; :meth:`stop` ends it (and exit does, unless kept)."""

    def __init__(self, log_dir: str, port: int, *, keep: bool, timeout: float) -> None:
        executable = shutil.which("tensorboard", path=os.path.dirname(sys.executable)) or shutil.which(
            "tensorboard"
        )
        if executable is None:
            raise MissingExtraError(
                "the TensorBoard dashboard needs tensorboard: pip install runtel[tensorboard]"
            )
        chosen = _free_port() if port == 0 else _check_free(port)
        if port == 0:
            logger.warning("runtel: tensorboard serves %s on the free port %d", log_dir, chosen)
        self.port, self.keep = chosen, keep
        self.url = f"http://127.0.0.1:{chosen}/"
        self._process = subprocess.Popen(
            [executable, "--logdir", log_dir, "--host", "127.0.0.1", "--port", str(chosen)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=keep,  # a kept server outlives the script and its terminal's signals
        )
        if not keep:
            atexit.register(self.stop)
        self._wait_until_serving(Path(log_dir), timeout)

    @property
    def pid(self) -> int:
        return self._process.pid

    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        """End the server (no-op when it already exited)."""
        atexit.unregister(self.stop)
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def _wait_until_serving(self, log_dir: Path, timeout: float) -> None:
        """Until this server (not another holder of the port) answers with our log folder."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.stop()
                raise ConfigError(
                    f"tensorboard exited with code {self._process.returncode} before serving on port "
                    f"{self.port} (taken meanwhile? pass port=0 to pick a free one)"
                )
            if _serves(self.url, log_dir):
                return
            time.sleep(0.2)
        self.stop()
        raise ConfigError(f"tensorboard did not answer on port {self.port} within {timeout}s")


def _serves(url: str, log_dir: Path) -> bool:
    try:
        with urllib.request.urlopen(url + "data/environment", timeout=2) as response:
            location = json.loads(response.read()).get("data_location", "")
    except (OSError, urllib.error.URLError, ValueError):
        return False
    return bool(location) and Path(location).resolve() == log_dir.resolve()


def _check_free(port: int) -> int:
    """``port`` if nothing listens on it or holds it on 127.0.0.1; else a clear error."""
    if not 0 < port < 65536:
        raise ConfigError(f"port must be 1-65535, or 0 for a free one; got {port!r}")
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise PortInUseError(f"port {port} is in use; pass another port, or port=0 to pick a free one")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is free
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUseError(
                f"port {port} is in use ({exc.strerror}); pass another port, or port=0 to pick a free one"
            ) from None
    return port


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
