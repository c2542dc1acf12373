"""System metrics: real psutil, real OpenTelemetry SDK, sampled on the reader's thread."""

from __future__ import annotations

import math
import multiprocessing
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runtel.errors import ConfigError
from runtel.system import SystemMetrics, _parse_cuda_visible_devices, _series_name, _visible_positions

CORE_SERIES = ("system/cpu.utilization", "system/memory.used", "system/process.memory.rss")
BYTE_COUNTERS = (
    "system/disk.read_bytes",
    "system/disk.write_bytes",
    "system/network.sent_bytes",
    "system/network.recv_bytes",
)


class Samples:
    """Records every ``on_sample`` call with the thread that made it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[int, float, dict[str, float]]] = []

    def __call__(self, unix_time: float, sample: dict[str, float]) -> None:
        with self.lock:
            self.calls.append((threading.get_ident(), unix_time, sample))

    def count(self) -> int:
        with self.lock:
            return len(self.calls)

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.count() < n and time.monotonic() < deadline:
            time.sleep(0.02)


@pytest.fixture(scope="module")
def periodic_run() -> Samples:
    """A 3-second run sampled every 0.5 s, shared by the tests that read its samples."""
    samples = Samples()
    system = SystemMetrics(0.5, samples)
    system.start()
    time.sleep(3.0)
    system.shutdown()
    return samples


@pytest.fixture
def started() -> Iterator[tuple[SystemMetrics, Samples]]:
    """A started SystemMetrics whose interval is too long to tick during a test."""
    samples = Samples()
    system = SystemMetrics(60.0, samples)
    system.start()
    yield system, samples
    system.shutdown()


def nvml_works() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_periodic_sampling_delivers_at_least_five_samples(periodic_run: Samples) -> None:
    assert periodic_run.count() >= 5
    for _, _, sample in periodic_run.calls:
        assert set(CORE_SERIES) <= sample.keys()


def test_periodic_samples_arrive_on_a_thread_other_than_the_callers(periodic_run: Samples) -> None:
    threads = {thread for thread, _, _ in periodic_run.calls}
    assert threading.get_ident() not in threads
    assert threading.main_thread().ident not in threads


def test_periodic_samples_are_timestamped_in_order(periodic_run: Samples) -> None:
    times = [unix_time for _, unix_time, _ in periodic_run.calls]
    assert times == sorted(times)
    assert abs(times[-1] - time.time()) < 60


def test_sample_values_are_sane(periodic_run: Samples) -> None:
    for _, _, sample in periodic_run.calls:
        assert 0 <= sample["system/cpu.utilization"] <= 100
        assert sample["system/memory.used"] > 0
        assert sample["system/memory.available"] > 0
        assert sample["system/process.memory.rss"] > 0
        assert sample["system/process.threads"] >= 2  # this thread and the reader's
        per_cpu = [v for k, v in sample.items() if k.startswith("system/cpu.utilization/cpu")]
        assert per_cpu and all(0 <= v <= 100 for v in per_cpu)


def test_disk_and_network_bytes_count_up_from_zero(periodic_run: Samples) -> None:
    for series in BYTE_COUNTERS:
        values = [sample[series] for _, _, sample in periodic_run.calls]
        assert values[0] >= 0
        assert values == sorted(values)


def test_first_periodic_cpu_reading_covers_the_whole_interval() -> None:
    """The reader thread's first reading measures the interval, not the instant since its own first call."""
    samples = Samples()
    system = SystemMetrics(0.3, samples)
    system.start()
    deadline = time.monotonic() + 2.0
    while samples.count() == 0 and time.monotonic() < deadline:  # keep one CPU busy meanwhile
        pass
    system.shutdown()
    assert samples.calls[0][2]["system/cpu.utilization"] > 0


def test_sample_now_returns_the_periodic_keys_and_delivers_them(
    periodic_run: Samples, started: tuple[SystemMetrics, Samples]
) -> None:
    system, samples = started
    sample = system.sample_now()
    assert sample.keys() == periodic_run.calls[-1][2].keys()
    assert samples.calls == [(threading.get_ident(), samples.calls[0][1], sample)]


def test_shutdown_is_idempotent_and_stops_sampling() -> None:
    samples = Samples()
    system = SystemMetrics(0.1, samples)
    system.start()
    samples.wait_for(1, timeout=2.0)
    system.shutdown()
    system.shutdown()
    delivered = samples.count()
    time.sleep(0.4)
    assert delivered >= 1
    assert samples.count() == delivered
    assert system.sample_now() == {}


def test_start_after_shutdown_is_refused() -> None:
    system = SystemMetrics(1.0, Samples())
    system.shutdown()
    with pytest.raises(RuntimeError, match="shut down"):
        system.start()


def test_a_forked_child_does_not_sample() -> None:
    """OTel restarts the reader thread in a forked child (a DataLoader worker); it must deliver nothing."""
    samples = Samples()
    system = SystemMetrics(0.1, samples)
    system.start()
    context = multiprocessing.get_context("fork")
    result = context.Queue()

    def child() -> None:
        before = samples.count()
        time.sleep(0.5)
        result.put((samples.count() - before, system.sample_now()))

    process = context.Process(target=child)
    process.start()
    delivered_in_child, sampled_now = result.get(timeout=10)
    process.join(timeout=10)
    system.shutdown()
    assert (delivered_in_child, sampled_now) == (0, {})


def test_gpu_series_have_sane_values_with_nvml_and_are_absent_without(
    started: tuple[SystemMetrics, Samples],
) -> None:
    """Runs either way: on a GPU machine it checks every GPU series of gpu0, elsewhere their absence."""
    system, _ = started
    sample = {name: value for name, value in system.sample_now().items() if "gpu" in name}
    if not nvml_works():
        assert sample == {}
        return
    assert 0 <= sample["system/gpu.utilization/gpu0"] <= 100
    assert 0 < sample["system/gpu.memory.used/gpu0"] <= sample["system/gpu.memory.total/gpu0"]
    assert sample["system/gpu.power/gpu0"] > 0
    assert 0 < sample["system/gpu.temperature/gpu0"] < 120
    import torch

    if torch.cuda.is_available():
        held = torch.ones(1 << 20, device="cuda:0")  # 4 MiB held by torch on gpu0
        after = system.sample_now()
        assert after["system/torch.cuda.allocated/gpu0"] >= held.numel() * 4
        assert after["system/torch.cuda.reserved/gpu0"] >= after["system/torch.cuda.allocated/gpu0"]


@pytest.mark.parametrize("interval", [0, -1.0, math.nan, math.inf])
def test_interval_must_be_positive_and_finite(interval: float) -> None:
    with pytest.raises(ConfigError, match="RUNTEL_SYSTEM_INTERVAL=0"):
        SystemMetrics(interval, Samples())


@pytest.mark.parametrize(
    ("value", "devices"),
    [
        (None, None),
        ("0,2", (0, 2)),
        ("GPU-abc", ("GPU-abc",)),
        ("", ()),
        ("-1", ()),
        ("1, 0", (1, 0)),
        ("1,-1,0", (1,)),
    ],
)
def test_cuda_visible_devices_parsing(value: str | None, devices: tuple[int | str, ...] | None) -> None:
    assert _parse_cuda_visible_devices(value) == devices


UUIDS = ["GPU-aaa111", "GPU-bbb222", "GPU-ccc333"]  # NVML's positions 0, 1, 2


@pytest.mark.parametrize(
    ("visible", "positions"),
    [
        (None, [0, 1, 2]),
        ((2, 0), [2, 0]),  # CUDA_VISIBLE_DEVICES=2,0: cuda:0 is NVML's GPU 2, so gpu0 reports it
        (("GPU-bbb",), [1]),  # a UUID prefix
        ((1, 7, 0), [1]),  # CUDA stops at the first entry naming no device
        (("GPU-zzz", 0), []),
        ((), []),
    ],
)
def test_visible_gpus_map_to_nvml_positions_in_cuda_order(
    visible: tuple[int | str, ...] | None, positions: list[int]
) -> None:
    assert _visible_positions(visible, UUIDS) == positions


@pytest.mark.parametrize(
    ("instrument", "attributes", "series"),
    [
        ("system.cpu.utilization", {}, "system/cpu.utilization"),
        ("system.cpu.utilization", {"cpu.logical_number": 3}, "system/cpu.utilization/cpu3"),
        ("system.memory.usage", {"system.memory.state": "used"}, "system/memory.used"),
        ("system.network.io", {"network.io.direction": "transmit"}, "system/network.sent_bytes"),
        (
            "hw.power",
            {"hw.type": "gpu", "hw.id": "GPU-1", "hw.name": "H100", "runtel.gpu.index": 1},
            "system/gpu.power/gpu1",
        ),
        ("torch.cuda.memory.reserved", {"runtel.gpu.index": 0}, "system/torch.cuda.reserved/gpu0"),
    ],
)
def test_series_names(instrument: str, attributes: dict[str, object], series: str) -> None:
    assert _series_name(instrument, attributes) == series


def test_a_run_records_system_series_on_the_sampler_thread(tmp_path: Path) -> None:
    import runtel

    with runtel.init(project="sys", base_dir=str(tmp_path), system_interval=0.5) as run:
        for step in range(30):
            run.log({"loss": 1.0 / (step + 1)})
            time.sleep(0.1)
        immediate = run.sample_system()
    stored = runtel.Store(tmp_path).run(run.id)
    steps, _, cpu = stored.history("system/cpu.utilization")
    assert cpu.size >= 5
    assert ((cpu >= 0) & (cpu <= 100)).all()
    assert (stored.history("system/memory.used")[2] > 0).all()
    assert "system/cpu.utilization" in immediate
    assert steps.min() >= 0 and steps.max() <= 29
    assert any(name.startswith("system/gpu") for name in stored.metrics()) == nvml_works()


def test_system_instruments_have_the_kinds_the_conventions_give() -> None:
    from runtel import system

    kinds: dict[str, tuple[str, object]] = {}

    class Recording(system._SampleExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            for resource_metrics in metrics_data.resource_metrics:
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        kinds[metric.name] = (
                            type(metric.data).__name__,
                            getattr(metric.data, "is_monotonic", None),
                        )
            return super().export(metrics_data, timeout_millis, **kwargs)

    sampler = system.SystemMetrics(60, lambda when, values: None)
    sampler._exporter = Recording(lambda when, values: None)
    sampler.start()
    sample = sampler.sample_now()
    sampler.shutdown()
    assert kinds["system.network.io"] == ("Sum", True)  # counters of cumulative bytes
    assert kinds["system.memory.usage"] == ("Sum", False)  # up-down counters of memory in use
    assert kinds["process.memory.usage"] == ("Sum", False)
    assert kinds["system.cpu.utilization"] == ("Gauge", None)
    assert sample["system/memory.used"] > 0 and "system/network.sent_bytes" in sample
