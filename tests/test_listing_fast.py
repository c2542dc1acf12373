"""The fast listing path (``Store.runs()``, ``runtel ls``): edits applied exactly once, damaged or
foreign ``edits.jsonl`` files refused and reported while the run stays listed, the per-file cache
re-reading what changed, the garbage collector paused and restored, and ``runtel ls`` importing none
of the UI's pages."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import pytest

import runtel
from runtel.cli import main
from runtel.records import RunEdited
from runtel.store import edits, scan
from runtel.store._events import parse_line
from runtel.store._gcpause import collector_paused
from runtel.store._untrusted import parse_json
from runtel.store.edits import EDITS


def _run(base: Path, name: str, tags: tuple[str, ...] = ("draft",)) -> runtel.StoredRun:
    with runtel.init(project="mnist", name=name, base_dir=str(base), tags=list(tags)) as run:
        run.log({"val/acc": 0.5, "train/loss": 0.25})
    return runtel.Store(base).run(run.id)


def _ls_json(base: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, object]]:
    capsys.readouterr()
    assert main(["ls", "--base-dir", str(base), "--json"]) == 0
    return {str(row["id"]): row for row in json.loads(capsys.readouterr().out)["runs"]}


def _line(**fields: object) -> bytes:
    document = {"type": "run_edited", "time": 5.0, "host": "h", "pid": 7, "user": "u", **fields}
    return json.dumps(document).encode() + b"\n"


def test_edited_runs_show_their_tags_note_and_name_once_in_runs_and_ls(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edited, plain = _run(base_dir, "first"), _run(base_dir, "second", tags=())
    edited.tags.add("baseline")
    edited.tags.add("baseline", "lr3e-4")
    edited.tags.remove("draft")
    edited.set_note("kept for the paper")
    edited.rename("renamed")
    for _ in range(2):  # a second pass reads through the caches
        listed = {run.id: run for run in runtel.Store(base_dir).runs()}
        assert listed[edited.id].metadata["tags"] == ["baseline", "lr3e-4"]
        assert listed[edited.id].name == "renamed" and listed[edited.id].note == "kept for the paper"
        assert listed[plain.id].metadata["tags"] == [] and listed[plain.id].name == "second"
        rows = _ls_json(base_dir, capsys)
        assert rows[edited.id]["tags"] == ["baseline", "lr3e-4"]
        assert rows[edited.id]["name"] == "renamed" and rows[edited.id]["note"] == "kept for the paper"
        assert rows[plain.id]["tags"] == [] and rows[plain.id]["note"] == ""
    capsys.readouterr()
    assert main(["ls", "--base-dir", str(base_dir)]) == 0
    table = capsys.readouterr().out
    assert table.count("renamed") == 1 and table.count("baseline,lr3e-4") == 1 and "draft" not in table


def test_a_damaged_edit_line_is_reported_and_the_run_listed_with_its_valid_edits(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(base_dir, "damaged")
    (run.dir / EDITS).write_bytes(_line(tags_added=["good"]) + b'{"type": "run_edited", "time": tru\n')
    (listed,) = runtel.Store(base_dir).runs()
    assert listed.metadata["tags"] == ["draft", "good"]
    assert [text for text in scan.problems(listed) if EDITS in text] == [
        f"{EDITS} line 2 is not valid JSON (Expecting value: line 1 column 32 (char 31)) "
        "(that edit is not applied)"
    ]
    assert _ls_json(base_dir, capsys)[run.id]["tags"] == ["draft", "good"]


@pytest.mark.parametrize("kind", ["folder", "fifo", "link"])
def test_an_edits_path_that_is_no_plain_file_is_reported_not_applied_and_never_waited_on(
    base_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str
) -> None:
    run = _run(base_dir, "odd")
    path = run.dir / EDITS
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opened without blocking: a listing never hangs on it
    else:
        (tmp_path / "planted.jsonl").write_bytes(_line(tags_added=["planted"]))
        path.symlink_to(tmp_path / "planted.jsonl")
    (listed,) = runtel.Store(base_dir).runs()
    assert listed.metadata["tags"] == ["draft"]
    assert any("is not a plain file" in text for text in scan.problems(listed))
    assert _ls_json(base_dir, capsys)[run.id]["tags"] == ["draft"]


def test_the_cache_rereads_an_edit_log_changed_in_place_at_the_same_size(base_dir: Path) -> None:
    run = _run(base_dir, "cached")
    path = run.dir / EDITS
    path.write_bytes(_line(tags_added=["aaaa"]))
    assert runtel.Store(base_dir).runs()[0].metadata["tags"] == ["draft", "aaaa"]
    before = os.stat(path)
    with path.open("r+b") as handle:  # same inode, same size: only the modification time differs
        handle.write(_line(tags_added=["bbbb"]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000))
    assert runtel.Store(base_dir).runs()[0].metadata["tags"] == ["draft", "bbbb"]
    runtel.Store(base_dir).run(run.id).tags.add("cccc")  # appended by the API
    assert runtel.Store(base_dir).runs()[0].metadata["tags"] == ["draft", "bbbb", "cccc"]
    path.unlink()
    assert runtel.Store(base_dir).runs()[0].metadata["tags"] == ["draft"]


def test_runtel_ls_leaves_no_listing_cached_and_lists_the_same_again(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(base_dir, "once")
    run.tags.add("kept")
    first = _ls_json(base_dir, capsys)
    assert not scan._metadata_cache and not scan._summary_cache and not edits._cache
    assert _ls_json(base_dir, capsys) == first and first[run.id]["tags"] == ["draft", "kept"]


@pytest.mark.parametrize(
    "line",
    [
        _line(tags_added=["a", "b"], tags_removed=["c"], note="n", name="x"),
        _line(),
        _line(note=None, name=None, user=None),
        _line(time=3),
        _line(time=True),
        _line(pid="7"),
        _line(pid=7.0),
        _line(host=None),
        _line(tags_added=["a", 1]),
        _line(tags_removed="c"),
        _line(note=["n"]),
        _line(extra="ignored"),
        json.dumps({"type": "run_edited", "tags_added": ["a"]}).encode(),
        b'{"type": "run_edited", "time": 1.0, "time": 2.0}',
        b"[1, 2]",
        b"\xff",
    ],
)
def test_the_quick_line_check_agrees_with_the_full_parser(line: bytes) -> None:
    try:
        full: object = parse_line(line.rstrip(b"\n"), Path(EDITS), 1)
    except runtel.StoreCorruptError:
        full = None
    quick = edits._quick(line.rstrip(b"\n"))
    assert quick is None or (isinstance(full, RunEdited) and quick == full), (quick, full)


def test_collection_is_paused_in_nested_blocks_and_restored_after_the_outermost() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_cycle_made_while_paused_is_still_collected_afterwards() -> None:
    class Node:
        partner: object = None

    collected = threading.Event()
    with collector_paused():
        first, second = Node(), Node()
        first.partner, second.partner = second, first
        watch = weakref.ref(first, lambda _: collected.set())
        del first, second
        gc.collect()  # an explicit collection still runs; the pause only stops automatic ones
        assert collected.is_set()
    with collector_paused():
        cycles = [Node() for _ in range(200)]
        for node in cycles:
            node.partner = node
        later = [weakref.ref(node) for node in cycles]
        del cycles, node
    # Left young, as the collector's normal rules would: the next collection of the youngest
    # generation frees them (moving them to the oldest one would keep them for a full collection,
    # which a long-lived process may not run for hours).
    gc.collect(0)
    assert all(ref() is None for ref in later) and watch() is None


def test_a_process_forked_during_a_pause_starts_with_the_collector_on() -> None:
    """A DataLoader worker forked while a UI thread lists runs: the child has no thread to end the
    pause, so the fork hook gives it back its collector (and a fresh lock)."""
    inside, leave = threading.Event(), threading.Event()

    def listing() -> None:
        with collector_paused():
            inside.set()
            leave.wait(10)

    lister = threading.Thread(target=listing)
    lister.start()
    try:
        assert inside.wait(10) and not gc.isenabled()
        child = os.fork()
        if child == 0:
            ok = gc.isenabled()
            with collector_paused():
                ok = ok and not gc.isenabled()
            os._exit(0 if ok and gc.isenabled() else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        leave.set()
        lister.join()
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled_and_frozen_objects_stay_frozen() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
    gc.freeze()  # someone else's (a pre-fork server's) frozen objects
    try:
        frozen = gc.get_freeze_count()
        with collector_paused():
            pass
        assert gc.isenabled() and gc.get_freeze_count() == frozen > 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize(
    ("package", "absent", "use", "used"),
    [
        (  # runtel ls loads no UI page; the UI still exports its API
            "runtel.ui",
            ("runtel.ui.app", "runtel.ui.server", "runtel.cli_repro"),
            "from runtel.ui import BackgroundServer, create_app, serve, data\n"
            "print(callable(create_app), callable(serve), BackgroundServer.__name__, data.__name__)",
            "True True BackgroundServer runtel.ui.data",
        ),
        (  # reading runs loads no run machinery; runtel.init, Run and the rest load on first use
            "runtel",
            ("runtel.run", "runtel.api", "opentelemetry.sdk.metrics", "opentelemetry.sdk.trace"),
            "from runtel import Run, init, finish, available_exporters, current_run, use_run, step_timing\n"
            "print(Run.__name__, init.__module__, step_timing.__name__, 'runtel.run' in sys.modules)",
            "Run runtel.api runtel.step_timing True",
        ),
    ],
)
def test_runtel_ls_imports_only_what_it_needs_and_lazy_names_still_load(
    package: str, absent: tuple[str, ...], use: str, used: str
) -> None:
    code = (
        f"import sys, runtel, runtel.cli\nprint(sorted(m for m in {absent!r} if m in sys.modules))\n{use}\n"
        f"import {package}\ntry:\n    {package}.nothing\nexcept AttributeError as exc:\n    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["[]", used, f"module {package!r} has no attribute 'nothing'"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"a": 1}',
        b' \n{"a": [1, 2.5, null, true]}\r\n\t ',
        b'{"a": NaN, "b": -Infinity}',
        b'{"a": 1}\x0b',  # a vertical tab is whitespace to str.isspace, not to JSON
        b'{"a": 1}\xc2\xa0',  # so is a no-break space
        b'{"a": 1} {"b": 2}',
        b'{"a": 1}x',
        b"\xef\xbb\xbf{}",  # a byte order mark
        b"",
        b"   ",
        b'"text"',
        b"[1, 2",
        b'{"a": "\\ud800"}',
        b"\xff",
    ],
)
def test_parse_json_reads_exactly_what_json_loads_reads_and_names_the_rest(raw: bytes) -> None:
    try:
        expected: object = json.loads(raw.decode("utf-8"))
    except ValueError:
        expected = runtel.StoreCorruptError
    try:
        found: object = parse_json(raw, "x.json")
    except runtel.StoreCorruptError:
        found = runtel.StoreCorruptError
    assert repr(found) == repr(expected)


def test_dir_of_runtel_names_the_lazy_names() -> None:
    names = dir(runtel)
    assert {"init", "Run", "finish", "step_timing", "import_runs", "MediaItem", "Store"} <= set(names)


def test_a_socket_in_place_of_the_edit_log_is_refused_and_the_run_listed(tmp_path: Path) -> None:
    import socket

    run = _run(tmp_path, "sock")
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(run.dir / "edits.jsonl"))
        listed = runtel.Store(tmp_path).runs()
        assert [r.name for r in listed] == ["sock"]
        assert any("not a plain file" in problem for problem in edits.read_edits(run.dir).problems)
    finally:
        server.close()


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (b'{"run_id": ' + b"7" * 5000 + b"}", "digits"),
        (b"[" * 200_000 + b"]" * 200_000, "nesting"),
    ],
)
def test_a_document_too_deep_or_too_long_to_parse_skips_only_its_run(
    tmp_path: Path, document: bytes, why: str
) -> None:
    """A crafted metadata.json (an integer of 5,000 digits, nesting of 200,000 levels) is a damaged
    run, listed as skipped; every other run is listed."""
    good, bad = _run(tmp_path, "good"), _run(tmp_path, "bad")
    (bad.dir / "metadata.json").write_bytes(document)
    listing = scan.scan(tmp_path)
    assert [r.name for r in listing.runs] == ["good"], why
    assert [s.folder for s in listing.skipped] == [bad.dir.name]
    assert good.dir.exists()


def test_an_edit_line_nested_too_deep_is_reported_and_the_others_applied(tmp_path: Path) -> None:
    run = _run(tmp_path, "deep")
    with open(run.dir / "edits.jsonl", "ab") as log:
        log.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    runtel.Store(tmp_path).run(run.id).set_note("still applied")
    edits.forget_edits()
    read = edits.read_edits(run.dir)
    assert read.problems and any("not valid JSON" in problem for problem in read.problems)
    assert runtel.Store(tmp_path).run(run.id).note == "still applied"
