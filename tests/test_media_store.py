"""Media in the store: content-addressed files, the events index, untrusted folders, resume, replay,
``runtel show``/``verify``, a full disk, forks and the seed trackers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import runtel
from runtel.cli import main
from runtel.exporters.base import Capabilities, ExportResult
from runtel.records import MediaLogged, Record
from runtel.replay import records_of
from runtel.tracking.trackers import LocalTracker, MultiTracker
from tests.test_faults_write import _fill, small_disk  # noqa: F401  # the 1 MiB tmpfs fixture

PIXELS = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)


class FileCheckingExporter:
    """A real in-process exporter that looks, as each media record arrives, whether its file is there."""

    name = "file-checking"
    capabilities = Capabilities()

    def __init__(self) -> None:
        self.seen: list[tuple[MediaLogged, bool]] = []

    def export(self, records: Sequence[Record]) -> ExportResult:
        for record in records:
            if isinstance(record, MediaLogged):
                self.seen.append((record, Path(record.path).read_bytes() != b""))
        return ExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass


def _media_lines(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "events.jsonl").read_text("utf-8").splitlines()
    return [document for document in map(json.loads, lines) if document["type"] == "media"]


def _logged_run(base_dir: Path) -> runtel.StoredRun:
    with runtel.init(project="p", name="media", base_dir=str(base_dir)) as run:
        run.log_image("img", PIXELS, step=1, caption="c")
        run.log_text("note", "hello", step=1)
    return runtel.Store(base_dir).run(run.id)


def _rewrite_media_line(run: runtel.StoredRun, **changes: Any) -> None:
    """Change the first media line of ``events.jsonl`` as a damaged or crafted copy would."""
    path = run.dir / "events.jsonl"
    lines = path.read_text("utf-8").splitlines()
    for number, line in enumerate(lines):
        document = json.loads(line)
        if document["type"] == "media":
            document.update(changes)
            lines[number] = json.dumps(document)
            break
    path.write_text("\n".join(lines) + "\n", "utf-8")


def test_identical_content_is_stored_once(base_dir: Path) -> None:
    with runtel.init(project="p", base_dir=str(base_dir)) as run:
        for step in range(5):
            run.log_image("same", PIXELS, step=step)
        run.log_image("other-name", PIXELS, step=0)
    stored = runtel.Store(base_dir).run(run.id)
    files = [p for p in (stored.dir / "media").iterdir() if not p.name.startswith(".")]
    assert len(files) == 1
    assert len(stored.media("same")) == 5 and stored.media("other-name")[0][1].path == files[0]


def test_events_jsonl_lists_each_item_with_a_relative_path(base_dir: Path) -> None:
    stored = _logged_run(base_dir)
    [image, text] = _media_lines(stored.dir)
    assert image["path"] == f"media/{image['sha256']}.png" and image["caption"] == "c"
    assert image["meta"] == {"shape": [8, 8, 3], "dtype": "uint8", "format": "png"}
    assert text["path"] == f"media/{text['sha256']}.txt" and text["step"] == 1


def test_an_exporter_gets_the_record_with_its_file_already_on_disk(base_dir: Path) -> None:
    exporter = FileCheckingExporter()
    with runtel.init(project="p", base_dir=str(base_dir), exporters=[exporter], flush_interval=0.05) as run:
        for step in range(3):
            run.log({"loss": 1.0, "img": runtel.Image(PIXELS + step)}, step=step)
    assert [(record.step, on_disk) for record, on_disk in exporter.seen] == [(0, True), (1, True), (2, True)]
    assert all(os.path.isabs(record.path) for record, _ in exporter.seen)


def test_a_moved_folder_still_finds_its_media(base_dir: Path, tmp_path: Path) -> None:
    stored = _logged_run(base_dir)
    moved = tmp_path / "elsewhere"
    stored.dir.rename(moved)
    np.testing.assert_array_equal(runtel.StoredRun(moved).media("img")[0][1].to_numpy(), PIXELS)


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"path": "../outside.png"}, "line 2: path", "not a file media/<sha256>"),
        ({"path": "/etc/passwd"}, "line 2: path", "not a file media/<sha256>"),
        ({"sha256": "zz"}, "line 2: sha256", "64 lowercase hex"),
        ({"kind": "video"}, "line 2: kind", "not one of image"),
        ({"step": -1}, "line 2: step", "below 0"),
        ({"index": 3, "count": 2}, "line 2: index", "count - 1"),
        ({"step": "3"}, "line 2: step", "not an integer"),
        ({"meta": []}, "line 2: meta", "not a JSON object"),
        ({"path": "media/" + "0" * 64 + ".png"}, "line 2: path", "does not carry the record's sha256"),
    ],
)
def test_a_crafted_media_line_is_refused_naming_file_and_field(
    base_dir: Path, changes: dict[str, Any], field: str, problem: str
) -> None:
    stored = _logged_run(base_dir)
    _rewrite_media_line(stored, **changes)
    with pytest.raises(runtel.StoreCorruptError, match=problem) as refused:
        stored.media("img")
    assert refused.value.field == field and refused.value.path.endswith("events.jsonl")


def test_a_media_file_changed_on_disk_fails_its_sha256(base_dir: Path) -> None:
    stored = _logged_run(base_dir)
    [(_, item)] = stored.media("img")
    item.path.write_bytes(item.path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(runtel.StoreCorruptError, match="was logged") as refused:
        item.to_numpy()
    assert refused.value.field == "sha256" and refused.value.path == str(item.path)


def test_a_media_file_that_is_a_symlink_out_of_the_folder_is_refused(base_dir: Path, tmp_path: Path) -> None:
    stored = _logged_run(base_dir)
    [(_, item)] = stored.media("img")
    outside = tmp_path / "outside.png"
    outside.write_bytes(item.path.read_bytes())
    item.path.unlink()
    item.path.symlink_to(outside)
    with pytest.raises(runtel.StoreCorruptError, match="leads outside the run folder") as refused:
        stored.media("img")
    assert refused.value.field == "path"


def test_a_missing_media_file_is_named(base_dir: Path) -> None:
    stored = _logged_run(base_dir)
    [(_, item)] = stored.media("note")
    item.path.unlink()
    with pytest.raises(runtel.StoreCorruptError, match="is missing"):
        item.text  # noqa: B018


def test_verify_names_a_damaged_media_file_and_exits_1(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = _logged_run(base_dir)
    assert main(["verify", "--base-dir", str(base_dir)]) == 0
    assert "0 media files damaged" in capsys.readouterr().out
    [(_, item)] = stored.media("img")
    item.path.write_bytes(b"not the image")
    assert main(["verify", "--base-dir", str(base_dir)]) == 1
    out = capsys.readouterr().out
    assert "image 'img' step 1" in out and "1 media files damaged" in out


def test_show_lists_media_keys_with_counts(base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stored = _logged_run(base_dir)
    assert main(["show", stored.id, "--base-dir", str(base_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["media"] == {"img": 1, "note": 1}
    assert main(["show", stored.id, "--base-dir", str(base_dir)]) == 0
    assert "media" in capsys.readouterr().out


def test_replay_sends_the_live_records_with_paths_in_this_folder(base_dir: Path, tmp_path: Path) -> None:
    stored = _logged_run(base_dir)
    moved = tmp_path / "copy"
    stored.dir.rename(moved)
    replayed = [r for r in records_of(runtel.StoredRun(moved)) if isinstance(r, MediaLogged)]
    assert [(r.name, r.step, r.kind) for r in replayed] == [("img", 1, "image"), ("note", 1, "text")]
    assert all(Path(r.path).parent == moved.resolve() / "media" and Path(r.path).is_file() for r in replayed)


def test_replay_refuses_a_damaged_media_file(base_dir: Path) -> None:
    stored = _logged_run(base_dir)
    stored.media("img")[0][1].path.write_bytes(b"garbage")
    with pytest.raises(runtel.StoreCorruptError, match="sha256"):
        list(records_of(stored))


def test_a_resumed_run_keeps_its_media_and_adds_to_them(base_dir: Path) -> None:
    with runtel.init(project="p", base_dir=str(base_dir)) as run:
        run.log({"loss": 1.0, "img": runtel.Image(PIXELS)})
    with runtel.init(project="p", base_dir=str(base_dir), resume=run.id) as resumed:
        resumed.log({"loss": 0.5, "img": runtel.Image(PIXELS[::-1].copy())})
    items = runtel.Store(base_dir).run(run.id).media("img")
    assert [step for step, _ in items] == [0, 1]
    np.testing.assert_array_equal(items[1][1].to_numpy(), PIXELS[::-1])


def test_a_leftover_temporary_media_file_is_removed_on_resume(base_dir: Path) -> None:
    stored = _logged_run(base_dir)
    leftover = stored.dir / "media" / ".abc.png.x1y2.tmp"
    leftover.write_bytes(b"half")
    runtel.init(project="p", base_dir=str(base_dir), resume=stored.id).finish()
    assert not leftover.exists()


_FORK_CHILD = r"""
import os, sys
import numpy as np
import runtel
run = runtel.init(project="fork", name="parent", base_dir=sys.argv[1], flush_interval=0.05)
run.log_image("parent", np.zeros((2, 2), np.uint8), step=0)
pid = os.fork()
if pid == 0:
    run.log_image("child", np.ones((2, 2), np.uint8), step=1)
    run.log({"child-gallery": [runtel.Image(np.ones((2, 2), np.uint8))]})
    run.flush()
    os._exit(0)
os.waitpid(pid, 0)
run.finish()
print(runtel.Store(sys.argv[1]).run(run.id).media_names())
"""


def test_a_forked_child_does_not_write_media_into_its_parents_run(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _FORK_CHILD, str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'parent': 1}"
    assert "forked child" in result.stderr


def test_media_the_full_disk_refused_are_written_once_it_has_room(small_disk: Path) -> None:  # noqa: F811
    run = runtel.init(project="p", name="full", base_dir=str(small_disk / "runs"), flush_interval=0.05)
    run.log_image("before", PIXELS, step=0)
    run.flush()
    filler = _fill(small_disk)
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    run.log_image("waited", noise, step=1)
    run.flush()
    assert runtel.Store(small_disk / "runs").run(run.id).media_names() == {"before": 1}
    filler.unlink()
    run.finish()
    stored = runtel.Store(small_disk / "runs").run(run.id)
    assert stored.media_names() == {"before": 1, "waited": 1}
    np.testing.assert_array_equal(stored.media("waited")[0][1].to_numpy(), noise)
    assert stored.summary()["status"] == "completed"


def test_a_media_file_still_refused_at_finish_is_counted_lost_and_raises(base_dir: Path) -> None:
    run = runtel.init(project="p", name="refused", base_dir=str(base_dir))
    (run.dir / "media").write_bytes(b"a file where the media folder goes")  # every media write fails
    run.log({"loss": 1.0, "lost": runtel.Image(PIXELS)}, step=0)
    with pytest.raises(runtel.StoreWriteError, match="0 points and 1 other records"):
        run.finish()
    stored = runtel.Store(base_dir).run(run.id)
    assert stored.media_names() == {} and stored.history("loss")[2].tolist() == [1.0]
    summary = stored.summary()
    assert summary["status"] == "failed" and "'lost' at step 0 could not be stored" in summary["error"]


def test_the_seed_trackers_log_images_and_tables_through_their_run(base_dir: Path) -> None:
    tracker = LocalTracker("p", "seed", base_dir=str(base_dir))
    tracker.log_image("img", PIXELS, step=2, caption="x")
    tracker.log_table("tab", [[1, "a"]], columns=["n", "s"], step=2)
    tracker.finish()
    stored = runtel.Store(base_dir).run(tracker.run.id)
    np.testing.assert_array_equal(stored.media("img")[0][1].to_numpy(), PIXELS)
    assert stored.table("tab").to_dict("records") == [{"n": 1, "s": "a"}]


def test_a_multi_tracker_sends_images_to_its_run_and_its_own_trackers(base_dir: Path) -> None:
    class Recording(LocalTracker):
        def __init__(self) -> None:
            super().__init__("p", "extra", base_dir=str(base_dir))
            self.calls: list[str] = []

        def log_image(
            self, name: str, image: Any, step: int | None = None, caption: str | None = None
        ) -> None:
            self.calls.append(name)
            super().log_image(name, image, step, caption)

    extra = Recording()
    tracker = MultiTracker("p", "multi", trackers=[extra], base_dir=str(base_dir))
    tracker.log_image("img", PIXELS, step=0)
    tracker.log_table("tab", [{"a": 1}])
    tracker.finish()
    assert extra.calls == ["img"]
    assert runtel.Store(base_dir).run(tracker.run.id).media_names() == {"img": 1, "tab": 1}


def test_media_queued_faster_than_the_flush_encodes_wait_and_are_all_stored(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runtel.store import _media_writer

    monkeypatch.setattr(_media_writer, "MAX_QUEUED_BYTES", 4 * PIXELS.nbytes)
    with runtel.init(project="p", base_dir=str(base_dir), flush_interval=60) as run:
        for step in range(40):
            run.log_image("burst", PIXELS + np.uint8(step), step=step)
        waits = run._media.waits
    items = runtel.Store(base_dir).run(run.id).media("burst")
    assert waits > 0 and [step for step, _ in items] == list(range(40))
    np.testing.assert_array_equal(items[-1][1].to_numpy(), PIXELS + np.uint8(39))


def test_log_image_buffers_are_reused_across_flushes_without_mixing_pixels(base_dir: Path) -> None:
    frames = [np.full((16, 16, 3), step, np.uint8) for step in range(30)]
    with runtel.init(project="p", base_dir=str(base_dir)) as run:
        for step, frame in enumerate(frames):
            run.log_image("reused", frame, step=step)
            if step % 5 == 4:
                run.flush()  # encoded: their buffers go back and the next calls copy into them
    items = runtel.Store(base_dir).run(run.id).media("reused")
    for (step, item), frame in zip(items, frames, strict=True):
        np.testing.assert_array_equal(item.to_numpy(), frame, err_msg=f"step {step}")


def test_replay_sends_the_same_media_records_as_live_export(base_dir: Path) -> None:
    exporter = FileCheckingExporter()
    with runtel.init(project="p", base_dir=str(base_dir), exporters=[exporter]) as run:
        run.log({"g": [runtel.Image(PIXELS), runtel.Image(PIXELS.astype(np.float32) / 255)]}, step=2)
        run.log_table("t", [[1, None]], columns=["a", "b"], step=3)
        run.log_audio("a", np.zeros(16, np.float32), sample_rate=8000, step=3)
    live = [record for record, _ in exporter.seen]
    replayed = [r for r in records_of(runtel.Store(base_dir).run(run.id)) if isinstance(r, MediaLogged)]
    assert replayed == live


def _swap_content(path: Path) -> None:
    """Other bytes under a content-addressed name, as a damaged or crafted copy would hold."""
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")


def test_replay_refuses_a_damaged_preview_naming_it(base_dir: Path) -> None:
    with runtel.init(project="p", base_dir=str(base_dir)) as run:
        run.log_image("depth", np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4), step=0)
    stored = runtel.Store(base_dir).run(run.id)
    [(_, item)] = stored.media("depth")
    assert item.preview is not None
    _swap_content(item.preview)
    with pytest.raises(runtel.StoreCorruptError, match="preview") as caught:
        list(records_of(stored))
    assert caught.value.path == str(item.preview)


def test_replay_refuses_a_damaged_table_image_cell_naming_its_column(base_dir: Path) -> None:
    with runtel.init(project="p", base_dir=str(base_dir)) as run:
        run.log_table("eval", [[runtel.Image(PIXELS), 1]], columns=["img", "n"], step=0)
    stored = runtel.Store(base_dir).run(run.id)
    [cell] = stored.table("eval")["img"].tolist()
    _swap_content(cell.path)
    with pytest.raises(runtel.StoreCorruptError, match="sha256") as caught:
        list(records_of(stored))
    assert caught.value.path == str(cell.path)


@pytest.mark.parametrize("shape", [[8, 24], [24, 8], [3, 8, 8], "8x8", [8, 8, 3, 1, 1], [8.0, 8, 3]])
def test_an_image_shape_the_file_does_not_decode_to_is_refused(base_dir: Path, shape: object) -> None:
    stored = _logged_run(base_dir)
    _rewrite_media_line(stored, meta={"shape": shape, "dtype": "uint8", "format": "png"})
    [(_, item)] = runtel.StoredRun(stored.dir).media("img")
    with pytest.raises(runtel.StoreCorruptError, match="shape"):
        item.to_numpy()


@pytest.mark.parametrize("shape", [[3], [2, 5], [10, 2]])
def test_an_audio_shape_the_wav_does_not_decode_to_is_refused(base_dir: Path, shape: list[int]) -> None:
    with runtel.init(project="p", base_dir=str(base_dir)) as run:
        run.log_audio("clip", np.arange(10, dtype=np.int16), sample_rate=8000, step=0)
    stored = runtel.Store(base_dir).run(run.id)
    [(_, logged)] = stored.media("clip")
    _rewrite_media_line(stored, meta={**logged.meta, "shape": shape})
    [(_, item)] = runtel.StoredRun(stored.dir).media("clip")
    with pytest.raises(runtel.StoreCorruptError, match="shape"):
        item.to_numpy()
