"""Reading a run's reproducibility capture back: ``environment.json`` and the tail of ``output.log``.

Both files are untrusted input (see :mod:`runtel.store._untrusted`): every field of the summary is
type-checked, and the console is read only from inside the run folder, bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtel._console import CONSOLE_FILE
from runtel._repro import ENVIRONMENT_FILE
from runtel.errors import StoreCorruptError
from runtel.store._untrusted import ARRAY, BOOLEAN, INTEGER, OBJECT, TEXT, check_fields, load_object
from runtel.store.query import run_file

#: Bytes read from the end of ``output.log`` for a tail.
_TAIL_READ = 65_536


@dataclass(frozen=True, slots=True)
class ReproSummary:
    """What ``runtel show`` prints: the code, the command and the interpreter of a run."""

    commit: str | None
    branch: str | None
    remote: str | None
    dirty: bool | None
    diff_artifact: str | None
    diff_cut: bool
    untracked: int
    git_absent: str | None
    packages: int | None
    python: str | None
    command: list[str]
    cwd: str | None
    torch: str | None
    cuda: str | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def read_environment(run_dir: Path) -> dict[str, Any] | None:
    """``environment.json`` as stored, validated at the top level; None when the run has none."""
    path = run_file(run_dir, ENVIRONMENT_FILE)
    if not path.exists():
        return None
    document = load_object(path)
    check_fields(
        document,
        {"git": OBJECT, "packages": OBJECT, "python": OBJECT, "torch": OBJECT, "command": ARRAY, "cwd": TEXT},
        path,
    )
    return document


def repro_summary(run_dir: Path) -> ReproSummary | None:
    """The fields of ``environment.json`` a person reads first; None when the run has none."""
    document = read_environment(run_dir)
    if document is None:
        return None
    path = run_dir / ENVIRONMENT_FILE
    git = document.get("git") or {}
    check_fields(
        git,
        {
            "commit": TEXT,
            "branch": TEXT,
            "remote": TEXT,
            "dirty": BOOLEAN,
            "untracked_count": INTEGER,
            "reason": TEXT,
            "present": BOOLEAN,
            "diff": OBJECT,
        },
        path,
        prefix="git.",
    )
    diff = git.get("diff") or {}
    check_fields(diff, {"artifact": TEXT, "cut": BOOLEAN}, path, prefix="git.diff.")
    packages = document.get("packages") or {}
    check_fields(packages, {"count": INTEGER}, path, prefix="packages.")
    python = document.get("python") or {}
    check_fields(python, {"version": TEXT, "implementation": TEXT}, path, prefix="python.")
    torch = document.get("torch") or {}
    check_fields(torch, {"version": TEXT, "cuda": TEXT}, path, prefix="torch.")
    command = document.get("command") or []
    if not all(isinstance(arg, str) for arg in command):
        raise StoreCorruptError(path, "command", "holds a value that is not a string")
    version = python.get("version")
    return ReproSummary(
        commit=git.get("commit"),
        branch=git.get("branch"),
        remote=git.get("remote"),
        dirty=git.get("dirty"),
        diff_artifact=diff.get("artifact"),
        diff_cut=bool(diff.get("cut")),
        untracked=int(git.get("untracked_count") or 0),
        git_absent=None if git.get("present") else (git.get("reason") or "not captured"),
        packages=packages.get("count"),
        python=None if version is None else f"{python.get('implementation') or 'Python'} {version}",
        command=list(command),
        cwd=document.get("cwd"),
        torch=torch.get("version"),
        cuda=torch.get("cuda"),
    )


def console_tail(run_dir: Path, lines: int = 20) -> list[str]:
    """The last ``lines`` lines of the run's console (live or finished); empty when none was captured."""
    path = run_file(run_dir, CONSOLE_FILE)
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, 2)
            handle.seek(max(0, size - _TAIL_READ))
            data = handle.read(_TAIL_READ)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StoreCorruptError(path, None, f"cannot be read ({exc.strerror})") from exc
    text = data.decode("utf-8", "replace").split("\n")
    if text and not text[-1]:
        text.pop()  # the newline ending the last line
    if size > _TAIL_READ and text:
        text = text[1:]  # the first line read is likely cut
    # a progress bar redraws its line after each ``\r``: what the terminal last showed is the last part
    return [_last_redraw(line) for line in text[-lines:]] if lines > 0 else []


def _last_redraw(line: str) -> str:
    """The part of ``line`` after its last carriage return (``\r\n`` ends a line, it redraws nothing)."""
    line = line.removesuffix("\r")
    return line[line.rfind("\r") + 1 :]
