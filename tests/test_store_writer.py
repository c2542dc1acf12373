"""The store writer on its own: idempotent retries, repair on resume, CRC damage found with its position,
older folders still read, two processes writing into one base folder."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import numpy as np
import pytest

import runtel
from runtel.cli import main
from runtel.records import SERIES_DTYPE, MetricPoints, ParamsLogged, RunEnded, RunStarted
from runtel.store._blocks import read_segments
from runtel.store._metrics import verify_folder
from runtel.store._series import CRC_FILE
from runtel.store.writer import StoreWriter

from .conftest import run_python

LEGACY_RUNS = Path(__file__).parent / "data" / "legacy_v1"


def _points(name: str, steps: range) -> MetricPoints:
    n = len(steps)
    return MetricPoints(
        names=(name,),
        index=np.zeros(n, np.int32),
        steps=np.arange(steps.start, steps.stop, dtype=np.int64),
        times=np.full(n, 1.0),
        values=np.arange(steps.start, steps.stop, dtype=np.float64),
        span_ids=np.zeros(n, np.uint64),
    )


def _stored_steps(run_dir: Path, metric: str) -> list[int]:
    return runtel.Store(run_dir.parent).run(run_dir.name).history(metric)[0].tolist()


def test_an_unencodable_record_between_points_loses_only_itself(tmp_path: Path) -> None:
    """The writer alone (whatever the call site refuses): points before and after are stored once each."""
    writer = StoreWriter(tmp_path / "run_0123abcd")
    bad = ParamsLogged(params={"note": "bad \udc80 byte"}, time=1.0)
    writer.write([RunStarted("0123abcd", "r", "p", 1.0, {}), _points("loss", range(0, 100)), bad])
    writer.write([_points("loss", range(100, 200))])
    writer.write([_points("loss", range(200, 300)), RunEnded("completed", 2.0)])
    steps = np.fromfile(tmp_path / "run_0123abcd" / "metrics" / "points.bin", dtype=SERIES_DTYPE)["step"]
    assert steps.tolist() == list(range(300))
    assert writer.metric_stats()["loss"]["count"] == 300
    report = writer.report()
    assert (report["status"], report["records_undelivered"], report["points_undelivered"]) == ("failed", 1, 0)
    with pytest.raises(runtel.StoreWriteError, match="1 other records are not stored"):
        writer.close({})
    summary = json.loads((tmp_path / "run_0123abcd" / "summary.json").read_text())
    assert summary["metrics"]["loss"]["count"] == 300
    assert summary["exporters"]["local"]["status"] == "failed"
    assert summary["status"] == "failed" and "1 other records are not stored" in summary["error"]
    assert json.loads((tmp_path / "run_0123abcd" / "metadata.json").read_text())["status"] == "failed"
    assert runtel.Store(tmp_path).run("0123abcd").status == "failed"


def test_a_bad_params_value_between_log_calls_neither_duplicates_nor_skips(base_dir: Path) -> None:
    run = runtel.init(project="p", base_dir=str(base_dir))
    for step in range(500):
        run.log({"loss": float(step)})
    try:
        run.log_params({"note": "bad \udc80 byte"})
        refused = False
    except runtel.InvalidParamError:  # refused at the call: then nothing is lost at all
        refused = True
    for step in range(500, 1000):
        run.log({"loss": float(step)})
    if refused:
        run.finish()
    else:
        with pytest.raises(runtel.StoreWriteError):
            run.finish()
    stored = runtel.Store(base_dir).run(run.id)
    assert stored.history("loss")[0].tolist() == list(range(1000))
    summary = stored.summary()
    assert summary["metrics"]["loss"]["count"] == 1000
    lost = summary["exporters"]["local"]["records_undelivered"]
    assert lost == 0 if refused else lost >= 1  # the params record (and the run span carrying it)
    assert stored.status == summary["status"] == ("completed" if refused else "failed")


@pytest.mark.parametrize(
    "torn",
    [b'{"type": "params", "params": {"lr"', '{"type": "params", "params": {"k": "é'.encode()[:-1]],
    ids=["ascii", "inside-a-utf8-character"],
)
def test_a_torn_events_line_is_cut_when_the_run_is_resumed(base_dir: Path, torn: bytes) -> None:
    with runtel.init(project="p", name="torn", base_dir=str(base_dir)) as run:
        run.log_params({"a": 1})
    events = run.dir / "events.jsonl"
    with events.open("ab") as handle:
        handle.write(torn)
    with runtel.init(project="p", base_dir=str(base_dir), resume=run.id) as resumed:
        resumed.log_params({"b": 2})
    lines = events.read_bytes().decode("utf-8").splitlines()
    assert all(json.loads(line) for line in lines)
    params = [e.params for e in runtel.Store(base_dir).run(run.id).events() if isinstance(e, ParamsLogged)]
    assert params == [{"a": 1}, {"b": 2}]


def test_hidden_tmp_files_of_a_killed_write_are_removed_on_resume(base_dir: Path) -> None:
    with runtel.init(project="p", name="tmp", base_dir=str(base_dir)) as run:
        run.log({"x": 1.0})
    left = [
        run.dir / ".metadata.json.k2j3.tmp",
        run.dir / "metrics" / ".index.json.x9.tmp",
        run.dir / "artifacts" / ".model.pt.0f0f.tmp",
    ]
    for path in left:
        path.write_text("half")
    staging = run.dir / "versions" / ".weights.1234.tmp"
    staging.mkdir()
    (staging / "part").write_text("half")
    other_rank = run.dir / "ranks" / "1" / ".metadata.json.zz.tmp"
    other_rank.parent.mkdir(parents=True)
    other_rank.write_text("a live rank's write")
    with runtel.init(project="p", base_dir=str(base_dir), resume=run.id) as resumed:
        resumed.log({"x": 2.0})
    assert not any(path.exists() for path in [*left, staging])
    assert other_rank.exists()
    assert runtel.Store(base_dir).run(run.id).history("x")[2].tolist() == [1.0, 2.0]


def _run_in_blocks(base_dir: Path, blocks: int = 4, per_block: int = 250) -> runtel.Run:
    run = runtel.init(project="p", name="crc", base_dir=str(base_dir))
    for block in range(blocks):
        for step in range(block * per_block, (block + 1) * per_block):
            run.log({"loss": float(step), "acc": step / 1000})
        run.flush()
    run.finish()
    return run


def test_garbled_series_bytes_are_found_with_their_position(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run_in_blocks(base_dir)
    assert {check.status for check in verify_folder(run.dir / "metrics").values()} == {"ok"}
    assert main(["verify", "--base-dir", str(base_dir)]) == 0
    points = run.dir / "metrics" / "points.bin"
    loss = read_segments(run.dir / "metrics")[0::2]  # each block: the loss segment, then acc's
    assert loss["series"].tolist() == [1, 1, 1, 1]
    third = (int(loss[2]["start"]), int(loss[2]["start"] + loss[2]["size"]))  # loss steps 500-749
    data = bytearray(points.read_bytes())
    data[third[0] + 100 * SERIES_DTYPE.itemsize + 17] ^= 0x40  # one bit of the value at step 600
    points.write_bytes(bytes(data))
    checks = verify_folder(run.dir / "metrics")
    check = checks["loss"]
    assert check.status == "damaged" and check.damage_at == third and check.path == points
    assert checks["acc"].status == "ok"
    capsys.readouterr()
    assert main(["verify", run.id, "--base-dir", str(base_dir)]) == 1
    out = "".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "points.bin" in out and f"bytes{third[0]}-{third[1]}" in out and "1damaged" in out


def test_a_folder_without_crcs_reads_and_verifies_as_unverified_then_resumes_verified(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    (folder,) = LEGACY_RUNS.iterdir()  # one file per series, written by the store before points.bin
    shutil.copytree(folder, base_dir / folder.name)
    metrics = base_dir / folder.name / "metrics"
    (metrics / CRC_FILE).unlink()  # the layout written before CRCs were kept
    stored = runtel.Store(base_dir).run(folder.name)
    assert stored.history("acc")[0].tolist() == list(range(5))
    assert {check.status for check in verify_folder(metrics).values()} == {"unverified"}
    assert main(["verify", "--base-dir", str(base_dir)]) == 0
    assert "3 unverified" in capsys.readouterr().out
    with runtel.init(project="p", base_dir=str(base_dir), resume=stored.id) as resumed:
        resumed.log({"acc": 5.0}, step=5)
    checks = verify_folder(metrics)
    assert {check.status for check in checks.values()} == {"ok"}
    assert checks["acc"].records == 6 and checks["loss"].records == 8
    assert sorted(path.name for path in metrics.iterdir()) == ["index.json", "points.bin", "points.idx"]


def test_a_retried_write_after_a_partial_block_resumes_exactly(tmp_path: Path) -> None:
    """Bytes after the last indexed block (a failed write, or a kill before its index entry) are cut
    on resume, and the CRCs still hold."""
    writer = StoreWriter(tmp_path / "run_89abcdef")
    writer.write([_points("loss", range(0, 10))])
    writer.close({})
    series = tmp_path / "run_89abcdef" / "metrics" / "points.bin"
    with series.open("ab") as handle:
        handle.write(b"\x07" * 11)
    again = StoreWriter(tmp_path / "run_89abcdef")
    again.write([_points("loss", range(10, 20))])
    again.close({})
    assert np.fromfile(series, dtype=SERIES_DTYPE)["step"].tolist() == list(range(20))
    assert verify_folder(series.parent)["loss"].status == "ok"


WRITER = textwrap.dedent(
    """
    import sys, runtel
    run = runtel.init(project="two", name=sys.argv[1], base_dir=sys.argv[2], flush_interval=0.05)
    for step in range(20000):
        run.log({"loss": float(step), "rank_of": float(len(sys.argv[1]))})
    run.finish()
    """
)


def test_two_processes_write_runs_into_one_base_folder(base_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, name, str(base_dir)], stderr=subprocess.PIPE)
        for name in ("first", "second-one")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    runs = runtel.Store(base_dir).runs()
    assert sorted(run.name for run in runs) == ["first", "second-one"]
    for run in runs:
        assert run.status == "completed"
        assert run.history("loss")[0].tolist() == list(range(20000))
        assert run.summary()["metrics"]["loss"]["count"] == 20000
        assert {check.status for check in verify_folder(run.dir / "metrics").values()} == {"ok"}
    assert run_python("import runtel; print(len(runtel.Store('runs').runs()))", tmp_path).strip() == "2"


def test_the_store_warns_nothing_when_all_is_well(base_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="runtel")
    with runtel.init(project="p", base_dir=str(base_dir)) as run:
        run.log({"x": 1.0})
    assert not [r for r in caplog.records if "local store" in r.getMessage()]
    assert runtel.Store(base_dir).run(run.id).summary()["exporters"]["local"]["status"] == "ok"


def test_verify_reports_an_unreadable_index_and_checks_the_other_runs(
    base_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = _run_in_blocks(base_dir, blocks=1)
    healthy = _run_in_blocks(base_dir, blocks=1)
    (broken.dir / "metrics" / "index.json").write_text("{not json")
    assert main(["verify", "--base-dir", str(base_dir), "--json"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert [(row["id"], row["status"]) for row in rows if row["id"] == healthy.id] == [
        (healthy.id, "ok"),
        (healthy.id, "ok"),
    ]
    (bad,) = [row for row in rows if row["id"] == broken.id]
    assert bad["status"] == "damaged" and bad["file"].endswith("index.json")


def test_one_batch_larger_than_the_backlog_limit_is_stored_whole_on_a_working_disk(tmp_path: Path) -> None:
    """The backlog limit bounds points the disk refused, not a large batch that a working disk takes."""
    writer = StoreWriter(tmp_path / "run_4567cdef", backlog_points=1_000)
    blocks = [_points("loss", range(start, start + 600)) for start in range(0, 3_000, 600)]
    writer.write([RunStarted("4567cdef", "r", "p", 1.0, {}), *blocks, RunEnded("completed", 2.0)])
    writer.close({})
    assert _stored_steps(tmp_path / "run_4567cdef", "loss") == list(range(3_000))
    assert writer.report()["status"] == "ok"
