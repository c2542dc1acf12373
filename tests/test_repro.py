"""The code, command, interpreter and packages of a run, captured at init (docs/reproducibility.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

import runtel
from runtel.cli import main
from runtel.store.query import Store
from tests.conftest import run_python

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository on branch ``main``: one commit, a changed file, a staged change, an untracked file."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text("lr = 0.1\n")
    (repo / "data.txt").write_text("a\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    git(repo, "remote", "add", "origin", "https://alice:s3cr3t-token@example.com/team/repo.git")
    (repo / "train.py").write_text("lr = 0.01\n")
    (repo / "data.txt").write_text("a\nb\n")
    git(repo, "add", "data.txt")
    (repo / "notes.txt").write_text("untracked\n")
    monkeypatch.chdir(repo)
    for key, value in GIT_ENV.items():
        monkeypatch.setenv(key, value)
    return repo


def start(tmp_path: Path, **settings: object) -> runtel.Run:
    chosen = {"capture_environment": True, "console": False, **settings}
    return runtel.init(project="repro", base_dir=str(tmp_path / "runs"), **chosen)


def environment(run: runtel.Run) -> dict:
    return json.loads((run.dir / "environment.json").read_text())


def test_a_run_in_a_checkout_holds_commit_branch_remote_and_dirty_flag(
    checkout: Path, tmp_path: Path
) -> None:
    with start(tmp_path) as run:
        pass
    found = environment(run)["git"]
    assert found["present"] is True
    assert found["commit"] == git(checkout, "rev-parse", "HEAD").strip()
    assert found["branch"] == "main"
    assert found["dirty"] is True
    assert found["changed"] == 2
    assert found["untracked"] == ["notes.txt"] and found["untracked_count"] == 1
    assert found["remote"] == "https://***@example.com/team/repo.git"
    assert "s3cr3t" not in (run.dir / "environment.json").read_text()


def test_a_script_run_from_another_folder_records_the_git_of_its_own_folder(
    checkout: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "data"
    elsewhere.mkdir()
    runs = tmp_path / "runs"
    (checkout / "launch.py").write_text(
        "import runtel\n"
        f"with runtel.init(project='repro', base_dir={str(runs)!r}, capture_environment=True, console=False)"
        " as run:\n    print(run.id)\n"
    )
    done = subprocess.run(
        [sys.executable, str(checkout / "launch.py")],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads((Store(str(runs)).run(done.stdout.strip()).dir / "environment.json").read_text())
    assert found["cwd"] == str(elsewhere)
    assert (
        found["git"]["present"] is True
        and found["git"]["commit"] == git(checkout, "rev-parse", "HEAD").strip()
    )
    assert found["git"]["diff"]["artifact"] == "diff.patch"


def test_the_diff_of_staged_and_unstaged_changes_is_a_versioned_artifact(
    checkout: Path, tmp_path: Path
) -> None:
    with start(tmp_path) as run:
        pass
    stored = Store(str(tmp_path / "runs")).run(run.id).artifact("diff.patch")
    text = Path(stored.path).read_text()
    assert text == git(checkout, "diff", "--no-color", "HEAD")
    assert "+lr = 0.01" in text and "+b" in text
    assert stored.kind == "code" and stored.metadata["cut"] is False
    assert environment(run)["git"]["diff"]["artifact"] == "diff.patch"


def test_a_diff_over_its_bound_is_cut_with_a_closing_line(checkout: Path, tmp_path: Path) -> None:
    with start(tmp_path, diff_max_bytes=40) as run:
        pass
    full = git(checkout, "diff", "--no-color", "HEAD").encode()
    stored = Path(Store(str(tmp_path / "runs")).run(run.id).artifact("diff.patch").path).read_bytes()
    assert (
        stored
        == full[:40] + f"\n[runtel: diff cut at 40 of {len(full)} bytes (RUNTEL_DIFF_MAX_BYTES)]\n".encode()
    )
    diff = environment(run)["git"]["diff"]
    assert diff == {**diff, "cut": True, "bytes": len(full), "stored_bytes": 40}


def test_the_installed_packages_are_stored_in_pip_freeze_format(tmp_path: Path) -> None:
    with start(tmp_path) as run:
        pass
    stored = Store(str(tmp_path / "runs")).run(run.id).artifact("requirements.txt")
    lines = Path(stored.path).read_text().splitlines()
    assert f"numpy=={version('numpy')}" in lines
    assert f"opentelemetry-sdk=={version('opentelemetry-sdk')}" in lines
    assert all(line.count("==") == 1 for line in lines)
    assert environment(run)["packages"] == {
        "stored": True,
        "count": len(lines),
        "artifact": "requirements.txt",
    }


def test_command_cwd_python_and_platform_are_recorded(tmp_path: Path) -> None:
    with start(tmp_path) as run:
        pass
    found = environment(run)
    assert found["command"] == sys.argv
    assert found["cwd"] == os.getcwd()
    assert found["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert found["python"]["executable"] == sys.executable
    assert found["hostname"] and found["platform"]["system"]


def test_outside_a_repository_git_is_recorded_as_absent(tmp_path: Path) -> None:
    with start(tmp_path) as run:
        pass
    found = environment(run)["git"]
    assert found["present"] is False and "not inside a git working tree" in found["reason"]
    assert run.artifacts.names() == ["requirements.txt"]


def test_without_git_installed_the_run_still_starts(
    checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with start(tmp_path) as run:
        run.log({"x": 1.0})
    assert environment(run)["git"] == {"present": False, "reason": "git is not installed"}


def test_each_part_can_be_turned_off(checkout: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNTEL_CAPTURE_DIFF", "off")
    monkeypatch.setenv("RUNTEL_CAPTURE_PACKAGES", "false")
    with start(tmp_path) as run:
        pass
    found = environment(run)
    assert found["git"]["diff"] == {"stored": False, "reason": "off"} and found["git"]["commit"]
    assert found["packages"] == {"stored": False, "reason": "off"}
    assert run.artifacts.names() == []
    with start(tmp_path, capture_git=False) as run:
        pass
    assert environment(run)["git"] == {"present": False, "reason": "off"}
    with start(tmp_path, capture_environment=False) as run:
        pass
    assert not (run.dir / "environment.json").exists()


def test_torch_versions_only_when_the_script_imported_torch(tmp_path: Path) -> None:
    script = """
import json, sys
{imports}
import runtel
with runtel.init(base_dir="runs", capture_environment=True, capture_packages=False) as run:
    pass
print(json.dumps({{"torch": json.load(open(run.dir / "environment.json"))["torch"],
                  "loaded": "torch" in sys.modules}}))
"""
    without = json.loads(run_python(script.format(imports=""), tmp_path))
    assert without == {"torch": {"imported": False}, "loaded": False}
    with_torch = json.loads(run_python(script.format(imports="import torch"), tmp_path))
    assert with_torch["torch"]["version"] == version("torch").split("+")[0] or with_torch["torch"][
        "version"
    ].startswith(version("torch"))
    assert with_torch["torch"]["imported"] is True and "cuda" in with_torch["torch"]


def test_show_prints_the_repro_summary(
    checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with start(tmp_path) as run:
        pass
    capsys.readouterr()
    assert main(["show", run.id, "--base-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    commit = git(checkout, "rev-parse", "HEAD").strip()
    count = environment(run)["packages"]["count"]
    assert f"commit {commit[:12]}" in out and "branch main" in out and "dirty" in out
    assert f"packages: {count}" in out and f"CPython {sys.version.split()[0]}" in out
    assert "command: " in out


def test_show_reports_a_damaged_environment_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with start(tmp_path) as run:
        pass
    (run.dir / "environment.json").write_text('{"git": "main"}')
    capsys.readouterr()
    assert main(["show", run.id, "--base-dir", str(tmp_path / "runs"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["environment"] is None
    assert "git" in report["repro_problems"][0] and "not a JSON object" in report["repro_problems"][0]


def test_show_prints_no_terminal_escape_from_the_console_or_the_environment(
    checkout: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with start(tmp_path) as run:
        pass
    document = environment(run)
    document["git"]["commit"] = "\x1b]0;retitled\x07abc"
    document["git"]["branch"] = "[bold]main\x1b[2J"
    document["command"] = ["train.py", "\x1b]52;c;cHduZWQ=\x1b\\"]
    (run.dir / "environment.json").write_text(json.dumps(document))
    (run.dir / "output.log").write_bytes(
        b"\x1b]0;title\x07epoch 1\n\x1b[31mred\x1b[0m \xc2\x9b2Jc1\x07\x08 done\r\n"
        b"  0%|\r 50%|\r100%| 10/10\n"
    )
    capsys.readouterr()
    assert main(["show", run.id, "--base-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x1b\x07\x08\x9b\r"), repr(out)
    assert "commit abc" in out and "branch [bold]main " in out and "command: train.py " in out
    assert out.endswith("epoch 1\nred c1 done\n100%| 10/10\n")


def test_the_console_tail_splits_on_newlines_only_and_keeps_each_lines_last_redraw(tmp_path: Path) -> None:
    from runtel.store.repro import console_tail

    (tmp_path / "output.log").write_text(
        "page\x0cbreak\u2028same line\nloss 1\rloss 0.5\nlast\r\n", newline=""
    )
    assert console_tail(tmp_path, 20) == ["page\x0cbreak\u2028same line", "loss 0.5", "last"]
    assert console_tail(tmp_path, 1) == ["last"]


def test_the_package_scan_is_reused_until_an_install_changes_a_path_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtel._repro import installed_packages

    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = installed_packages()
    assert installed_packages() == before
    info = site / "freshly_installed-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: freshly-installed\nVersion: 1.2.3\n")
    after = installed_packages()
    assert ("freshly-installed", "1.2.3") in after and len(after) == len(before) + 1
