"""Run folders are untrusted input: crafted, damaged and foreign folders against every reader.

Each case damages one run ("victim") beside a healthy one ("good") and checks the query API, the CLI
(``ls``, ``show``, ``compare``, ``export`` to TensorBoard), the UI's data layer and its HTTP endpoint:
the good run always works, the victim is named with its reason, no file outside the folder is read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import runtel
from runtel.cli import main
from runtel.errors import ChecksumMismatchError, StoreCorruptError
from runtel.store.query import StoredRun
from runtel.store.scan import problems, scan
from runtel.ui import data

SECRET = b"SECRET-MARKER outside every run folder\n"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def runs(base_dir: Path, tmp_path: Path) -> dict[str, StoredRun]:
    """Two finished runs, each with a metric series, an artifact and epoch spans."""
    source = tmp_path / "weights.bin"
    found = {}
    for name in ("good", "victim"):
        source.write_bytes(f"weights of {name}".encode())
        with runtel.init(project="p", name=name, base_dir=str(base_dir), config={"lr": 0.1}) as run:
            for epoch in run.epochs(2):
                run.log({"loss": 1.0 / (epoch + 1)})
            run.log_artifact(str(source))
        found[name] = runtel.Store(base_dir).run(run.id)
    return found


def _edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _artifact_path(victim: StoredRun, value: str) -> None:
    def change(document: Any) -> Any:
        document["artifacts"]["weights.bin"][0]["path"] = value
        return document

    _edit_json(victim.dir / "artifacts.json", change)


def _series_file(victim: StoredRun) -> Path:
    """The file holding the points of every series of the run."""
    return victim.dir / "metrics" / "points.bin"


def _metadata(key: str, value: Any) -> Callable[[StoredRun, Path], None]:
    def damage(victim: StoredRun, secret: Path) -> None:
        _edit_json(victim.dir / "metadata.json", lambda document: {**document, key: value})

    return damage


def _index(value: Any, version: Any = 1) -> Callable[[StoredRun, Path], None]:
    def damage(victim: StoredRun, secret: Path) -> None:
        (victim.dir / "metrics" / "index.json").write_text(json.dumps({"version": version, "series": value}))

    return damage


def _symlink_series(victim: StoredRun, secret: Path) -> None:
    target = _series_file(victim)
    target.unlink()
    target.symlink_to(secret)


def _symlink_metrics_dir(victim: StoredRun, secret: Path) -> None:
    outside = secret.parent / "elsewhere"
    (victim.dir / "metrics").rename(outside)
    (victim.dir / "metrics").symlink_to(outside)


def _symlink_artifact(victim: StoredRun, secret: Path) -> None:
    stored = victim.artifact("weights.bin", verify=False)
    Path(stored.path).unlink()
    Path(stored.path).symlink_to(secret)


def _tampered_artifact(victim: StoredRun, secret: Path) -> None:
    path = Path(victim.artifact("weights.bin", verify=False).path)
    path.chmod(0o644)
    path.write_bytes(b"not what was logged")


def _event_artifact_path(victim: StoredRun, secret: Path) -> None:
    events = victim.dir / "events.jsonl"
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    for line in lines:
        if line["type"] == "artifact":
            line["path"] = str(secret)
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _append_events(raw: bytes) -> Callable[[StoredRun, Path], None]:
    def damage(victim: StoredRun, secret: Path) -> None:
        with (victim.dir / "events.jsonl").open("ab") as handle:
            handle.write(raw)

    return damage


def _replace(name: str, content: str) -> Callable[[StoredRun, Path], None]:
    def damage(victim: StoredRun, secret: Path) -> None:
        (victim.dir / name).write_text(content)

    return damage


def _fifo(name: str, *, folder: bool = False) -> Callable[[StoredRun, Path], None]:
    """A FIFO (or a folder) in place of a run file: no reader may wait on it, or treat it as a file."""

    def damage(victim: StoredRun, secret: Path) -> None:
        (victim.dir / name).unlink(missing_ok=True)
        (victim.dir / name).mkdir() if folder else os.mkfifo(victim.dir / name)

    return damage


def _metadata_symlink(victim: StoredRun, secret: Path) -> None:
    (victim.dir / "metadata.json").unlink()
    (victim.dir / "metadata.json").symlink_to(secret)


# (damage, is the victim still listed as a run, what reading it raises and where)
CASES: dict[str, tuple[Callable[[StoredRun, Path], None], bool, str]] = {
    "metadata start_time a string": (_metadata("start_time", "yesterday"), False, "open"),
    "metadata pid a string": (_metadata("pid", "123"), False, "open"),
    "metadata tags not strings": (_metadata("tags", [1, 2]), False, "open"),
    "metadata a symlink outside": (_metadata_symlink, False, "open"),
    "metadata not JSON": (_replace("metadata.json", '{"id": "ab'), False, "open"),
    "index value not a string": (_index({"loss": 5}), True, "history"),
    "index value absolute path": (lambda v, s: _index({"loss": str(s)})(v, s), True, "history"),
    "index value leads outside": (_index({"loss": "../../../secret.txt"}), True, "history"),
    "index not an object": (_index(["loss"]), True, "history"),
    "index version 2 value a file name": (_index({"loss": "s000001.bin"}, 2), True, "history"),
    "index version 2 value true": (_index({"loss": True}, 2), True, "history"),
    "index version 2 value 0": (_index({"loss": 0}, 2), True, "history"),
    "index version 2 two metrics one number": (_index({"loss": 1, "acc": 1}, 2), True, "history"),
    "index of an unknown version": (_index({"loss": 1}, 3), True, "history"),
    "series file a symlink outside": (_symlink_series, True, "history"),
    "series file deleted after it was written": (lambda v, s: _series_file(v).unlink(), True, "history"),
    "metrics folder a symlink outside": (_symlink_metrics_dir, True, "history"),
    "artifact path absolute": (lambda v, s: _artifact_path(v, str(s)), True, "artifacts"),
    "artifact path leads outside": (
        lambda v, s: _artifact_path(v, "versions/../../../secret.txt"),
        True,
        "artifacts",
    ),
    "artifact file a symlink outside": (_symlink_artifact, True, "artifacts"),
    "artifact size a string": (
        lambda v, s: _edit_json(
            v.dir / "artifacts.json",
            lambda d: {
                **d,
                "artifacts": {"weights.bin": [{**d["artifacts"]["weights.bin"][0], "size": "1"}]},
            },
        ),
        True,
        "artifacts",
    ),
    "artifact bytes changed": (_tampered_artifact, True, "checksum"),
    "event artifact path outside": (_event_artifact_path, True, "none"),
    "events torn inside a UTF-8 character": (
        _append_events(b'{"type": "params", "params": {"k": "\xc3'),
        True,
        "none",
    ),
    "events torn ASCII": (_append_events(b'{"type": "par'), True, "none"),
    "events line of the wrong type": (
        _append_events(b'{"type": "params", "params": "not an object", "time": 1.0}\n'),
        True,
        "events",
    ),
    "events line not JSON": (_append_events(b"garbage\n"), True, "events"),
    "summary metrics a list": (_replace("summary.json", '{"metrics": [1, 2]}'), True, "summary"),
    "summary count a string": (
        _replace("summary.json", '{"metrics": {"loss": {"count": "3"}}}'),
        True,
        "summary",
    ),
    "hyperparameters a list": (_replace("hyperparameters.json", "[1, 2]"), True, "params"),
    "hyperparameters a FIFO": (_fifo("hyperparameters.json"), True, "params"),
    "summary a folder": (_fifo("summary.json", folder=True), True, "summary"),
}


def _read(victim: StoredRun, where: str) -> None:
    run = runtel.Store(victim.dir.parent).run(victim.id)
    if where == "history":
        run.history("loss")
    elif where in ("artifacts", "checksum"):
        run.artifact("weights.bin")
    elif where == "events":
        list(run.events())
    elif where == "summary":
        run.summary()
    elif where == "params":
        run.params()


@pytest.mark.parametrize("case", list(CASES))
def test_a_crafted_folder_is_named_and_never_breaks_the_others(
    case: str,
    runs: dict[str, StoredRun],
    base_dir: Path,
    secret: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    damage, listed, where = CASES[case]
    good, victim = runs["good"], runs["victim"]
    damage(victim, secret)
    store = runtel.Store(base_dir)

    # the query API: the good run in full, the victim listed or skipped, reading it a runtel error
    assert store.run(good.id).history("loss")[2].tolist() == [1.0, 0.5]
    assert store.run(good.id[:8]).name == store.run("good").name == "good"
    assert [run.name for run in store.runs()] == (["good", "victim"] if listed else ["good"])
    listing = scan(base_dir)
    if listed:
        assert problems(store.run(victim.id)) != [] or where in ("none", "checksum")
    else:
        (skipped,) = listing.skipped
        assert skipped.folder == victim.dir.name and "metadata.json" in skipped.reason
    if where == "open":
        with pytest.raises(StoreCorruptError, match=r"metadata\.json"):
            store.run(victim.id)
    elif where == "checksum":
        with pytest.raises(ChecksumMismatchError):
            _read(victim, where)
    elif where != "none":
        with pytest.raises(StoreCorruptError):
            _read(victim, where)
    else:
        assert type(next(store.run(victim.id).events())).__name__ == "RunStarted"
        assert len(store.run(victim.id).spans()) == 3

    # the CLI: ls, show, compare work for the good run and name the victim; no traceback anywhere
    assert main(["ls", "--base-dir", str(base_dir), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows["runs"]] == (["good", "victim"] if listed else ["good"])
    assert main(["ls", "--base-dir", str(base_dir)]) == 0
    table = capsys.readouterr().out
    assert "good" in table and (listed or f"skipped {victim.dir.name}/" in table)
    assert main(["show", good.id, "--base-dir", str(base_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["name"] == "good"
    assert main(["show", victim.id, "--base-dir", str(base_dir)]) == (1 if where == "open" else 0)
    assert "Traceback" not in capsys.readouterr().err
    assert main(["compare", good.id, victim.id, "--base-dir", str(base_dir), "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in compared["metrics"]} >= {"good"}
    assert where in ("none", "artifacts", "checksum", "events", "summary", "params") or compared["skipped"]
    assert "Traceback" not in capsys.readouterr().err

    # export to TensorBoard: the good run goes; the victim goes without the file, or fails by name
    log_dir = tmp_path / "tb"
    code = main(
        ["export", "--all", "--to", "tensorboard", "--log-dir", str(log_dir), "--base-dir", str(base_dir)]
    )
    err = capsys.readouterr().err
    assert code == (1 if where in ("history", "artifacts", "checksum", "events") else 0), err
    for path in log_dir.rglob("*"):
        assert not path.is_file() or SECRET not in path.read_bytes(), path
    assert any(log_dir.glob("good_*/events.out.tfevents.*"))

    # the UI: its data layer for every listed run, and the runs table over HTTP
    for run in listing.runs:
        data.run_row(run), data.run_card(run), data.artifact_rows(run), data.span_rows(run)
        data.metric_names([run]), data.params_rows([run])
    table_html = _runs_table_over_http(base_dir)
    assert "good" in table_html and (listed or f"Skipped {victim.dir.name}/" in table_html)


def _runs_table_over_http(base_dir: Path) -> str:
    """POST the runs-table callback to the UI's Flask server, as the browser does."""
    from runtel.ui import create_app

    outputs = [
        ("runs-table", "children"),
        ("notes", "children"),
        ("selected", "options"),
        ("f-project", "options"),
        ("f-status", "options"),
        ("f-tag", "options"),
        ("selected", "value"),
    ]
    inputs = [
        ("url", "search", ""),
        ("tick", "data", None),
        ("f-project", "value", []),
        ("f-status", "value", []),
        ("f-tag", "value", []),
        ("f-name", "value", ""),
        ("sort-key", "value", "start"),
        ("sort-desc", "value", []),
        ("selected", "value", []),
    ]
    body = {
        "output": ".." + "...".join(f"{i}.{p}" for i, p in outputs) + "..",
        "outputs": [{"id": i, "property": p} for i, p in outputs],
        "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
        "changedPropIds": [],
        "state": [],
    }
    client = create_app(base_dir).server.test_client()
    response = client.post("/_dash-update-component", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    return json.dumps(response.get_json(), ensure_ascii=False)


def test_a_torn_events_line_is_skipped_and_reported(runs: dict[str, StoredRun], base_dir: Path) -> None:
    victim = runs["victim"]
    before = [type(record).__name__ for record in victim.events()]
    _append_events(b'{"type": "params", "params": {"k": "\xc3')(victim, Path())
    assert [type(record).__name__ for record in victim.events()] == before
    assert problems(victim) == ["events.jsonl ends in a torn line of 37 bytes (ignored)"]
    from runtel.exporters.tensorboard import TensorBoardExporter
    from runtel.replay import export_run

    report = export_run(victim, TensorBoardExporter(log_dir=str(base_dir.parent / "tb")))
    assert report["points"] == 2 and report["problems"] == problems(victim)
    with runtel.init(resume=victim.id, base_dir=str(base_dir)) as resumed:
        resumed.log({"loss": 0.25})
    assert problems(victim) == []
    assert [type(record).__name__ for record in victim.events()][: len(before)] == before
    assert victim.history("loss")[2].tolist() == [1.0, 0.5, 0.25]


def test_an_event_artifact_path_is_never_followed(
    runs: dict[str, StoredRun], secret: Path, tmp_path: Path
) -> None:
    """The record names /…/secret.txt; export sends the stored, verified version instead."""
    from runtel.exporters.tensorboard import TensorBoardExporter
    from runtel.replay import export_run

    victim = runs["victim"]
    _event_artifact_path(victim, secret)
    export_run(victim, TensorBoardExporter(log_dir=str(tmp_path / "tb")))
    (copied,) = (
        path for path in (tmp_path / "tb").rglob("*") if path.is_file() and "artifacts" in path.parts
    )
    assert copied.read_bytes() == b"weights of victim"


def test_the_error_names_the_file_and_the_field(runs: dict[str, StoredRun], base_dir: Path) -> None:
    victim = runs["victim"]
    _metadata("start_time", "yesterday")(victim, Path())
    with pytest.raises(StoreCorruptError) as caught:
        runtel.Store(base_dir).run(victim.id)
    assert caught.value.path == str(victim.dir / "metadata.json") and caught.value.field == "start_time"
    assert "is a string, not a number" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_stored_run_loads_artifact_versions(base_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "model.pt"
    with runtel.init(project="p", name="art", base_dir=str(base_dir)) as run:
        for content in (b"first", b"second"):
            source.write_bytes(content)
            run.log_artifact(str(source))
    stored = runtel.Store(base_dir).run("art")
    versions = stored.artifacts()["model.pt"]
    assert [(item.version, item.size) for item in versions] == [(1, 5), (2, 6)]
    assert Path(stored.artifact("model.pt", 1).path).read_bytes() == b"first"
    assert Path(stored.artifact("model.pt").path).read_bytes() == b"second"
    assert Path(stored.artifact("model.pt").path).is_relative_to(stored.dir)


def test_a_zombie_writer_shows_crashed(base_dir: Path, tmp_path: Path) -> None:
    """A writer killed by SIGKILL and not yet reaped by its parent is a zombie: not a live writer."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    ready = tmp_path / "ready"
    code = (
        "import pathlib, sys, time, runtel\n"
        f"run = runtel.init(project='p', name='zombie', base_dir={str(base_dir)!r})\n"
        "run.log({'x': 1.0})\n"
        f"pathlib.Path({str(ready)!r}).write_text(run.id)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ})
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        run = runtel.Store(base_dir).run(ready.read_text())
        assert run.status == "running"
        os.kill(child.pid, signal.SIGKILL)
        while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.01)
        assert run.status == "crashed"
        assert scan(base_dir).runs[0].status == "crashed"
    finally:
        child.kill()
        child.wait()


def test_garbled_series_bytes_are_named_and_never_exported(
    runs: dict[str, StoredRun], base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    victim = runs["victim"]
    series = _series_file(victim)
    garbled = bytearray(series.read_bytes())
    garbled[17] ^= 0xFF  # inside the first record's time
    series.write_bytes(bytes(garbled))
    (problem,) = problems(victim)
    assert problem.startswith(f"series 'loss' ({series.name}) is damaged at bytes 0-") and "CRC" in problem
    log_dir = tmp_path / "tb"
    code = main(
        ["export", "--all", "--to", "tensorboard", "--log-dir", str(log_dir), "--base-dir", str(base_dir)]
    )
    err = capsys.readouterr().err
    assert code == 1 and "StoreCorruptError" in err and "is damaged at bytes" in err
    assert any(log_dir.glob("good_*/events.out.tfevents.*")) and not any(log_dir.glob("victim_*"))
