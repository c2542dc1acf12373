"""A damaged ``metrics/points.idx`` (the index and CRC of every block) is found with its byte position,
never taken for ``ok``; an older folder's missing ``blocks.crc`` is ``unverified``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel.cli import main
from runtel.store._blocks import SEGMENT_DTYPE, SEGMENTS_FILE
from runtel.store._metrics import verify_folder
from runtel.store._series import CRC_FILE, SIDECAR_KEY

ENTRY = SEGMENT_DTYPE.itemsize
LEGACY_RUNS = Path(__file__).parent / "data" / "legacy_v1"


def _finished_run(base_dir: Path, blocks: int = 3) -> runtel.Run:
    run = runtel.init(project="p", base_dir=str(base_dir), flush_interval=3600)
    for block in range(blocks):
        for step in range(block * 100, (block + 1) * 100):
            run.log({"loss": float(step)})
        run.flush()
    run.finish()
    return run


def _verify_json(base_dir: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, object]]]:
    capsys.readouterr()
    code = main(["verify", "--json", "--base-dir", str(base_dir)])
    return code, json.loads(capsys.readouterr().out)


def test_an_index_cut_mid_entry_is_damage_at_its_tail_and_the_whole_entries_still_verify(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _finished_run(base_dir)
    index = run.dir / "metrics" / SEGMENTS_FILE
    entries = index.stat().st_size // ENTRY
    assert entries >= 3
    with index.open("r+b") as handle:
        handle.truncate((entries - 1) * ENTRY + 10)  # the last entry cut after 10 of its bytes
    checks = verify_folder(run.dir / "metrics")
    torn = checks[SIDECAR_KEY]
    assert torn.status == "damaged" and torn.path == index
    assert torn.damage_at == ((entries - 1) * ENTRY, (entries - 1) * ENTRY + 10)
    loss = checks["loss"]  # its blocks before the lost entry verify; the last block is no one's now
    assert loss.status == "ok" and loss.records == 200
    assert runtel.Store(base_dir).run(run.id).history("loss")[0].tolist() == list(range(200))
    code, rows = _verify_json(base_dir, capsys)
    assert code == 1
    assert {(row["metric"], row["status"]) for row in rows} == {(SIDECAR_KEY, "damaged"), ("loss", "ok")}
    assert main(["verify", "--base-dir", str(base_dir)]) == 1
    out = "".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert SEGMENTS_FILE in out and f"bytes{(entries - 1) * ENTRY}-{(entries - 1) * ENTRY + 10}" in out


@pytest.mark.parametrize(
    ("field", "value"),
    [("start", 10**12), ("size", 7), ("start", 0), ("series", 9)],
    ids=["offset-past-the-file", "not-whole-records", "overlapping", "unknown-series"],
)
def test_a_garbled_entry_is_damage_of_the_index_at_that_entry(
    base_dir: Path, capsys: pytest.CaptureFixture[str], field: str, value: int
) -> None:
    run = _finished_run(base_dir)
    index = run.dir / "metrics" / SEGMENTS_FILE
    entries = np.fromfile(index, dtype=SEGMENT_DTYPE)
    assert len(entries) >= 2 and int(entries[1]["start"]) > 0
    entries[1][field] = value  # the second entry: past the file, a torn size, overlapping, or no one's
    entries.tofile(index)
    checks = verify_folder(run.dir / "metrics")
    assert {name: check.status for name, check in checks.items()} == {
        SIDECAR_KEY: "damaged",
        "loss": "damaged",
    }
    for check in checks.values():
        assert check.path == index and check.damage_at == (ENTRY, 2 * ENTRY)
        assert check.problem is not None and "entry 1" in check.problem
    code, rows = _verify_json(base_dir, capsys)
    assert code == 1
    assert {tuple(row["damaged_bytes"]) for row in rows if row["status"] == "damaged"} == {(ENTRY, 2 * ENTRY)}


def test_a_missing_index_is_damage_of_every_series(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _finished_run(base_dir)
    (run.dir / "metrics" / SEGMENTS_FILE).unlink()
    checks = verify_folder(run.dir / "metrics")
    assert {check.status for check in checks.values()} == {"damaged"}
    assert "belong to no series" in (checks["loss"].problem or "")
    code, _ = _verify_json(base_dir, capsys)
    assert code == 1


def test_an_older_folder_without_its_sidecar_is_unverified_not_ok(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder,) = LEGACY_RUNS.iterdir()
    shutil.copytree(folder, base_dir / folder.name)
    assert {c.status for c in verify_folder(base_dir / folder.name / "metrics").values()} == {"ok"}
    (base_dir / folder.name / "metrics" / CRC_FILE).unlink()
    assert {c.status for c in verify_folder(base_dir / folder.name / "metrics").values()} == {"unverified"}
    code, rows = _verify_json(base_dir, capsys)
    assert code == 0 and {row["status"] for row in rows} == {"unverified"}


def test_bytes_of_a_finished_run_no_entry_covers_are_unverified_and_no_series(base_dir: Path) -> None:
    run = _finished_run(base_dir)
    index = run.dir / "metrics" / SEGMENTS_FILE
    entries = np.fromfile(index, dtype=SEGMENT_DTYPE)
    entries[:-1].tofile(index)  # a whole entry gone, as a kill between a block's two appends leaves it
    checks = verify_folder(run.dir / "metrics")
    tail = checks[SIDECAR_KEY]
    assert tail.status == "unverified" and tail.unverified_bytes == int(entries[-1]["size"])
    assert checks["loss"].status == "ok" and checks["loss"].records == 200
    live = verify_folder(run.dir / "metrics", finished=False)  # a live writer's entry is on its way
    assert set(live) == {"loss"} and live["loss"].status == "ok"
