"""System metrics as OpenTelemetry observable gauges, sampled on a background thread.

Every sensor is an observable instrument named after the OTel semantic conventions, of the kind
they give it (counters for disk/network bytes, up-down counters for memory and threads in use,
gauges for utilisation, power and temperature), registered on a
``MeterProvider`` owned by :class:`SystemMetrics` (never the global one). Its
``PeriodicExportingMetricReader`` collects every ``interval`` seconds on the reader's own thread and
hands the points to a small exporter that flattens them into ``{series: value}`` for ``on_sample``.
The training thread only pays for construction and ``start()``.

Series names follow one rule: ``system/<quantity>[/<device>]``. ``<quantity>`` is a short name for
the instrument plus its state or direction attribute (table below); ``<device>`` is ``cpu<N>`` for
a logical CPU and ``gpu<N>`` for the N-th GPU *this process* sees (CUDA's numbering, as ``cuda:N``).
Utilisations are 0-1 ratios in OTel (unit ``1``, as the conventions say) and 0-100 percent in the
series; everything else keeps its OTel unit.

==================================  ================================================  =====
series                              OTel instrument {attributes}                      unit
==================================  ================================================  =====
system/cpu.utilization              system.cpu.utilization (mean of all CPUs)         %
system/cpu.utilization/cpu<N>       system.cpu.utilization {cpu.logical_number}       %
system/memory.used                  system.memory.usage {system.memory.state=used}    By
system/memory.available             system.memory.linux.available (psutil available)  By
system/process.memory.rss           process.memory.usage                              By
system/process.threads              process.thread.count                              {thread}
system/disk.read_bytes              system.disk.io {disk.io.direction=read}           By
system/disk.write_bytes             system.disk.io {disk.io.direction=write}          By
system/network.sent_bytes           system.network.io {network.io.direction=transmit} By
system/network.recv_bytes           system.network.io {network.io.direction=receive}  By
system/gpu.utilization/gpu<N>       hw.gpu.utilization {hw.type=gpu}                  %
system/gpu.memory.used/gpu<N>       hw.gpu.memory.usage {hw.type=gpu}                 By
system/gpu.memory.total/gpu<N>      hw.gpu.memory.limit {hw.type=gpu}                 By
system/gpu.power/gpu<N>             hw.power {hw.type=gpu}                            W
system/gpu.temperature/gpu<N>       hw.temperature {hw.type=gpu}                      Cel
system/torch.cuda.allocated/gpu<N>  torch.cuda.memory.allocated                       By
system/torch.cuda.reserved/gpu<N>   torch.cuda.memory.reserved                        By
==================================  ================================================  =====

Disk and network bytes are cumulative since the object was constructed (all disks, all network
interfaces including loopback). GPU points also carry ``hw.id`` (the NVML UUID) and ``hw.name``.
A sensor that is missing or fails yields no series and is logged once at debug level.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psutil
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Gauge,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
    Sum,
)
from opentelemetry.sdk.resources import Resource

from runtel.errors import ConfigError

__all__ = ["SystemMetrics"]

_LOGGER = logging.getLogger("runtel")
_SHUTDOWN_TIMEOUT_MILLIS = 5_000

OnSample = Callable[[float, dict[str, float]], None]
_Callback = Callable[[CallbackOptions], Iterable[Observation]]

# Attributes that pick the quantity of a series, and those that name its device.
_QUALIFIER_KEYS = ("system.memory.state", "disk.io.direction", "network.io.direction", "hw.type")
_DEVICE_KEYS = {"cpu.logical_number": "cpu", "runtel.gpu.index": "gpu"}
_GPU = "gpu"


@dataclass(frozen=True, slots=True)
class _GaugeSpec:
    """One observable instrument: its OTel identity and kind, and the series quantity per qualifier.

    ``kind`` follows the semantic conventions: ``counter`` for cumulative totals (disk and network
    bytes), ``updown`` for amounts in use that rise and fall (memory, threads), ``gauge`` for
    readings (utilisation, power, temperature).
    """

    name: str
    unit: str
    description: str
    quantities: Mapping[str | None, str]
    kind: Literal["gauge", "counter", "updown"] = "gauge"


_GAUGES = (
    _GaugeSpec("system.cpu.utilization", "1", "CPU busy time over the interval.", {None: "cpu.utilization"}),
    _GaugeSpec("system.memory.usage", "By", "Memory in use by state.", {"used": "memory.used"}, "updown"),
    _GaugeSpec(
        "system.memory.linux.available",
        "By",
        "Memory available without swapping.",
        {None: "memory.available"},
        "updown",
    ),
    _GaugeSpec(
        "process.memory.usage",
        "By",
        "Resident set size of this process.",
        {None: "process.memory.rss"},
        "updown",
    ),
    _GaugeSpec(
        "process.thread.count", "{thread}", "Threads of this process.", {None: "process.threads"}, "updown"
    ),
    _GaugeSpec(
        "system.disk.io",
        "By",
        "Disk bytes transferred since sampling began.",
        {"read": "disk.read_bytes", "write": "disk.write_bytes"},
        "counter",
    ),
    _GaugeSpec(
        "system.network.io",
        "By",
        "Network bytes transferred since sampling began.",
        {"transmit": "network.sent_bytes", "receive": "network.recv_bytes"},
        "counter",
    ),
    _GaugeSpec("hw.gpu.utilization", "1", "Fraction of time the GPU was busy.", {_GPU: "gpu.utilization"}),
    _GaugeSpec("hw.gpu.memory.usage", "By", "GPU memory used.", {_GPU: "gpu.memory.used"}, "updown"),
    _GaugeSpec("hw.gpu.memory.limit", "By", "GPU memory size.", {_GPU: "gpu.memory.total"}, "updown"),
    _GaugeSpec("hw.power", "W", "Power drawn by the GPU.", {_GPU: "gpu.power"}),
    _GaugeSpec("hw.temperature", "Cel", "GPU core temperature.", {_GPU: "gpu.temperature"}),
    _GaugeSpec(
        "torch.cuda.memory.allocated",
        "By",
        "Memory held by torch tensors.",
        {None: "torch.cuda.allocated"},
        "updown",
    ),
    _GaugeSpec(
        "torch.cuda.memory.reserved",
        "By",
        "Memory held by torch's caching allocator.",
        {None: "torch.cuda.reserved"},
        "updown",
    ),
)
_QUANTITIES = {
    (spec.name, qualifier): quantity for spec in _GAUGES for qualifier, quantity in spec.quantities.items()
}


def series_unit(series: str) -> str | None:
    """The unit of a ``system/...`` series as the module docstring's table gives it (``By``, ``%``...)."""
    parts = series.split("/")
    if len(parts) < 2 or parts[0] != "system":
        return None
    for spec in _GAUGES:
        if parts[1] in spec.quantities.values():
            return "%" if spec.unit == "1" else spec.unit
    return None


def _series_name(instrument: str, attributes: Mapping[str, Any]) -> str:
    """The runtel series for one OTel point: ``system/<quantity>[/<device>]`` (see the module docstring)."""
    qualifier = next((str(attributes[key]) for key in _QUALIFIER_KEYS if key in attributes), None)
    name = "system/" + _QUANTITIES[(instrument, qualifier)]
    for key, prefix in _DEVICE_KEYS.items():
        if key in attributes:
            name += f"/{prefix}{attributes[key]}"
    return name


def _parse_cuda_visible_devices(value: str | None) -> tuple[int | str, ...] | None:
    """The devices named by ``CUDA_VISIBLE_DEVICES``, in CUDA's order; ``None`` when unset (all visible).

    Entries are indexes or ``GPU-<uuid>`` prefixes. As in CUDA, the first entry that is neither
    (``-1``, an empty string) ends the list, so ``""`` and ``"-1"`` hide every GPU.
    """
    if value is None:
        return None
    devices: list[int | str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if entry.isdigit():
            devices.append(int(entry))
        elif entry.startswith("GPU-"):
            devices.append(entry)
        else:
            break
    return tuple(devices)


def _busy_and_total(times: Any) -> tuple[float, float]:
    """Busy and total seconds of one ``psutil.cpu_times()`` entry; iowait counts as idle."""
    # Linux already counts guest time inside user and nice.
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0), total


def _fraction(busy: float, total: float) -> float:
    return min(max(busy / total, 0.0), 1.0) if total > 0 else 0.0


class _DebugOnce:
    """Logs each failing sensor once at debug level: a missing sensor is normal, not news every interval."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, sensor: str, error: Exception) -> None:
        if sensor not in self._seen:
            self._seen.add(sensor)
            _LOGGER.debug("system metrics: no %s series (%s)", sensor, error)


@dataclass(frozen=True, slots=True)
class _Gpu:
    index: int
    uuid: str
    name: str
    handle: Any


def _visible_positions(visible: tuple[int | str, ...] | None, uuids: Sequence[str]) -> list[int]:
    """NVML positions of the GPUs this process sees, in CUDA's order (``cuda:0`` first).

    ``visible`` is the parsed ``CUDA_VISIBLE_DEVICES`` (``None``: every GPU). NVML numbers GPUs in
    PCI bus order, which is CUDA's order on machines with one GPU model. As CUDA does, the list
    stops at the first entry that names no device.
    """
    wanted: Sequence[int | str] = range(len(uuids)) if visible is None else visible
    positions = []
    for entry in wanted:
        if isinstance(entry, int):
            position = entry if entry < len(uuids) else None
        else:
            position = next((i for i, uuid in enumerate(uuids) if uuid.startswith(entry)), None)
        if position is None:
            break
        positions.append(position)
    return positions


class _NvmlGpus:
    """NVML handles of the GPUs this process sees, opened on first use (on the reader thread)."""

    def __init__(self, visible: tuple[int | str, ...] | None, debug_once: _DebugOnce) -> None:
        self._visible = visible
        self._debug_once = debug_once
        self._lock = threading.Lock()
        self._nvml: Any = None
        self._gpus: tuple[_Gpu, ...] | None = None

    @property
    def nvml(self) -> Any:
        """The ``pynvml`` module; only meaningful once :meth:`devices` returned GPUs."""
        return self._nvml

    def devices(self) -> tuple[_Gpu, ...]:
        with self._lock:
            if self._gpus is None:
                try:
                    self._gpus = self._open()
                except Exception as exc:  # no pynvml, no driver, NVML error: no GPU series
                    self._debug_once("GPU", exc)
                    self._gpus = ()
            return self._gpus

    def _open(self) -> tuple[_Gpu, ...]:
        if self._visible == ():
            return ()
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
        self._nvml = nvml
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        uuids = [str(nvml.nvmlDeviceGetUUID(handle)) for handle in handles]
        return tuple(
            _Gpu(index, uuids[position], str(nvml.nvmlDeviceGetName(handles[position])), handles[position])
            for index, position in enumerate(_visible_positions(self._visible, uuids))
        )

    def close(self) -> None:
        with self._lock:
            if self._gpus:
                try:
                    self._nvml.nvmlShutdown()
                except Exception as exc:
                    _LOGGER.debug("system metrics: nvmlShutdown failed (%s)", exc)
            self._gpus = ()


class _Sensors:
    """The callbacks of every gauge; each one yields nothing rather than raise."""

    def __init__(self, visible_gpus: tuple[int | str, ...] | None) -> None:
        self._pid = os.getpid()
        self._debug_once = _DebugOnce()
        self._gpus = _NvmlGpus(visible_gpus, self._debug_once)
        self._process = psutil.Process(self._pid)
        # Baselines, so the first sample covers the first interval and byte counts start at zero.
        self._cpu_lock = threading.Lock()
        self._cpu_last = self._baseline(
            "system.cpu.utilization", lambda: [_busy_and_total(t) for t in psutil.cpu_times(percpu=True)]
        )
        self._disk_start = self._baseline("system.disk.io", psutil.disk_io_counters)
        self._network_start = self._baseline("system.network.io", psutil.net_io_counters)

    def _baseline(self, sensor: str, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except Exception as exc:
            self._debug_once(sensor, exc)
            return None

    def callbacks(self) -> dict[str, _Callback]:
        """One guarded callback per gauge name in ``_GAUGES``."""
        readers: dict[str, Callable[[], list[Observation]]] = {
            "system.cpu.utilization": self._cpu,
            "system.memory.usage": lambda: [
                Observation(psutil.virtual_memory().used, {"system.memory.state": "used"})
            ],
            "system.memory.linux.available": lambda: [Observation(psutil.virtual_memory().available)],
            "process.memory.usage": lambda: [Observation(self._process.memory_info().rss)],
            "process.thread.count": lambda: [Observation(self._process.num_threads())],
            "system.disk.io": self._disk,
            "system.network.io": self._network,
            "hw.gpu.utilization": lambda: self._per_gpu(
                "hw.gpu.utilization", lambda nvml, h: nvml.nvmlDeviceGetUtilizationRates(h).gpu / 100
            ),
            "hw.gpu.memory.usage": lambda: self._per_gpu(
                "hw.gpu.memory.usage", lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).used
            ),
            "hw.gpu.memory.limit": lambda: self._per_gpu(
                "hw.gpu.memory.limit", lambda nvml, h: nvml.nvmlDeviceGetMemoryInfo(h).total
            ),
            "hw.power": lambda: self._per_gpu(
                "hw.power", lambda nvml, h: nvml.nvmlDeviceGetPowerUsage(h) / 1000
            ),
            "hw.temperature": lambda: self._per_gpu(
                "hw.temperature", lambda nvml, h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)
            ),
            "torch.cuda.memory.allocated": lambda: self._torch("memory_allocated"),
            "torch.cuda.memory.reserved": lambda: self._torch("memory_reserved"),
        }
        return {name: self._guard(name, read) for name, read in readers.items()}

    def _guard(self, sensor: str, read: Callable[[], list[Observation]]) -> _Callback:
        def callback(_options: CallbackOptions) -> Iterable[Observation]:
            if os.getpid() != self._pid:  # a forked child (DataLoader worker) must not sample
                return []
            try:
                return read()
            except Exception as exc:
                self._debug_once(sensor, exc)
                return []

        return callback

    def _cpu(self) -> list[Observation]:
        """Busy fraction of each CPU since the previous sample, whichever thread took it.

        Computed from ``cpu_times`` rather than ``psutil.cpu_percent``, whose baseline is kept per
        calling thread: priming it here would not prime the reader's thread.
        """
        with self._cpu_lock:
            now = [_busy_and_total(t) for t in psutil.cpu_times(percpu=True)]
            last, self._cpu_last = self._cpu_last, now
        if last is None or len(last) != len(now):  # no baseline, or CPUs came online: start over
            raise RuntimeError("no CPU time baseline yet")
        deltas = [
            (busy - busy0, total - total0) for (busy, total), (busy0, total0) in zip(now, last, strict=True)
        ]
        observations = [Observation(_fraction(sum(b for b, _ in deltas), sum(t for _, t in deltas)))]
        observations += [
            Observation(_fraction(b, t), {"cpu.logical_number": i}) for i, (b, t) in enumerate(deltas)
        ]
        return observations

    def _disk(self) -> list[Observation]:
        now = psutil.disk_io_counters()
        if now is None or self._disk_start is None:
            raise RuntimeError("psutil.disk_io_counters() found no disks")
        return [
            Observation(now.read_bytes - self._disk_start.read_bytes, {"disk.io.direction": "read"}),
            Observation(now.write_bytes - self._disk_start.write_bytes, {"disk.io.direction": "write"}),
        ]

    def _network(self) -> list[Observation]:
        now = psutil.net_io_counters()
        if now is None or self._network_start is None:
            raise RuntimeError("psutil.net_io_counters() found no interfaces")
        return [
            Observation(
                now.bytes_sent - self._network_start.bytes_sent, {"network.io.direction": "transmit"}
            ),
            Observation(now.bytes_recv - self._network_start.bytes_recv, {"network.io.direction": "receive"}),
        ]

    def _per_gpu(self, sensor: str, read: Callable[[Any, Any], float]) -> list[Observation]:
        """One point per visible GPU; a GPU that does not support the reading (NVML error) is skipped."""
        observations = []
        for gpu in self._gpus.devices():
            try:
                value = read(self._gpus.nvml, gpu.handle)
            except Exception as exc:
                self._debug_once(f"{sensor}/gpu{gpu.index}", exc)
                continue
            attributes: dict[str, str | int] = {
                "hw.type": _GPU,
                "hw.id": gpu.uuid,
                "hw.name": gpu.name,
                "runtel.gpu.index": gpu.index,
            }
            observations.append(Observation(value, attributes))
        return observations

    def _torch(self, stat: str) -> list[Observation]:
        """torch's allocator counters, only once the user's code has initialised CUDA.

        ``is_initialized()`` rather than ``is_available()``: the latter would initialise the CUDA driver
        from this thread in a process that never asked for it.
        """
        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_initialized():
            return []
        read = getattr(torch.cuda, stat)
        return [Observation(read(i), {"runtel.gpu.index": i}) for i in range(torch.cuda.device_count())]

    def close(self) -> None:
        if os.getpid() == self._pid:  # NVML state inherited through fork belongs to the parent
            self._gpus.close()


class _SampleExporter(MetricExporter):
    """Flattens each collection into ``{series: value}`` and hands it to ``on_sample``."""

    def __init__(self, on_sample: OnSample) -> None:
        super().__init__()
        self._on_sample = on_sample
        self._pid = os.getpid()
        self._closed = False
        self._local = threading.local()
        self._callback_failed = False

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self._closed or os.getpid() != self._pid:
            return MetricExportResult.SUCCESS
        sample: dict[str, float] = {}
        latest_nanos = 0
        for resource_metrics in metrics_data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if not isinstance(metric.data, Gauge | Sum):
                        continue
                    percent = metric.unit == "1"  # a 0-1 ratio in OTel, a percentage in runtel
                    for point in metric.data.data_points:
                        value = round(point.value * 100, 6) if percent else float(point.value)
                        sample[_series_name(metric.name, point.attributes or {})] = value
                        latest_nanos = max(latest_nanos, point.time_unix_nano)
        self._local.sample = sample
        if not sample:
            return MetricExportResult.SUCCESS
        try:
            self._on_sample(latest_nanos / 1e9, sample)
        except Exception:
            if not self._callback_failed:
                self._callback_failed = True
                _LOGGER.warning(
                    "system metrics: on_sample raised; later failures are not logged", exc_info=True
                )
            return MetricExportResult.FAILURE
        return MetricExportResult.SUCCESS

    def take_sample(self) -> dict[str, float]:
        """The sample this thread's last export produced, so ``sample_now`` gets its own collection."""
        sample: dict[str, float] = getattr(self._local, "sample", {})
        self._local.sample = {}
        return sample

    def close(self) -> None:
        """Stop delivering: the reader's final collection during shutdown reaches nobody."""
        self._closed = True

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.close()


class SystemMetrics:
    """Samples CPU, memory, disk, network, process and GPU metrics every ``interval`` seconds.

    ``on_sample(unix_time, {series: value})`` runs on the periodic reader's thread after each
    collection, and on the caller's thread only from :meth:`sample_now`. After :meth:`shutdown`
    returns it is never called again. In a forked child (e.g. a DataLoader worker) nothing is sampled.
    """

    def __init__(
        self,
        interval: float,
        on_sample: OnSample,
        *,
        resource_attributes: Mapping[str, Any] | None = None,
    ) -> None:
        if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
            raise ConfigError(
                f"system metrics interval must be a positive number of seconds, got {interval!r}; "
                "use system_interval=0 (or RUNTEL_SYSTEM_INTERVAL=0) on the run to turn system metrics off"
            )
        self._interval = float(interval)
        self._resource_attributes = dict(resource_attributes or {})
        self._exporter = _SampleExporter(on_sample)
        self._sensors = _Sensors(_parse_cuda_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES")))
        self._lock = threading.RLock()
        self._provider: MeterProvider | None = None
        self._reader: PeriodicExportingMetricReader | None = None
        self._shut_down = False
        self._pid = os.getpid()

    def start(self) -> None:
        """Begin periodic sampling; the first sample arrives one interval later. Idempotent."""
        with self._lock:
            if self._shut_down:
                raise RuntimeError("SystemMetrics was shut down; create a new one to sample again")
            if self._provider is not None:
                return
            from runtel import __version__  # here, not at import: runtel/__init__ may be importing us

            # The reader's thread starts here: OTel offers no way to attach a reader to a built provider.
            reader = PeriodicExportingMetricReader(
                self._exporter, export_interval_millis=self._interval * 1000
            )
            provider = MeterProvider(
                resource=Resource.create(self._resource_attributes),
                metric_readers=[reader],
                shutdown_on_exit=False,
            )
            meter = provider.get_meter("runtel.system", __version__)
            callbacks = self._sensors.callbacks()
            create = {
                "gauge": meter.create_observable_gauge,
                "counter": meter.create_observable_counter,
                "updown": meter.create_observable_up_down_counter,
            }
            for spec in _GAUGES:
                create[spec.kind](
                    spec.name, callbacks=[callbacks[spec.name]], unit=spec.unit, description=spec.description
                )
            self._provider, self._reader = provider, reader

    def sample_now(self) -> dict[str, float]:
        """Collect immediately on this thread, deliver the sample to ``on_sample`` and return it.

        Returns ``{}`` after :meth:`shutdown` and in a forked child;
        raises ``RuntimeError`` before :meth:`start`.
        """
        with self._lock:
            if self._shut_down or os.getpid() != self._pid:  # a forked child may hold OTel's locks
                return {}
            if self._reader is None:
                raise RuntimeError("call SystemMetrics.start() before sample_now()")
            try:
                self._reader.collect()
            except Exception as exc:  # a collect timeout; the sensors themselves never raise
                _LOGGER.debug("system metrics: collection failed (%s)", exc)
            return self._exporter.take_sample()

    def shutdown(self) -> None:
        """Stop the reader thread, waiting at most 5 s for a collection in progress.

        Idempotent and never raises, so it is safe in ``finally`` blocks and ``atexit`` handlers.
        """
        with self._lock:
            if self._shut_down:
                return
            self._shut_down = True
            self._exporter.close()
            try:
                if self._provider is not None:
                    self._provider.shutdown(timeout_millis=_SHUTDOWN_TIMEOUT_MILLIS)
                self._sensors.close()
            except Exception as exc:
                _LOGGER.debug("system metrics: shutdown failed (%s)", exc)
