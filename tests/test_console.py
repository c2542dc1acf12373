"""Console capture: descriptors 1 and 2 tee'd into output.log, the terminal's bytes unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel._console import MERGED_STREAM, STDERR_MARK, same_destination
from runtel.store.artifacts import ArtifactVersion

SCRIPT = """
import logging, os, sys, time
import runtel
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
run = runtel.init(project="console", base_dir="runs", capture_environment=False)
pause = lambda: time.sleep(0.1)  # the streams are two pipes: order across them is the arrival order
print("one from print", flush=True); pause()
logging.info("two from logging"); pause()
os.write(1, b"three from os.write\\n"); pause()
sys.stderr.write("four to stderr\\n"); sys.stderr.flush(); pause()
print("five", end="", flush=True); pause()
os.write(2, b"six, C-level stderr\\n"); pause()
print(" and five's end", flush=True)
run.finish()
print("after finish", flush=True)
os.write(1, b"after finish, C-level\\n")
print(run.dir)
"""


def run_script(tmp_path: Path, code: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    inherited = {key: value for key, value in os.environ.items() if key != "WANDB_SERVICE"}
    inherited.pop("RUNTEL_CONSOLE")
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**inherited, **env},
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_output_log_holds_print_logging_and_c_level_writes_in_order(tmp_path: Path) -> None:
    done = run_script(tmp_path, SCRIPT)
    assert done.returncode == 0, done.stderr
    run_dir = Path(done.stdout.decode().splitlines()[-1])
    assert (run_dir / "output.log").read_bytes() == (
        b"one from print\n"
        + STDERR_MARK
        + b"INFO two from logging\n"
        + b"three from os.write\n"
        + STDERR_MARK
        + b"four to stderr\n"
        + b"five\n"
        + STDERR_MARK
        + b"six, C-level stderr\n"
        + b" and five's end\n"
    )


def test_the_terminal_sees_the_same_bytes_with_and_without_capture(tmp_path: Path) -> None:
    captured = run_script(tmp_path, SCRIPT)
    plain = run_script(tmp_path, SCRIPT, RUNTEL_CONSOLE="off")
    assert captured.returncode == plain.returncode == 0
    strip = lambda out: out.rsplit(b"\n", 2)[0]  # noqa: E731 - the last line is the run's folder
    assert (
        strip(captured.stdout)
        == strip(plain.stdout)
        == (b"one from print\nthree from os.write\nfive and five's end\nafter finish\nafter finish, C-level")
    )
    assert captured.stderr == plain.stderr == b"INFO two from logging\nfour to stderr\nsix, C-level stderr\n"


def test_the_console_log_is_stored_as_an_artifact_of_the_run(tmp_path: Path) -> None:
    done = run_script(tmp_path, SCRIPT)
    run_dir = Path(done.stdout.decode().splitlines()[-1])
    stored = runtel.Store(str(tmp_path / "runs")).run(run_dir.name).artifact("output.log")
    assert Path(stored.path).read_bytes() == (run_dir / "output.log").read_bytes()
    assert stored.kind == "console"
    assert stored.metadata["bytes_cut"] == 0 and stored.metadata["streams"] == ["stdout", "stderr"]


def test_output_past_the_bound_keeps_head_and_tail_with_a_marker(tmp_path: Path) -> None:
    code = """
import runtel
run = runtel.init(base_dir="runs", capture_environment=False, console_max_bytes=20_000)
for i in range(2_000):
    print(f"line {i:05d} " + "x" * 88, flush=True)
run.finish()
print(run.dir)
"""
    done = run_script(tmp_path, code)
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 2_001  # the terminal got every line
    log = (Path(lines[-1]) / "output.log").read_bytes()
    head, marker, tail = log.split(b"\n[runtel: ", 1)[0], *log.split(b"\n[runtel: ", 1)[1].split(b"\n", 1)
    assert head.startswith(b"line 00000 ") and tail.endswith(b"line 01999 " + b"x" * 88 + b"\n")
    assert len(head) == 10_000 and len(tail) == 10_000
    cut = 2_000 * 100 - 20_000
    assert marker == f"{cut} bytes of console output left out here (RUNTEL_CONSOLE_MAX_BYTES)]".encode()


def test_a_forked_child_writes_to_the_terminal_but_not_into_the_log(tmp_path: Path) -> None:
    code = """
import os, runtel
run = runtel.init(base_dir="runs", capture_environment=False)
print("parent before", flush=True)
pid = os.fork()
if pid == 0:
    os.write(1, b"child C-level\\n")
    print("child print", flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print("parent after", flush=True)
run.finish()
print(run.dir)
"""
    done = run_script(tmp_path, code)
    lines = done.stdout.decode().splitlines()
    assert lines[:4] == ["parent before", "child C-level", "child print", "parent after"]
    assert (Path(lines[-1]) / "output.log").read_bytes() == b"parent before\nparent after\n"


def test_subprocesses_of_the_run_are_captured(tmp_path: Path) -> None:
    code = """
import subprocess, sys, runtel
run = runtel.init(base_dir="runs", capture_environment=False)
subprocess.run([sys.executable, "-c", "print('from a subprocess')"], check=True)
run.finish()
print(run.dir)
"""
    done = run_script(tmp_path, code)
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "from a subprocess"
    assert (Path(lines[-1]) / "output.log").read_bytes() == b"from a subprocess\n"


def test_an_uncaught_exception_leaves_its_traceback_in_the_log_and_once_on_the_terminal(
    tmp_path: Path,
) -> None:
    code = """
import runtel
run = runtel.init(base_dir="runs", capture_environment=False)
print(run.dir, flush=True)
raise ValueError("boom")
"""
    done = run_script(tmp_path, code)
    assert done.returncode == 1
    assert done.stderr.count(b"ValueError: boom") == 1
    log = (Path(done.stdout.decode().splitlines()[0]) / "output.log").read_bytes()
    assert STDERR_MARK + b"ValueError: boom\n" in log


def test_finish_restores_the_descriptors_under_pytest_capture(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    before = [os.fstat(fd) for fd in (1, 2)]
    run = runtel.init(base_dir=str(tmp_path / "runs"), console=True, capture_environment=False)
    during = [os.fstat(fd) for fd in (1, 2)]
    print("print still works (pytest's sys.stdout writes past fd 1)", flush=True)
    os.write(1, b"seen by pytest and the log\n")
    time.sleep(0.1)  # two pipes: order across them is the arrival order
    os.write(2, b"stderr too\n")
    run.finish()
    after = [os.fstat(fd) for fd in (1, 2)]
    same = lambda a, b: (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)  # noqa: E731
    assert all(same(a, b) for a, b in zip(before, after, strict=True))
    assert not any(same(a, b) for a, b in zip(before, during, strict=True))
    out, err = capfd.readouterr()
    assert out == "print still works (pytest's sys.stdout writes past fd 1)\nseen by pytest and the log\n"
    assert err == "stderr too\n"
    assert (
        run.dir / "output.log"
    ).read_bytes() == b"seen by pytest and the log\n" + STDERR_MARK + b"stderr too\n"


def test_console_off_leaves_the_descriptors_alone(tmp_path: Path) -> None:
    before = os.fstat(1)
    with runtel.init(base_dir=str(tmp_path / "runs"), console=False, capture_environment=False) as run:
        assert (os.fstat(1).st_ino, os.fstat(1).st_dev) == (before.st_ino, before.st_dev)
    assert not (run.dir / "output.log").exists()


def test_a_second_run_of_the_process_does_not_capture_again(tmp_path: Path) -> None:
    first = runtel.init(
        base_dir=str(tmp_path / "runs"), name="first", console=True, capture_environment=False
    )
    second = runtel.init(
        base_dir=str(tmp_path / "runs"), name="second", console=True, capture_environment=False
    )
    os.write(1, b"into the first run's log\n")
    second.finish()
    first.finish()
    assert (first.dir / "output.log").read_bytes() == b"into the first run's log\n"
    assert not (second.dir / "output.log").exists()


def test_show_prints_the_console_tail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runtel.cli import main

    done = run_script(tmp_path, SCRIPT)
    run_dir = Path(done.stdout.decode().splitlines()[-1])
    capsys.readouterr()
    assert main(["show", run_dir.name, "--base-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    shown = out.split("lines of output.log):\n", 1)[1].splitlines()
    assert shown == (run_dir / "output.log").read_text().splitlines()


def test_a_subprocess_outliving_the_run_still_reaches_the_terminal(tmp_path: Path) -> None:
    code = """
import subprocess, sys, runtel
run = runtel.init(base_dir="runs", capture_environment=False)
late = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2); print('late', flush=True)"])
print("during", flush=True)
run.finish()
print(run.dir, flush=True)
late.wait()
"""
    done = run_script(tmp_path, code)
    lines = done.stdout.decode().splitlines()
    assert lines[0] == "during" and lines[-1] == "late"
    assert (Path(lines[1]) / "output.log").read_bytes() == b"during\n"


def test_on_a_terminal_the_program_still_sees_a_terminal_of_its_size(tmp_path: Path) -> None:
    import fcntl
    import pty
    import select
    import struct
    import termios

    code = """
import os, sys, time, runtel
run = runtel.init(base_dir="runs", capture_environment=False)
print("tty", sys.stdout.isatty(), os.isatty(1), os.isatty(2), os.get_terminal_size(1))
time.sleep(3)  # the line must reach the terminal now: stdout stays line-buffered, unflushed
open("slept", "w").close()
run.finish()
print(run.dir)
"""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    inherited = {
        key: value for key, value in os.environ.items() if key not in ("WANDB_SERVICE", "RUNTEL_CONSOLE")
    }
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=tmp_path, env=inherited, stdout=slave, stderr=slave
    )
    os.close(slave)
    received = b""
    started = time.monotonic()
    while b"\n" not in received and time.monotonic() - started < 60:
        if select.select([master], [], [], 1)[0]:
            received += os.read(master, 4096)
    arrived_while_sleeping = not (tmp_path / "slept").exists()
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        received += chunk
    child.wait(timeout=60)
    os.close(master)
    lines = received.decode().split("\r\n")  # the terminal's own output processing adds the \r
    assert lines[0] == "tty True True True os.terminal_size(columns=100, lines=30)"
    assert arrived_while_sleeping  # promptly, though nothing flushed it
    log = (Path(lines[1]) / "output.log").read_bytes()
    assert log == b"tty True True True os.terminal_size(columns=100, lines=30)\n"


def test_show_refuses_an_output_log_linking_out_of_the_run_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from runtel.cli import main

    with runtel.init(base_dir=str(tmp_path / "runs"), console=False, capture_environment=False) as run:
        pass
    secret = tmp_path / "secret.txt"
    secret.write_text("not the run's\n")
    (run.dir / "output.log").symlink_to(secret)
    capsys.readouterr()
    assert main(["show", run.id, "--base-dir", str(tmp_path / "runs"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["console_tail"] == []
    assert "output.log" in report["repro_problems"][0]


def test_what_was_printed_right_before_a_sigkill_reaches_the_terminal_and_the_log(tmp_path: Path) -> None:
    code = """
import os, signal, runtel
run = runtel.init(base_dir="runs", capture_environment=False)
print(run.dir, flush=True)
os.write(1, b"last words\\n")
os.kill(os.getpid(), signal.SIGKILL)
"""
    done = run_script(tmp_path, code)
    assert done.returncode == -9
    printed, last = done.stdout.decode().splitlines()
    assert last == "last words"
    assert (Path(printed) / "output.log").read_bytes() == done.stdout


def test_if_the_helper_dies_the_program_gets_its_descriptors_back(tmp_path: Path) -> None:
    code = """
import os, signal, time, psutil, runtel
run = runtel.init(base_dir="runs", capture_environment=False)
print("captured", flush=True)
time.sleep(0.3)  # written through before the helper is killed (what it holds then is lost)
(helper,) = psutil.Process().children()
helper.kill()
helper.wait()
time.sleep(0.5)
print("printed after the helper died", flush=True)
run.finish()
"""
    done = run_script(tmp_path, code)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"captured\nprinted after the helper died\n"
    assert b"helper process ended" in done.stderr


def test_a_resumed_run_continues_its_output_log(tmp_path: Path) -> None:
    base = str(tmp_path / "runs")
    with runtel.init(base_dir=base, name="long", console=True, capture_environment=False) as run:
        os.write(1, b"first session\n")
    with runtel.init(base_dir=base, resume=run.id, console=True, capture_environment=False) as again:
        os.write(1, b"second session\n")
    assert again.dir == run.dir
    assert (run.dir / "output.log").read_bytes() == b"first session\nsecond session\n"
    versions = runtel.Store(base).run(run.id).artifacts()["output.log"]
    assert [Path(v.path).read_bytes() for v in versions] == [
        b"first session\n",
        b"first session\nsecond session\n",
    ]


def test_under_an_embedding_program_no_helper_is_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", "/usr/bin/uwsgi")
    before = os.fstat(1)
    with runtel.init(base_dir=str(tmp_path / "runs"), console=True, capture_environment=False) as run:
        assert (os.fstat(1).st_dev, os.fstat(1).st_ino) == (before.st_dev, before.st_ino)
    assert not (run.dir / "output.log").exists()


def test_with_both_descriptors_closed_the_run_goes_on_without_capture(tmp_path: Path) -> None:
    code = """
import os, runtel
os.close(1)
os.close(2)
with runtel.init(base_dir="runs", capture_environment=False) as run:
    run.log({"x": 1.0})
open("result.txt", "w").write(f"{run.dir}\\n{(run.dir / 'output.log').exists()}\\n")
"""
    done = run_script(tmp_path, code)
    assert done.returncode == 0
    run_dir, has_log = (tmp_path / "result.txt").read_text().splitlines()
    assert has_log == "False"
    assert runtel.Store(str(tmp_path / "runs")).run(Path(run_dir).name).status == "completed"


ALTERNATING = """
import os, sys, runtel
run = runtel.init(base_dir="runs", capture_environment=False)
for i in range(125):  # 500 lines, no pause: the order is the kernel's alone
    print(f"print {i}", flush=True)
    sys.stderr.write(f"stderr {i}\\n"); sys.stderr.flush()
    os.write(1, f"os.write(1) {i}\\n".encode())
    os.write(2, f"os.write(2) {i}\\n".encode())
run.finish()
open("run_dir.txt", "w").write(str(run.dir))
"""


def alternating(*kinds: str) -> bytes:
    """The lines ALTERNATING writes, those of ``kinds`` only, in their order."""
    return b"".join(
        f"{kind} {i}\n".encode()
        for i in range(125)
        for kind in ("print", "stderr", "os.write(1)", "os.write(2)")
        if kind in kinds
    )


ALL_KINDS = ("print", "stderr", "os.write(1)", "os.write(2)")
STDOUT_KINDS = ("print", "os.write(1)")
STDERR_KINDS = ("stderr", "os.write(2)")


def run_alternating(tmp_path: Path, *, console: bool, stdout: Any, stderr: Any) -> tuple[bytes, bytes]:
    """Runs ALTERNATING with ``stdout`` and ``stderr`` as ``subprocess.run`` takes them."""
    inherited = {
        key: value for key, value in os.environ.items() if key not in ("WANDB_SERVICE", "RUNTEL_CONSOLE")
    }
    done = subprocess.run(
        [sys.executable, "-c", ALTERNATING],
        cwd=tmp_path,
        env={**inherited, "RUNTEL_CONSOLE": "on" if console else "off"},
        stdout=stdout,
        stderr=stderr,
        timeout=120,
        check=True,
    )
    return done.stdout, done.stderr


def stored_log(tmp_path: Path) -> tuple[bytes, ArtifactVersion]:
    run_dir = Path((tmp_path / "run_dir.txt").read_text())
    stored = runtel.Store(str(tmp_path / "runs")).run(run_dir.name).artifact("output.log")
    return (run_dir / "output.log").read_bytes(), stored


def test_stdout_and_stderr_into_one_file_keep_their_order_there_and_in_the_log(tmp_path: Path) -> None:
    outputs = []
    for console in (False, True):
        with open(tmp_path / f"console-{console}.txt", "wb") as into:  # python script.py > f 2>&1
            run_alternating(tmp_path, console=console, stdout=into, stderr=subprocess.STDOUT)
        outputs.append((tmp_path / f"console-{console}.txt").read_bytes())
    assert outputs[1] == outputs[0] == alternating(*ALL_KINDS)
    log, stored = stored_log(tmp_path)
    assert log == alternating(*ALL_KINDS)  # one stream: its lines are stored unmarked
    assert stored.metadata["streams"] == [MERGED_STREAM]


def test_stdout_and_stderr_into_one_pipe_keep_their_order_there_and_in_the_log(tmp_path: Path) -> None:
    # python script.py 2>&1 | tee log
    both = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    plain = run_alternating(tmp_path, console=False, **both)
    captured = run_alternating(tmp_path, console=True, **both)
    assert captured == plain == (alternating(*ALL_KINDS), None)
    assert stored_log(tmp_path)[0] == alternating(*ALL_KINDS)


def test_separate_pipes_get_each_stream_byte_for_byte_and_the_log_keeps_each_streams_order(
    tmp_path: Path,
) -> None:
    apart = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    outputs = [run_alternating(tmp_path, console=console, **apart) for console in (False, True)]
    assert outputs[1] == outputs[0] == (alternating(*STDOUT_KINDS), alternating(*STDERR_KINDS))
    log, stored = stored_log(tmp_path)
    lines = log.splitlines(keepends=True)
    assert b"".join(line for line in lines if not line.startswith(STDERR_MARK)) == alternating(*STDOUT_KINDS)
    marked = [line.removeprefix(STDERR_MARK) for line in lines if line.startswith(STDERR_MARK)]
    assert b"".join(marked) == alternating(*STDERR_KINDS)
    assert stored.metadata["streams"] == ["stdout", "stderr"]


def test_on_one_terminal_stdout_and_stderr_keep_their_alternation(tmp_path: Path) -> None:
    import pty
    import select

    master, slave = pty.openpty()
    inherited = {
        key: value for key, value in os.environ.items() if key not in ("WANDB_SERVICE", "RUNTEL_CONSOLE")
    }
    child = subprocess.Popen(
        [sys.executable, "-c", ALTERNATING], cwd=tmp_path, env=inherited, stdout=slave, stderr=slave
    )
    os.close(slave)
    received = b""
    started = time.monotonic()
    while time.monotonic() - started < 60:
        if not select.select([master], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(master, 65_536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        received += chunk
    assert child.wait(timeout=60) == 0
    os.close(master)
    assert received == alternating(*ALL_KINDS).replace(b"\n", b"\r\n")  # the terminal's own \r
    assert stored_log(tmp_path)[0] == alternating(*ALL_KINDS)


def test_one_pipe_stands_in_for_both_descriptors_only_where_their_writes_meet(tmp_path: Path) -> None:
    import fcntl
    import pty

    path = tmp_path / "f"
    opened: list[int] = []

    def keep(fd: int) -> int:
        opened.append(fd)
        return fd

    try:
        shared = keep(os.open(path, os.O_WRONLY | os.O_CREAT))
        flags = fcntl.fcntl(shared, fcntl.F_GETFL)
        assert same_destination(shared, keep(os.dup(shared)))  # 2>&1: one offset
        assert fcntl.fcntl(shared, fcntl.F_GETFL) == flags  # the probe left the flags as they were
        assert not same_destination(shared, keep(os.open(path, os.O_WRONLY)))  # > f 2> f: two offsets
        appending = keep(os.open(path, os.O_WRONLY | os.O_APPEND))
        assert same_destination(appending, keep(os.open(path, os.O_WRONLY | os.O_APPEND)))  # >> f 2>> f
        assert not same_destination(shared, keep(os.open(tmp_path / "g", os.O_WRONLY | os.O_CREAT)))
        _, write = (keep(fd) for fd in os.pipe())
        _, other_write = (keep(fd) for fd in os.pipe())
        assert same_destination(write, keep(os.dup(write)))
        assert not same_destination(write, other_write)
        _, terminal = (keep(fd) for fd in pty.openpty())
        assert same_destination(terminal, keep(os.open(os.ttyname(terminal), os.O_WRONLY | os.O_NOCTTY)))
        _, other_terminal = (keep(fd) for fd in pty.openpty())
        assert not same_destination(terminal, other_terminal)
        assert not same_destination(write, terminal)
    finally:
        for fd in opened:
            os.close(fd)
