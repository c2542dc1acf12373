"""What it takes to reproduce a run: the code (git), the command, the interpreter, the platform and the
installed packages, captured at ``runtel.init`` (docs/reproducibility.md).

The command and working directory are read on the caller's thread (before the script can change
them); the interpreter and platform, git (subprocesses) and the package scan on one background
thread that the run joins before it finishes, so ``init()`` stays fast and everything is stored
before the run ends. Nothing
here may fail a run: git missing, not a repository, a timeout or an unreadable package are recorded
as absent, with the reason.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtel import _redact
from runtel.config import DEFAULT_DIFF_MAX_BYTES

logger = logging.getLogger("runtel")

ENVIRONMENT_FILE = "environment.json"
DIFF_ARTIFACT = "diff.patch"
PACKAGES_ARTIFACT = "requirements.txt"
#: Untracked file names listed in ``environment.json`` (their count is always complete).
MAX_UNTRACKED_NAMES = 1_000
#: Seconds one git command may take before it is abandoned (and the fact recorded as absent).
GIT_TIMEOUT_S = 5.0
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's empty tree (SHA-1 repositories)

#: Stores a file of the capture as an artifact of the run: (local path, artifact name, kind, metadata).
StoreFile = Callable[[Path, str, str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class ReproOptions:
    git: bool = True
    diff: bool = True
    diff_max_bytes: int = DEFAULT_DIFF_MAX_BYTES
    packages: bool = True


def process_facts() -> dict[str, Any]:
    """Command and working directory: read on the caller's thread, before the script can change them."""
    return {
        "command": [_redact.redact(arg) for arg in sys.argv],  # --api-key=... stays out of the store
        "interpreter_command": [_redact.redact(arg) for arg in getattr(sys, "orig_argv", sys.argv)],
        "cwd": _working_directory(),
    }


def code_folders(cwd: str | None) -> list[str]:
    """Where git looks for the run's code, in order: the folder of the script being run (``cd /data &&
    python ~/proj/train.py`` is the code of ``~/proj``), then the working directory (``python -c``,
    ``python -m``, a REPL, or a console command installed with the interpreter)."""
    folders: list[str] = []
    script = _script_folder()
    if script is not None:
        folders.append(script)
    if cwd is not None and cwd not in folders:
        folders.append(cwd)
    return folders


def _script_folder() -> str | None:
    """The folder of ``python path/to/script.py``; None for a module run with ``-m`` (found from the
    working directory) and for a script installed in the interpreter's own folders (``pytest``)."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if getattr(main, "__spec__", None) is not None or not isinstance(script, str) or not script:
        return None
    folder = os.path.dirname(os.path.abspath(script))
    paths = sysconfig.get_paths()
    installed = [os.path.abspath(paths[key]) for key in ("scripts", "purelib", "platlib") if key in paths]
    if any(folder == root or folder.startswith(root + os.sep) for root in installed):
        return None
    return folder if os.path.isdir(folder) else None


def _working_directory() -> str | None:
    try:
        return os.getcwd()
    except OSError:  # the folder was removed under the process
        return None


def interpreter_facts() -> dict[str, Any]:
    """Interpreter, platform and host (``platform.platform()`` probes libc: about 10 ms, so off-thread)."""
    return {
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "platform": platform.platform(),
        },
        "hostname": socket.gethostname(),
    }


def torch_facts() -> dict[str, Any]:
    """torch, CUDA and cuDNN versions, only when the user's code already imported torch (importing it
    here would cost seconds and change the process); otherwise ``{"imported": False}``."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {"imported": False}
    facts: dict[str, Any] = {"imported": True, "version": str(getattr(torch, "__version__", ""))}
    try:
        facts["cuda"] = torch.version.cuda
        facts["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        facts["cuda_initialized"] = bool(torch.cuda.is_initialized())
    except Exception as exc:  # a partly imported or unusual build: keep what was read
        facts["error"] = f"{type(exc).__name__}: {exc}"
    return facts


def installed_packages() -> list[tuple[str, str]]:
    """Every installed distribution as ``(name, version)``, sorted by name, read with ``importlib.metadata``
    (no subprocess); the first of two distributions with one name wins, as on ``sys.path``.

    Read once per process while ``sys.path`` and its folders are unchanged (an install changes a
    folder's time), so the trials of a sweep do not each pay the scan.
    """
    global _scanned
    key = tuple((entry, _mtime(entry)) for entry in sys.path)
    with _scan_lock:
        if _scanned is not None and _scanned[0] == key:
            return list(_scanned[1])
        packages = _scan_packages()
        _scanned = (key, packages)
        return list(packages)


def _scan_packages() -> list[tuple[str, str]]:
    from importlib.metadata import distributions

    found: dict[str, tuple[str, str]] = {}
    for dist in distributions():
        try:
            name = dist.metadata["Name"]
            version = dist.version
        except Exception:  # a damaged .dist-info: skipped, like pip does
            continue
        if isinstance(name, str) and name and isinstance(version, str):
            found.setdefault(name.lower().replace("_", "-"), (name, version))
    return [found[key] for key in sorted(found)]


_scanned: tuple[tuple[tuple[str, int], ...], list[tuple[str, str]]] | None = None
_scan_lock = threading.Lock()


def _mtime(entry: str) -> int:
    try:
        return os.stat(entry or ".").st_mtime_ns
    except OSError:
        return -1


def freeze_text(packages: list[tuple[str, str]]) -> str:
    """``pip freeze``'s format: one ``name==version`` a line."""
    return "".join(f"{name}=={version}\n" for name, version in packages)


def _git(args: list[str], cwd: str, stdout: Any = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        timeout=GIT_TIMEOUT_S,
        check=False,
    )


def git_facts(cwd: str) -> dict[str, Any]:
    """Commit, branch, remote (credentials redacted), dirty flag, changed and untracked files of the
    checkout holding ``cwd``; ``{"present": False, "reason": ...}`` outside one."""
    try:
        status = _git(["status", "--porcelain=v2", "--branch", "--untracked-files=all", "-z"], cwd)
    except FileNotFoundError:
        return {"present": False, "reason": "git is not installed"}
    except (OSError, subprocess.SubprocessError) as exc:
        return {"present": False, "reason": f"git status failed: {type(exc).__name__}: {exc}"}
    if status.returncode != 0:
        return {"present": False, "reason": f"{cwd} is not inside a git working tree"}
    facts = _parse_status(status.stdout.decode("utf-8", "surrogateescape"))
    facts["remote"] = _remote_url(cwd)
    return facts


def _parse_status(text: str) -> dict[str, Any]:
    """``git status --porcelain=v2 --branch -z``: headers, then changed (1/2/u) and untracked (?) entries."""
    commit: str | None = None
    branch: str | None = None
    changed: list[str] = []
    untracked: list[str] = []
    entries = iter(text.split("\0"))
    for entry in entries:
        if entry.startswith("# branch.oid "):
            oid = entry.removeprefix("# branch.oid ")
            commit = None if oid == "(initial)" else oid
        elif entry.startswith("# branch.head "):
            head = entry.removeprefix("# branch.head ")
            branch = None if head == "(detached)" else head
        elif entry.startswith("? "):
            untracked.append(entry[2:])
        elif entry[:2] in ("1 ", "u "):
            changed.append(entry.split(" ", 8 if entry[0] == "1" else 10)[-1])
        elif entry.startswith("2 "):
            changed.append(entry.split(" ", 9)[-1])
            next(entries, None)  # a rename's original path follows as its own entry
    return {
        "present": True,
        "commit": commit,
        "branch": branch,
        "detached": branch is None and commit is not None,
        "dirty": bool(changed or untracked),
        "changed": len(changed),
        "untracked_count": len(untracked),
        "untracked": untracked[:MAX_UNTRACKED_NAMES],
    }


def _remote_url(cwd: str) -> str | None:
    """``origin``'s URL, else the first remote's, with any credentials in it replaced by ``***``."""
    try:
        listed = _git(["config", "--get-regexp", r"^remote\..*\.url$"], cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    urls: dict[str, str] = {}
    for line in listed.stdout.decode("utf-8", "replace").splitlines():
        key, _, url = line.partition(" ")
        urls[key.removeprefix("remote.").removesuffix(".url")] = url
    chosen = urls.get("origin") or next(iter(urls.values()), None)
    return None if chosen is None else _redact.redact(chosen)


def git_diff(cwd: str, commit: str | None, max_bytes: int, target: Path) -> dict[str, Any]:
    """Write the uncommitted changes of tracked files (staged and not) to ``target``, cut at ``max_bytes``
    with a closing line saying so; returns the sizes (``cut`` when bytes were left out)."""
    with tempfile.TemporaryFile() as raw:  # a diff of any size never sits in memory whole
        try:
            done = _git(["diff", "--no-color", "--no-ext-diff", commit or _EMPTY_TREE], cwd, stdout=raw)
        except (OSError, subprocess.SubprocessError) as exc:
            return {"stored": False, "reason": f"git diff failed: {type(exc).__name__}: {exc}"}
        if done.returncode != 0:
            return {"stored": False, "reason": f"git diff exited with status {done.returncode}"}
        total = raw.tell()
        raw.seek(0)
        kept = raw.read(max_bytes)
    with open(target, "wb") as out:
        out.write(kept)
        if total > max_bytes:
            out.write(
                f"\n[runtel: diff cut at {max_bytes} of {total} bytes (RUNTEL_DIFF_MAX_BYTES)]\n".encode()
            )
    return {"stored": total > 0, "bytes": total, "stored_bytes": len(kept), "cut": total > max_bytes}


class ReproCapture:
    """Captures on a background thread and stores ``environment.json`` and the artifacts when done.

    ``store_file`` puts a file into the run as an artifact; ``join`` (called by ``finish``) waits for
    the capture, bounded by git's timeouts.
    """

    def __init__(self, run_dir: Path, options: ReproOptions, store_file: StoreFile) -> None:
        self._run_dir = run_dir
        self._options = options
        self._store_file = store_file
        self._facts = process_facts()
        self._code_dirs = code_folders(self._facts["cwd"])  # on the caller's thread, as the facts
        self._thread = threading.Thread(target=self._capture, name="runtel-repro", daemon=True)
        self._thread.start()

    def join(self, timeout: float = 4 * GIT_TIMEOUT_S) -> None:
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("runtel: the reproducibility capture did not end in %.0f s; not stored", timeout)

    def _capture(self) -> None:
        started = time.perf_counter()
        try:
            document: dict[str, Any] = {**self._facts, **interpreter_facts(), "captured_at": time.time()}
            with tempfile.TemporaryDirectory(prefix="runtel-repro-") as scratch:
                folder = Path(scratch)
                document["git"] = (
                    self._git(folder) if self._options.git else {"present": False, "reason": "off"}
                )
                document["packages"] = self._packages(folder)
                document["torch"] = torch_facts()
                document["capture_seconds"] = time.perf_counter() - started
                from runtel.store._jsonio import write_json_atomic

                write_json_atomic(self._run_dir / ENVIRONMENT_FILE, document)
        except Exception:  # never the run's failure: what was captured is lost, and said so
            logger.exception("runtel: could not capture the run's environment (environment.json)")

    def _git(self, folder: Path) -> dict[str, Any]:
        if not self._code_dirs:
            return {"present": False, "reason": "the working directory no longer exists"}
        for code_dir in self._code_dirs:
            facts = git_facts(code_dir)
            if facts.get("present"):
                break
        else:
            return facts
        if not self._options.diff:
            facts["diff"] = {"stored": False, "reason": "off"}
            return facts
        target = folder / DIFF_ARTIFACT
        diff = git_diff(code_dir, facts.get("commit"), self._options.diff_max_bytes, target)
        if diff.get("stored"):
            diff["artifact"] = DIFF_ARTIFACT
            self._store_file(target, DIFF_ARTIFACT, "code", {"commit": facts.get("commit"), **diff})
            if diff["cut"]:
                logger.warning(
                    "runtel: the uncommitted diff (%d bytes) was cut at %d bytes (RUNTEL_DIFF_MAX_BYTES)",
                    diff["bytes"],
                    diff["stored_bytes"],
                )
        facts["diff"] = diff
        return facts

    def _packages(self, folder: Path) -> dict[str, Any]:
        if not self._options.packages:
            return {"stored": False, "reason": "off"}
        packages = installed_packages()
        target = folder / PACKAGES_ARTIFACT
        target.write_text(freeze_text(packages), encoding="utf-8")
        self._store_file(target, PACKAGES_ARTIFACT, "environment", {"count": len(packages)})
        return {"stored": True, "count": len(packages), "artifact": PACKAGES_ARTIFACT}
