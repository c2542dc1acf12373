"""Comparison UI and CLI figures: first chart of a 1,000,000-point run, server memory, ``runtel ls``
of 1,000 runs, the media section of a run with 2,000 images (first image shown, a slider move).

Run with ``python bench/bench_ui.py [--points N] [--runs N] [--loads N] [--images N]``; needs the
``[ui]`` extra, Playwright for Python and Debian's ``chromium`` (never ``playwright install``). The UI
is served by ``runtel ui`` in its own process, so its RSS is the server's alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
from _common import fmt_s, log, machine_table, md_table

#: Design targets (docs/design.md section 5).
TARGET_FIRST_CHART_S = 2.0
TARGET_LS_S = 1.0
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
CHART = "#charts .dash-graph .scatterlayer .trace"
#: True once the media panel's image is decoded and differs from ``previous`` (a src, or null).
IMAGE_SHOWN = """previous => {
    const image = document.querySelector('.media-run img');
    return image !== null && image.complete && image.naturalWidth > 0
        && image.getAttribute('src') !== previous;
}"""


def _big_run(base: Path, points: int) -> str:
    import runtel

    values = np.sin(np.arange(points) / 5000.0)
    values[points // 2 + 1234] = 50.0
    with runtel.init(project="bench", name="big", base_dir=str(base), system_interval=0) as run:
        for step, value in enumerate(values.tolist()):
            run.log({"signal": value}, step=step)
        return run.id


def _many_runs(base: Path, count: int) -> None:
    """``count`` run folders: one real run, copied with a fresh id and name each time."""
    import runtel

    with runtel.init(
        project="bench", name="seed", base_dir=str(base), config={"lr": 0.1}, system_interval=0
    ) as run:
        for step in range(100):
            run.log({"train/loss": 1.0 / (step + 1), "val/acc": step / 100}, step=step)
        seed = run.dir
    for number in range(1, count):
        run_id = uuid.uuid4().hex
        target = base / f"run-{number}_{run_id[:8]}"
        shutil.copytree(seed, target)
        metadata = json.loads((target / "metadata.json").read_text())
        metadata.update(id=run_id, trace_id=run_id, experiment_id=run_id, name=f"run-{number}")
        (target / "metadata.json").write_text(json.dumps(metadata))


def _start_ui(base: Path) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "runtel.cli", "ui", "--base-dir", str(base), "--port", "0"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "runtel UI at" in line:
            return process, line.split("runtel UI at ")[1].split()[0]
    raise RuntimeError("runtel ui exited before printing its address")


def bench_first_chart(base: Path, run_id: str, loads: int) -> dict[str, float]:
    """Seconds from navigation to the chart's SVG trace (first load in a fresh browser, then warm), RSS."""
    from playwright.sync_api import sync_playwright

    process, url = _start_ui(base)
    server = psutil.Process(process.pid)
    try:
        idle_rss = server.memory_info().rss
        peak_rss = idle_rss
        times: list[float] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for _ in range(loads + 1):
                started = time.perf_counter()
                page.goto(f"{url}?runs={run_id}")
                page.locator(CHART).first.wait_for(timeout=60_000)
                times.append(time.perf_counter() - started)
                peak_rss = max(peak_rss, server.memory_info().rss)
                log(f"first chart {times[-1]:.3f} s, server RSS {server.memory_info().rss / 2**20:.0f} MiB")
            points = page.evaluate(
                "() => document.querySelector('#charts .js-plotly-plot')._fullData[0].x.length"
            )
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
    return {
        "cold_s": times[0],
        "warm_s": statistics.median(times[1:]),
        "idle_mib": idle_rss / 2**20,
        "delta_mib": (peak_rss - idle_rss) / 2**20,
        "points_sent": float(points),
    }


def _media_run(base: Path, images: int) -> str:
    """One run logging a 64x64 RGB image at each of ``images`` steps, through the real API."""
    import runtel

    rng = np.random.default_rng(0)
    with runtel.init(project="bench", name="gallery", base_dir=str(base), system_interval=0) as run:
        for step in range(images):
            pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            run.log_image("samples", pixels, step=step, caption=f"sample {step}")
        return run.id


def bench_media(base: Path, run_id: str, loads: int, moves: int) -> dict[str, float]:
    """Seconds from navigation to the media panel's image decoded (fresh browser, then warm), media
    requests per load, a slider move to the image shown, and the server's index of the run."""
    from playwright.sync_api import sync_playwright

    from runtel.store.query import StoredRun
    from runtel.ui import media_data

    process, url = _start_ui(base)
    try:
        times: list[float] = []
        requested: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on(
                "request",
                lambda request: requested.append(request.url) if "/_runtel/media/" in request.url else None,
            )
            for _ in range(loads + 1):
                requested.clear()
                started = time.perf_counter()
                page.goto(f"{url}?runs={run_id}")
                page.wait_for_function(IMAGE_SHOWN, arg=None, timeout=60_000)
                times.append(time.perf_counter() - started)
                log(f"media section {times[-1]:.3f} s, {len(requested)} media requests")
            per_load = len(requested)
            slider = page.locator(".media-panel").first.get_by_role("slider")
            steps: list[float] = []
            for _ in range(moves):
                shown = page.evaluate("() => document.querySelector('.media-run img').getAttribute('src')")
                started = time.perf_counter()
                slider.press("ArrowLeft")
                page.wait_for_function(IMAGE_SHOWN, arg=shown, timeout=60_000)
                steps.append(time.perf_counter() - started)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=10)
    run = next(StoredRun(folder) for folder in base.iterdir() if folder.name.endswith(run_id[:8]))
    index_times = []
    for _ in range(5):
        media_data._indexed.cache_clear()
        started = time.perf_counter()
        media_data.run_media(run)
        index_times.append(time.perf_counter() - started)
    started = time.perf_counter()
    media_data.run_media(run)
    cached = time.perf_counter() - started
    return {
        "cold_s": times[0],
        "warm_s": statistics.median(times[1:]),
        "requests": float(per_load),
        "move_s": statistics.median(steps),
        "index_s": statistics.median(index_times),
        "cached_s": cached,
    }


def bench_ls(base: Path, trials: int) -> dict[str, float]:
    """``runtel ls``: in-process (listing + table), and as a command (interpreter start included)."""
    import contextlib
    import io

    from runtel.cli import main

    inside, command = [], []
    for _ in range(trials):
        started = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            main(["ls", "--base-dir", str(base)])
        inside.append(time.perf_counter() - started)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "runtel.cli", "ls", "--base-dir", str(base), "--json"],
            check=True,
            capture_output=True,
        )
        command.append(time.perf_counter() - started)
    return {"inside_s": statistics.median(inside), "command_s": statistics.median(command)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--loads", type=int, default=5, help="warm page loads after the first")
    parser.add_argument("--images", type=int, default=2_000, help="images (one per step) of the media run")
    parser.add_argument("--moves", type=int, default=10, help="slider moves timed in the media section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="runtel-bench-ui-") as scratch:
        big_store, many_store, media_store = (
            Path(scratch, "big"),
            Path(scratch, "many"),
            Path(scratch, "media"),
        )
        log(f"logging {args.images:,} images ...")
        media = bench_media(media_store, _media_run(media_store, args.images), args.loads, args.moves)
        log(f"logging a {args.points:,}-point run ...")
        run_id = _big_run(big_store, args.points)
        chart = bench_first_chart(big_store, run_id, args.loads)
        log(f"writing {args.runs:,} runs ...")
        _many_runs(many_store, args.runs)
        listing = bench_ls(many_store, trials=5)
    print(machine_table())
    rows = [
        [
            "first chart, fresh browser (navigation → SVG trace)",
            fmt_s(chart["cold_s"]),
            f"< {TARGET_FIRST_CHART_S} s",
        ],
        [
            f"first chart, warm browser (median of {args.loads})",
            fmt_s(chart["warm_s"]),
            f"< {TARGET_FIRST_CHART_S} s",
        ],
        ["points sent for the chart", f"{chart['points_sent']:,.0f} of {args.points:,}", "a few thousand"],
        ["server RSS idle", f"{chart['idle_mib']:.0f} MiB", ""],
        ["server RSS increase while serving it", f"{chart['delta_mib']:.0f} MiB", ""],
        [f"`runtel ls` of {args.runs:,} runs, in process", fmt_s(listing["inside_s"]), f"< {TARGET_LS_S} s"],
        [f"`runtel ls --json` of {args.runs:,} runs, as a command", fmt_s(listing["command_s"]), ""],
        [
            f"media section of a run with {args.images:,} images, fresh browser (navigation → image decoded)",
            fmt_s(media["cold_s"]),
            f"< {TARGET_FIRST_CHART_S} s",
        ],
        [f"media section, warm browser (median of {args.loads})", fmt_s(media["warm_s"]), ""],
        [
            "media files requested per page load",
            f"{media['requests']:.0f} of {args.images:,}",
            "the step shown",
        ],
        [f"slider move to the next image decoded (median of {args.moves})", fmt_s(media["move_s"]), ""],
        [f"server: index of {args.images:,} media records (events.jsonl read)", fmt_s(media["index_s"]), ""],
        ["server: the index again, log unchanged", f"{media['cached_s'] * 1e6:.0f} µs", ""],
    ]
    print(md_table(["figure", "measured", "target"], rows))


if __name__ == "__main__":
    main()
