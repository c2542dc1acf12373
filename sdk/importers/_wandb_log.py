"""The framing of a W&B transaction log (``run-<id>.wandb``), decoded into wandb's own protobuf records.

wandb's Go core writes LevelDB's log format (32 KiB blocks of chunks; a chunk is a CRC-32 of its
type byte and payload, a little-endian uint16 length and the type byte; a record is one FULL chunk
or FIRST, MIDDLE..., LAST) after a 7-byte header ``:W&B``, 0xBEE1, version 0. The installed
wandb ships no Python reader of the framing, so it is read here; each record is parsed by
``wandb.proto.wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from runtel.errors import ConfigError

_BLOCK = 32 * 1024
_CHUNK = struct.Struct("<IHB")
_HEADER = struct.Struct("<4sHB")
_FULL, _FIRST, _LAST = 1, 2, 4


class TornLog(Exception):
    """The log ends in a damaged or half-written chunk; every record before it was read."""


def records(path: Path) -> Iterator[Any]:
    """Every record in order; ``ConfigError`` for a file that is not a W&B log, ``TornLog`` at a torn tail."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    if len(data) < _HEADER.size or _HEADER.unpack_from(data, 0) != (b":W&B", 0xBEE1, 0):
        raise ConfigError(f"{str(path)!r} is not a W&B transaction log (its header is not ':W&B')")
    position = _HEADER.size
    pending: list[bytes] = []
    while position + _CHUNK.size <= len(data):
        left = _BLOCK - position % _BLOCK
        if left < _CHUNK.size:
            position += left
            continue
        checksum, length, kind = _CHUNK.unpack_from(data, position)
        start = position + _CHUNK.size
        payload = data[start : start + length]
        if kind == 0 and length == 0:  # zero padding of the last, partly written block
            return
        if len(payload) < length or zlib.crc32(payload, zlib.crc32(bytes([kind]))) != checksum:
            raise TornLog(f"damaged chunk at byte {position} of {path.name}")
        position = start + length
        if kind in (_FULL, _FIRST):
            pending = []
        pending.append(payload)
        if kind in (_FULL, _LAST):
            record: Any = pb.Record()  # type: ignore[attr-defined]
            record.ParseFromString(b"".join(pending))
            yield record
