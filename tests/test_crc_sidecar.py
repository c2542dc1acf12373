"""A damaged ``metrics/blocks.crc`` is found with its byte position, never taken for ``ok``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel.cli import main
from runtel.store._series import CRC_DTYPE, CRC_FILE, SIDECAR_KEY, verify_folder

ENTRY = CRC_DTYPE.itemsize


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


def test_a_sidecar_cut_mid_entry_is_damage_at_its_tail_and_the_whole_entries_still_verify(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _finished_run(base_dir)
    sidecar = run.dir / "metrics" / CRC_FILE
    entries = sidecar.stat().st_size // ENTRY
    assert entries >= 3
    with sidecar.open("r+b") as handle:
        handle.truncate((entries - 1) * ENTRY + 10)  # the last entry cut after 10 of its bytes
    checks = verify_folder(run.dir / "metrics")
    torn = checks[SIDECAR_KEY]
    assert torn.status == "damaged" and torn.path == sidecar
    assert torn.damage_at == ((entries - 1) * ENTRY, (entries - 1) * ENTRY + 10)
    loss = checks["loss"]  # its blocks before the lost entry verify; the last block is not covered
    assert loss.status == "unverified" and loss.verified_bytes > 0 and loss.unverified_bytes > 0
    code, rows = _verify_json(base_dir, capsys)
    assert code == 1
    assert {(row["metric"], row["status"]) for row in rows} >= {
        (SIDECAR_KEY, "damaged"),
        ("loss", "unverified"),
    }
    assert main(["verify", "--base-dir", str(base_dir)]) == 1
    out = "".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert CRC_FILE in out and f"bytes{(entries - 1) * ENTRY}-{(entries - 1) * ENTRY + 10}" in out


@pytest.mark.parametrize(
    ("field", "value"),
    [("start", 10**12), ("size", 7), ("start", 0)],
    ids=["offset-past-the-file", "not-whole-records", "overlapping"],
)
def test_a_garbled_entry_is_damage_of_the_sidecar_at_that_entry(
    base_dir: Path, capsys: pytest.CaptureFixture[str], field: str, value: int
) -> None:
    run = _finished_run(base_dir)
    sidecar = run.dir / "metrics" / CRC_FILE
    entries = np.fromfile(sidecar, dtype=CRC_DTYPE)
    assert len(entries) >= 2 and int(entries[1]["start"]) > 0
    entries[1][field] = value  # the second entry: offset past the file, a torn size, or overlapping the first
    entries.tofile(sidecar)
    check = next(c for c in verify_folder(run.dir / "metrics").values() if c.status == "damaged")
    assert check.path == sidecar and check.damage_at == (ENTRY, 2 * ENTRY)
    assert check.problem is not None and "entry 1" in check.problem
    code, rows = _verify_json(base_dir, capsys)
    assert code == 1
    assert [row["damaged_bytes"] for row in rows if row["status"] == "damaged"] == [[ENTRY, 2 * ENTRY]]


def test_a_missing_sidecar_is_unverified_not_ok(base_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _finished_run(base_dir)
    (run.dir / "metrics" / CRC_FILE).unlink()
    assert {check.status for check in verify_folder(run.dir / "metrics").values()} == {"unverified"}
    code, rows = _verify_json(base_dir, capsys)
    assert code == 0 and {row["status"] for row in rows} == {"unverified"}


def test_bytes_of_a_finished_run_no_entry_covers_are_unverified(base_dir: Path) -> None:
    run = _finished_run(base_dir)
    sidecar = run.dir / "metrics" / CRC_FILE
    entries = np.fromfile(sidecar, dtype=CRC_DTYPE)
    entries[:-1].tofile(sidecar)  # a whole entry gone: the last block is covered by none
    check = verify_folder(run.dir / "metrics")["loss"]
    assert check.status == "unverified" and check.unverified_bytes == int(entries[-1]["size"])
    live = verify_folder(run.dir / "metrics", finished=False)["loss"]  # a live writer's newest block
    assert live.status == "ok" and live.unverified_bytes == check.unverified_bytes
