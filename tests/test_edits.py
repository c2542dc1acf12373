"""Editing runs after the fact: tags, note, display name and delete, from the API, the CLI and another
process while the run is logging; ``edits.jsonl`` read as untrusted input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel.cli import main
from runtel.errors import InvalidNameError, InvalidParamError, RunNotFoundError, RunStillRunningError
from runtel.store.edits import EDITS, MAX_EDITS_BYTES, MAX_NOTE_CHARS, read_edits
from runtel.store.scan import problems
from tests.editing import cli, start_logging, wait_for_heartbeat


def _run(base: Path, name: str = "lr3e-4", tags: tuple[str, ...] = ("draft",)) -> runtel.StoredRun:
    with runtel.init(project="mnist", name=name, base_dir=str(base), tags=list(tags)) as run:
        run.log({"loss": 1.0})
    return runtel.Store(base).run(run.id)


def _ls(base: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert main(["ls", "--base-dir", str(base), "--json"]) == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)["runs"]
    return rows


# ---------------------------------------------------------------------------------------- Python API
def test_tags_added_and_removed_are_the_run_tags_everywhere(base_dir: Path) -> None:
    run = _run(base_dir)
    run.tags.add("baseline")
    run.tags.remove("draft")
    assert list(run.tags) == ["baseline"] and "baseline" in run.tags and "draft" not in run.tags
    again = runtel.Store(base_dir).run(run.id)
    assert list(again.tags) == ["baseline"] and again.metadata["tags"] == ["baseline"]
    assert [r.metadata["tags"] for r in runtel.Store(base_dir).runs()] == [["baseline"]]


def test_adding_a_tag_twice_keeps_it_once(base_dir: Path) -> None:
    run = _run(base_dir)
    run.tags.add("baseline")
    run.tags.add("baseline", "draft")
    assert list(run.tags) == ["draft", "baseline"]


def test_note_is_set_replaced_and_cleared(base_dir: Path) -> None:
    run = _run(base_dir)
    assert run.note is None
    run.set_note("lr sweep, seed 3\nsecond line")
    assert runtel.Store(base_dir).run(run.id).note == "lr sweep, seed 3\nsecond line"
    run.set_note("")
    assert runtel.Store(base_dir).run(run.id).note == ""


def test_rename_changes_the_display_name_and_keeps_the_folder_and_id(base_dir: Path) -> None:
    run = _run(base_dir)
    folder = run.dir
    run.rename("lr3e-4-s3")
    store = runtel.Store(base_dir)
    assert run.name == "lr3e-4-s3" and run.dir == folder and folder.is_dir()
    assert store.run("lr3e-4-s3").id == run.id
    assert store.run(run.id[:8]).name == "lr3e-4-s3"
    assert store.run(run.id).metadata["original_name"] == "lr3e-4"
    with pytest.raises(RunNotFoundError):
        store.run("lr3e-4")  # the old name no longer names it


def test_every_edit_records_who_and_when(base_dir: Path) -> None:
    run = _run(base_dir)
    before = time.time()
    run.edit(add=["a"], remove=["draft"], note="n", name="renamed")
    (edit,) = read_edits(run.dir).edits
    assert edit.tags_added == ("a",) and edit.tags_removed == ("draft",)
    assert (edit.note, edit.name, edit.pid) == ("n", "renamed", os.getpid())
    assert edit.host and before <= edit.time <= time.time()


@pytest.mark.parametrize(
    ("change", "error", "names"),
    [
        ({"add": [""]}, InvalidNameError, "''"),
        ({"add": ["x" * 300]}, InvalidNameError, "300 characters"),
        ({"add": [5]}, InvalidNameError, "5"),
        ({"add": ["a\nb"]}, InvalidNameError, "control character"),
        ({"add": ["a"], "remove": ["a"]}, InvalidNameError, "both added and removed"),
        ({"name": "   "}, InvalidNameError, "empty or blank"),
        ({"note": "n" * (MAX_NOTE_CHARS + 1)}, InvalidParamError, f"limit is {MAX_NOTE_CHARS}"),
        ({"note": "bad\udc80"}, InvalidParamError, "lone surrogate"),
        ({}, InvalidParamError, "nothing to change"),
    ],
)
def test_bad_edits_are_refused_with_the_value_named(
    base_dir: Path, change: dict[str, object], error: type[Exception], names: str
) -> None:
    run = _run(base_dir)
    with pytest.raises(error, match=names):
        run.edit(**change)  # type: ignore[arg-type]
    assert not (run.dir / EDITS).exists()


def test_a_single_string_is_one_tag_not_its_letters(base_dir: Path) -> None:
    run = _run(base_dir, tags=())
    run.tags.update(add="baseline")
    assert list(run.tags) == ["baseline"]


def test_live_run_tags_and_note_are_recorded(base_dir: Path) -> None:
    with runtel.init(project="p", name="live", base_dir=str(base_dir), tags=["draft"]) as run:
        run.log({"loss": 1.0})
        run.tags.add("baseline")
        run.set_note("started from the cli")
        assert list(run.tags) == ["draft", "baseline"]
    stored = runtel.Store(base_dir).run(run.id)
    assert list(stored.tags) == ["draft", "baseline"] and stored.note == "started from the cli"


def test_a_live_run_object_edited_after_finish_stores_the_edit(base_dir: Path) -> None:
    with runtel.init(project="p", name="live", base_dir=str(base_dir)) as run:
        run.log({"loss": 1.0})
    run.tags.add("late")
    run.set_note("after the fact")
    stored = runtel.Store(base_dir).run(run.id)
    assert list(stored.tags) == ["late"] and stored.note == "after the fact"


def test_an_edit_that_changes_nothing_writes_nothing(base_dir: Path) -> None:
    run = _run(base_dir)
    run.set_note("n")
    run.tags.add("draft")
    run.tags.remove("absent")
    run.set_note("n")
    run.rename("lr3e-4")
    run.edit(add=["draft"], remove=["absent"], note="n", name="lr3e-4")
    assert (run.dir / EDITS).read_bytes().count(b"\n") == 1
    run.edit(add=["draft", "new"], note="n")
    (only,) = read_edits(run.dir).edits[1:]
    assert (only.tags_added, only.tags_removed, only.note, only.name) == (("new",), (), None, None)


def test_a_live_run_tagging_every_epoch_writes_one_line(base_dir: Path) -> None:
    with runtel.init(project="p", name="live", base_dir=str(base_dir)) as run:
        for epoch in range(50):
            run.log({"loss": 1.0 / (epoch + 1)})
            run.tags.add("x")
            run.set_note("training")
    assert (run.dir / EDITS).read_bytes().count(b"\n") == 2
    assert list(runtel.Store(base_dir).run(run.id).tags) == ["x"]


def test_a_live_run_whose_edits_file_is_full_warns_and_goes_on(
    base_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with runtel.init(project="p", name="live", base_dir=str(base_dir)) as run:
        with (run.dir / EDITS).open("wb") as handle:
            handle.truncate(MAX_EDITS_BYTES + 1)
        for step in range(3):
            run.tags.add(f"t{step}")
            run.log({"loss": float(step)})
    warned = [r.getMessage() for r in caplog.records if "was not recorded" in r.getMessage()]
    assert len(warned) == 1 and "limit" in warned[0]
    assert run._edits.refused == 3
    stored = runtel.Store(base_dir).run(run.id)
    assert stored.status == "completed" and stored.summary()["metrics"]["loss"]["count"] == 3


# ---------------------------------------------------------------------------------------- delete
def test_delete_moves_the_run_to_the_trash_listed_nowhere_and_restorable(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(base_dir)
    store = runtel.Store(base_dir)
    moved = store.delete(run.id)
    assert moved == base_dir / ".trash" / run.dir.name and (moved / "metadata.json").is_file()
    assert store.runs() == [] and _ls(base_dir, capsys) == []
    with pytest.raises(RunNotFoundError):
        store.run(run.id)
    moved.rename(run.dir)  # restore: move it back
    assert store.run(run.id).history("loss")[2].tolist() == [1.0]


def test_a_folder_already_in_the_trash_is_kept_beside_the_new_one(base_dir: Path) -> None:
    run = _run(base_dir)
    stale = base_dir / ".trash" / run.dir.name
    stale.mkdir(parents=True)  # an earlier deletion of a run with this folder name
    moved = runtel.Store(base_dir).delete(run.id)
    assert moved is not None and moved.name.startswith(f"{run.dir.name}.deleted-") and stale.is_dir()
    assert (moved / "metadata.json").is_file()


def test_permanent_delete_removes_the_folder(base_dir: Path) -> None:
    run = _run(base_dir)
    assert runtel.Store(base_dir).delete(run.id, permanent=True) is None
    assert not run.dir.exists() and not (base_dir / ".trash").exists()


def test_a_run_still_being_written_is_not_deleted(base_dir: Path) -> None:
    with runtel.init(project="p", name="live", base_dir=str(base_dir)) as run:
        run.log({"loss": 1.0})
        with pytest.raises(RunStillRunningError, match="still running"):
            runtel.Store(base_dir).delete(run.id)
        assert run.dir.is_dir()


# ---------------------------------------------------------------------------------------- CLI
def test_cli_tag_note_rename_show_in_ls(base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(base_dir)
    key = run.id[:8]
    assert main(["tag", key, "+baseline", "-draft", "--base-dir", str(base_dir)]) == 0
    assert main(["note", "lr3e-4", "lr sweep, seed 3", "--base-dir", str(base_dir)]) == 0
    assert main(["rename", key, "lr3e-4-s3", "--base-dir", str(base_dir)]) == 0
    (row,) = _ls(base_dir, capsys)
    assert (row["name"], row["tags"], row["note"]) == ("lr3e-4-s3", ["baseline"], "lr sweep, seed 3")
    assert main(["ls", "--base-dir", str(base_dir)]) == 0
    table = capsys.readouterr().out
    assert "lr3e-4-s3" in table and "baseline" in table
    assert main(["show", "lr3e-4-s3", "--base-dir", str(base_dir)]) == 0
    assert "lr sweep, seed 3" in capsys.readouterr().out


def test_show_prints_a_note_and_a_crafted_status_without_terminal_escapes(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(base_dir)
    run.set_note("seed 3 \x1b]52;c;cHduZWQ=\x07\x1b[2Jkept")
    metadata = json.loads((run.dir / "metadata.json").read_text())
    (run.dir / "metadata.json").write_text(json.dumps({**metadata, "status": "[link=x]\x1b[5mdone"}))
    capsys.readouterr()
    assert main(["show", run.id, "--base-dir", str(base_dir)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "note: seed 3 kept" in out and "[link=x]done" in out


def test_ls_prints_crafted_metadata_without_terminal_escapes(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(base_dir)
    metadata = json.loads((run.dir / "metadata.json").read_text())
    crafted = {**metadata, "project": "p\x1b]0;title\x07x", "tags": ["t\x1b[2J"]}
    (run.dir / "metadata.json").write_text(json.dumps(crafted))
    capsys.readouterr()
    assert main(["ls", "--base-dir", str(base_dir)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and " px " in out and " t " in out


def test_cli_tag_with_base_dir_first(base_dir: Path) -> None:
    run = _run(base_dir)
    assert main(["tag", "--base-dir", str(base_dir), run.id, "-draft", "x"]) == 0
    assert list(runtel.Store(base_dir).run(run.id).tags) == ["x"]


def test_a_name_edit_finds_the_renamed_run_and_an_ambiguous_name_is_refused(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    older = _run(base_dir, name="r4")
    renamed = _run(base_dir, name="r11")
    assert main(["rename", "r11", "r4", "--base-dir", str(base_dir)]) == 0
    assert runtel.Store(base_dir).run("r4").id == renamed.id  # the latest of the name, not its folder
    capsys.readouterr()
    assert main(["tag", "r4", "+picked", "--base-dir", str(base_dir)]) == 1
    err = capsys.readouterr().err
    assert older.id in err and renamed.id in err
    assert "picked" not in runtel.Store(base_dir).run(older.id).tags
    assert main(["rename", older.id, "r4-old", "--base-dir", str(base_dir)]) == 0
    assert main(["tag", "r4", "+picked", "--base-dir", str(base_dir)]) == 0
    assert list(runtel.Store(base_dir).run(renamed.id).tags) == ["draft", "picked"]
    assert list(runtel.Store(base_dir).run(older.id).tags) == ["draft"]
    with pytest.raises(RunNotFoundError):
        runtel.Store(base_dir).run("r11")  # the old name of a renamed run names nothing


def test_cli_rm_moves_to_trash_and_says_how_to_restore(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(base_dir)
    assert main(["rm", run.id[:8], "--base-dir", str(base_dir)]) == 0
    out = capsys.readouterr().out
    assert "restore with: mv" in out and str(base_dir / ".trash" / run.dir.name) in out
    assert _ls(base_dir, capsys) == []


def test_cli_rm_yes_deletes_for_good_and_permanent_is_the_same(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _run(base_dir, name="a"), _run(base_dir, name="b")
    assert main(["rm", first.id, "--yes", "--base-dir", str(base_dir)]) == 0
    assert "deleted" in capsys.readouterr().out
    assert main(["rm", second.id, "--permanent", "--base-dir", str(base_dir)]) == 0
    assert not first.dir.exists() and not second.dir.exists() and not (base_dir / ".trash").exists()


def test_cli_tag_reads_options_and_changes_wherever_they_are(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(base_dir, tags=("draft", "-old"))
    assert main(["tag", run.id, "+x", f"--base-dir={base_dir}", "-draft"]) == 0
    assert main(["tag", run.id, "+y", "--base-dir", str(base_dir), "--", "--old", "+-z"]) == 0
    assert list(runtel.Store(base_dir).run(run.id).tags) == ["x", "y", "-z"]
    capsys.readouterr()
    assert main(["tag", run.id, "--colour=red", "--base-dir", str(base_dir)]) == 1
    assert "unknown option '--colour=red'" in capsys.readouterr().err
    assert list(runtel.Store(base_dir).run(run.id).tags) == ["x", "y", "-z"]


def test_ls_shows_a_tag_holding_a_comma_quoted(base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _run(base_dir, tags=("a,b", "c"))
    capsys.readouterr()
    assert main(["ls", "--base-dir", str(base_dir)]) == 0
    assert '"a,b",c' in capsys.readouterr().out


def test_cli_bad_tag_is_a_clear_error(base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(base_dir)
    assert main(["tag", run.id, "+", "--base-dir", str(base_dir)]) == 1
    assert "tag name must not be empty" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- untrusted
def _line(**fields: object) -> str:
    return json.dumps({"type": "run_edited", "time": 1.0, **fields}) + "\n"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (_line(tags_added="baseline"), "tags_added"),
        (_line(tags_added=[1]), "not a string"),
        (_line(note=5), "note"),
        (_line(name="x" * 300), "the API refuses"),
        (_line(tags_added=["../../etc"], name="\u0000"), "the API refuses"),
        (_line(time="now"), "time"),
        (
            json.dumps(
                {
                    "type": "run_started",
                    "run_id": "x",
                    "name": "n",
                    "project": "p",
                    "start_time": 1,
                    "config": {},
                }
            )
            + "\n",
            "is not run_edited",
        ),
        ("[1, 2]\n", "not a JSON object"),
        ("\xff\n", "not valid JSON"),
    ],
)
def test_a_crafted_edit_line_is_skipped_named_and_the_others_apply(
    base_dir: Path, line: str, problem: str
) -> None:
    run = _run(base_dir)
    with (run.dir / EDITS).open("a", encoding="utf-8") as handle:
        handle.write(_line(tags_added=["good"]) + line + _line(note="kept"))
    again = runtel.Store(base_dir).run(run.id)
    assert list(again.tags) == ["draft", "good"] and again.note == "kept"
    found = [text for text in problems(again) if EDITS in text]
    assert len(found) == 1 and problem in found[0], found


def test_a_torn_last_line_is_ignored_and_cut_by_the_next_edit(base_dir: Path) -> None:
    run = _run(base_dir)
    run.tags.add("a")
    with (run.dir / EDITS).open("ab") as handle:
        handle.write(b'{"type": "run_edited", "time": 2.0, "tags_add')  # an editor killed mid-write
    assert list(runtel.Store(base_dir).run(run.id).tags) == ["draft", "a"]
    assert any("torn line" in text for text in problems(run))
    run.tags.add("b")
    assert list(run.tags) == ["draft", "a", "b"] and not any(EDITS in text for text in problems(run))
    assert (run.dir / EDITS).read_bytes().count(b"\n") == 2


def test_a_huge_edits_file_is_not_read_and_appending_is_refused(base_dir: Path) -> None:
    run = _run(base_dir)
    with (run.dir / EDITS).open("wb") as handle:
        handle.truncate(MAX_EDITS_BYTES + 1)
    again = runtel.Store(base_dir).run(run.id)
    assert list(again.tags) == ["draft"]
    assert any("over the" in text for text in problems(again))
    with pytest.raises(runtel.StoreWriteError, match="limit"):
        again.tags.add("x")


def test_an_edits_file_linking_elsewhere_is_not_followed(base_dir: Path, tmp_path: Path) -> None:
    run = _run(base_dir)
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(_line(tags_added=["planted"]))
    (run.dir / EDITS).symlink_to(outside)
    again = runtel.Store(base_dir).run(run.id)
    assert list(again.tags) == ["draft"] and any("not a plain file" in t for t in problems(again))
    with pytest.raises(runtel.StoreWriteError):
        again.tags.add("x")
    assert outside.read_text() == _line(tags_added=["planted"])


def test_a_note_of_the_wrong_type_in_metadata_is_a_damaged_run(base_dir: Path) -> None:
    run = _run(base_dir)
    document = json.loads((run.dir / "metadata.json").read_text())
    (run.dir / "metadata.json").write_text(json.dumps({**document, "note": ["x"]}))
    assert runtel.Store(base_dir).runs() == []  # listed as skipped, with the reason
    with pytest.raises(runtel.StoreCorruptError, match="note"):
        runtel.Store(base_dir).run(run.id)


# ---------------------------------------------------------------------------------------- concurrency
def test_edits_from_other_processes_while_a_run_logs_lose_nothing(
    base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logging = start_logging(base_dir, tmp_path / "edited")
    store = runtel.Store(base_dir)
    run = store.run(logging.run_id)
    cli(base_dir, "tag", run.id, "+baseline", "-draft")
    cli(base_dir, "note", run.id, "lr sweep, seed 3")
    run.rename("lr3e-4-s3")
    with pytest.raises(RunStillRunningError):
        store.delete(run.id)
    wait_for_heartbeat(store, run.id, after=time.time())  # metadata.json rewritten after the edits
    (row,) = _ls(base_dir, capsys)
    assert (row["name"], row["tags"], row["note"], row["status"]) == (
        "lr3e-4-s3",
        ["baseline"],
        "lr sweep, seed 3",
        "running",
    )
    steps_logged = logging.finish()
    done = store.run(run.id)
    assert (done.name, list(done.tags), done.note, done.status) == (
        "lr3e-4-s3",
        ["baseline"],
        "lr sweep, seed 3",
        "completed",
    )
    steps, _, values = done.history("train/loss")
    assert steps.tolist() == list(range(steps_logged))
    np.testing.assert_array_equal(values, 1.0 / (np.arange(steps_logged) + 1))
    assert done.history("val/acc")[0].size == steps_logged
    assert store.delete(run.id) == base_dir / ".trash" / done.dir.name


_TAGGER = """
import sys, runtel
run = runtel.Store(sys.argv[1]).run(sys.argv[2])
for i in range(25):
    run.tags.add(f"{sys.argv[3]}-{i}")
"""


def test_concurrent_editors_never_lose_each_others_tags(base_dir: Path) -> None:
    run = _run(base_dir, tags=())
    editors = [
        subprocess.Popen([sys.executable, "-c", _TAGGER, str(base_dir), run.id, f"p{n}"]) for n in range(4)
    ]
    assert [editor.wait(timeout=120) for editor in editors] == [0, 0, 0, 0]
    expected = {f"p{n}-{i}" for n in range(4) for i in range(25)}
    assert set(runtel.Store(base_dir).run(run.id).tags) == expected
    assert len(read_edits(run.dir).edits) == 100 and read_edits(run.dir).problems == ()
