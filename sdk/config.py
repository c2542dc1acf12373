"""Run settings: keyword arguments first, then ``RUNTEL_*`` environment variables, then defaults.

Every knob is listed once in :data:`ENVIRONMENT` (documented in docs/configuration.md);
a bad value raises :class:`runtel.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from runtel._values import encodable
from runtel.errors import ConfigError

#: Unwritten points the store keeps in memory while it cannot write (about 32 bytes each: 64 MiB).
DEFAULT_STORE_BACKLOG_POINTS = 2_000_000
#: Bounds of the stored console output and uncommitted diff (docs/reproducibility.md).
DEFAULT_CONSOLE_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_DIFF_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Settings:
    base_dir: str = "runtel_runs"
    project: str = "default"
    name: str | None = None
    exporters: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    flush_interval: float = 1.0
    system_interval: float = 10.0
    queue_size: int = 256
    queue_block_timeout: float = 2.0
    export_timeout: float = 30.0
    export_retries: int = 3
    heartbeat_interval: float = 5.0
    global_otel: bool = False
    run_id: str | None = None
    log_all_ranks: bool = False
    store_backlog_points: int = DEFAULT_STORE_BACKLOG_POINTS
    capture_environment: bool = True
    capture_git: bool = True
    capture_diff: bool = True
    diff_max_bytes: int = DEFAULT_DIFF_MAX_BYTES
    capture_packages: bool = True
    console: bool = True
    console_max_bytes: int = DEFAULT_CONSOLE_MAX_BYTES


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _parse_nonneg_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError(f"expected a number >= 0, got {raw!r}")
    return value


def _parse_pos_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError(f"expected an integer >= 1, got {raw!r}")
    return value


def _parse_run_id(raw: str) -> str:
    value = raw.strip().lower()
    if len(value) != 32 or any(char not in "0123456789abcdef" for char in value) or set(value) == {"0"}:
        raise ValueError("expected 32 hexadecimal characters (an OpenTelemetry trace id)")
    return value


#: field name -> (environment variable, parser, description)
ENVIRONMENT: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "base_dir": ("RUNTEL_BASE_DIR", str, "Folder holding run folders."),
    "project": ("RUNTEL_PROJECT", str, "Project name when init() gets none."),
    "name": ("RUNTEL_NAME", str, "Run name when init() gets none (default: generated)."),
    "exporters": ("RUNTEL_EXPORTERS", _parse_list, "Comma-separated exporter names besides the local store."),
    "tags": ("RUNTEL_TAGS", _parse_list, "Comma-separated tags for the run."),
    "flush_interval": ("RUNTEL_FLUSH_INTERVAL", _parse_nonneg_float, "Seconds between background flushes."),
    "system_interval": (
        "RUNTEL_SYSTEM_INTERVAL",
        _parse_nonneg_float,
        "Seconds between system samples; 0 = off.",
    ),
    "queue_size": ("RUNTEL_QUEUE_SIZE", _parse_pos_int, "Batches queued per exporter before it blocks."),
    "queue_block_timeout": (
        "RUNTEL_QUEUE_BLOCK_TIMEOUT",
        _parse_nonneg_float,
        "Seconds the flush thread waits on a full exporter queue before marking that exporter failed.",
    ),
    "export_timeout": ("RUNTEL_EXPORT_TIMEOUT", _parse_nonneg_float, "Seconds finish() waits per exporter."),
    "export_retries": ("RUNTEL_EXPORT_RETRIES", int, "Retries of a failing export (with back-off)."),
    "heartbeat_interval": ("RUNTEL_HEARTBEAT_INTERVAL", _parse_nonneg_float, "Seconds between heartbeats."),
    "global_otel": (
        "RUNTEL_GLOBAL_OTEL",
        _parse_bool,
        "Also install the run's tracer and meter providers as OpenTelemetry's global ones.",
    ),
    "run_id": (
        "RUNTEL_RUN_ID",
        _parse_run_id,
        "Run id (32 hex) to resume after preemption, or to give a new run; resume= in init() is the same.",
    ),
    "log_all_ranks": (
        "RUNTEL_LOG_ALL_RANKS",
        _parse_bool,
        "In a distributed job, record run.log() of every rank, not only rank 0's.",
    ),
    "store_backlog_points": (
        "RUNTEL_STORE_BACKLOG_POINTS",
        _parse_pos_int,
        "Unwritten points the local store keeps in memory while it cannot write (disk full); past it the "
        "oldest are dropped, counted and reported.",
    ),
    "capture_environment": (
        "RUNTEL_CAPTURE_ENVIRONMENT",
        _parse_bool,
        "Write environment.json (command, cwd, Python, platform, host, torch/CUDA, git, packages); "
        "false turns off the whole capture.",
    ),
    "capture_git": (
        "RUNTEL_CAPTURE_GIT",
        _parse_bool,
        "Record the git commit, branch, remote and dirty flag.",
    ),
    "capture_diff": (
        "RUNTEL_CAPTURE_DIFF",
        _parse_bool,
        "Store the uncommitted diff of tracked files as the artifact diff.patch.",
    ),
    "diff_max_bytes": (
        "RUNTEL_DIFF_MAX_BYTES",
        _parse_pos_int,
        "Bytes of the diff stored; past it the diff is cut, with a closing line and a warning saying so.",
    ),
    "capture_packages": (
        "RUNTEL_CAPTURE_PACKAGES",
        _parse_bool,
        "Store the installed distributions as the artifact requirements.txt (pip-freeze format).",
    ),
    "console": (
        "RUNTEL_CONSOLE",
        _parse_bool,
        "Tee file descriptors 1 and 2 (print, logging, C-level writes, subprocesses) into output.log.",
    ),
    "console_max_bytes": (
        "RUNTEL_CONSOLE_MAX_BYTES",
        _parse_pos_int,
        "Bytes of output.log: past it the first half and a rolling tail are kept, with a marker line "
        "counting what was left out.",
    ),
}


def resolve_settings(overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from keyword ``overrides`` (None means unset), falling back to the environment."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for spec in fields(Settings):
        given = overrides.get(spec.name)
        if given is not None:
            values[spec.name] = given
            continue
        variable, parse, _ = ENVIRONMENT[spec.name]
        raw = env.get(variable)
        if raw is None:
            continue
        try:
            values[spec.name] = parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{variable}={raw!r} is invalid: {exc}") from None
    unknown = set(overrides) - {spec.name for spec in fields(Settings)}
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(ENVIRONMENT)}")
    _check_stored_text(values)
    return Settings(**values)


def _check_stored_text(values: Mapping[str, Any]) -> None:
    """Project, name and tags are written to ``metadata.json``: refuse what UTF-8 cannot hold (a name
    read from bytes with ``surrogateescape``) now, before a folder exists."""
    for key in ("project", "name", "tags"):
        value = values.get(key)
        for text in value if isinstance(value, tuple | list) else (value,):
            if isinstance(text, str) and not encodable(text):
                raise ConfigError(
                    f"{key} {text!r} (from init() or {ENVIRONMENT[key][0]}) contains a lone surrogate and "
                    "cannot be stored as UTF-8; decode the bytes it came from with a real encoding"
                )
