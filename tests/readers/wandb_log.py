"""Read a W&B offline transaction log (``run-<id>.wandb``) back into protobuf records.

wandb 0.31 writes the file from its Go core and ships no Python reader. The format
(``core/pkg/leveldb/record.go`` and ``core/internal/stream/store.go`` in wandb) is
LevelDB's log: 32 KiB blocks of chunks, each chunk a 7-byte header (CRC-32/IEEE of the
type byte and payload, little-endian uint16 length, type byte) and a payload; a record
is one FULL chunk or FIRST, MIDDLE..., LAST. The file opens with a 7-byte header
(``:W&B``, magic 0xBEE1, version 0) that takes the first bytes of block 0. A block's
tail shorter than a chunk header is zero padding.
"""

from __future__ import annotations

import glob
import json
import math
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")
FILE_HEADER = struct.Struct("<4sHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def iter_records(path: str | Path) -> Iterator[pb.Record]:
    """Every record of the log in order; raises ``ValueError`` on a bad header or checksum."""
    data = Path(path).read_bytes()
    ident, magic, version = FILE_HEADER.unpack_from(data, 0)
    if (ident, magic, version) != (b":W&B", 0xBEE1, 0):
        raise ValueError(f"{path}: not a W&B transaction log (header {ident!r} {magic:#x} {version})")
    pos = FILE_HEADER.size
    pending: list[bytes] = []
    while pos + CHUNK_HEADER.size <= len(data):
        block_left = BLOCK_SIZE - pos % BLOCK_SIZE
        if block_left < CHUNK_HEADER.size:
            pos += block_left
            continue
        crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        start = pos + CHUNK_HEADER.size
        payload = data[start : start + length]
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc:
            raise ValueError(f"{path}: checksum mismatch in chunk at byte {pos}")
        pos = start + length
        if kind in (FULL, FIRST):
            pending = [payload]
        else:
            pending.append(payload)
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(pending))
            yield record


def _item_value(item: Any) -> Any:
    """A history/summary/config item's value, whichever of its encodings the writer used."""
    which = item.WhichOneof("value") if "value" in item.DESCRIPTOR.oneofs_by_name else None
    if which is not None and which != "value_json":
        return getattr(item, which)
    return json.loads(item.value_json, parse_constant=_json_constant)


def _json_constant(token: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[token]


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class WandbLog:
    """The parts of a run log the tests check: history rows by step, config, summary, exit."""

    run: pb.RunRecord | None = None
    history: dict[int, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    artifacts: list[pb.ArtifactRecord] = field(default_factory=list)
    record_types: list[str] = field(default_factory=list)


def read_log(path: str | Path) -> WandbLog:
    """Fold the log's records into history rows, the final config and the final summary."""
    log = WandbLog()
    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        log.record_types.append(kind or "")
        if kind == "run":
            log.run = record.run
            _update_config(log.config, record.run.config)
        elif kind == "config":
            _update_config(log.config, record.config)
        elif kind == "history":
            row = {_key(item): _item_value(item) for item in record.history.item}
            log.history[record.history.step.num] = row
        elif kind == "summary":
            for item in record.summary.update:
                log.summary[_key(item)] = _item_value(item)
            for item in record.summary.remove:
                log.summary.pop(_key(item), None)
        elif kind == "exit":
            log.exit_code = record.exit.exit_code
        elif kind == "artifact":
            log.artifacts.append(record.artifact)
    return log


def _update_config(config: dict[str, Any], record: pb.ConfigRecord) -> None:
    for item in record.update:
        config[_key(item)] = _item_value(item)
    for item in record.remove:
        config.pop(_key(item), None)


def read_finished_log(wandb_dir: str | Path, run_id: str, timeout: float = 15.0) -> WandbLog:
    """The offline run ``run_id`` under ``<wandb_dir>/wandb``, once wandb-core has closed its log.

    ``run.finish()`` returns before wandb-core closes the stream, and the log's last (partial)
    32 KiB block reaches the disk only at that close, a moment later.
    """
    (path,) = glob.glob(str(Path(wandb_dir) / "wandb" / f"offline-run-*-{run_id}" / f"run-{run_id}.wandb"))
    deadline = time.monotonic() + timeout
    while True:
        try:  # a chunk wandb-core is still writing fails its checksum until it is whole
            log = read_log(path)
        except ValueError:
            if time.monotonic() >= deadline:
                raise
        else:
            if log.exit_code is not None or time.monotonic() >= deadline:
                return log
        time.sleep(0.05)
