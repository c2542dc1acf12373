"""The Run's media methods: ``log_image``, ``log_table``, ``log_text``, ``log_audio`` and media in ``log``.

A call validates, copies (inside the :mod:`runtel.media` constructors), stamps step, time and span and
queues one :class:`~runtel.store._media_writer.PendingMedia` in order with the points; the flush
thread encodes and writes it. ``run.log`` reaches :meth:`MediaLogging._log_with_media` only once a
value failed to coerce to a float (where it raised before), so scalar logging costs what it did.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from runtel._values import check_name, check_step, coerce_value
from runtel.errors import InvalidMediaError, InvalidNameError
from runtel.media import MEDIA_TYPES, Audio, Image, Media, Table, Text, as_media_items, owned_image
from runtel.store._media_writer import MediaWriter, PendingMedia


def holds_media(values: tuple[Any, ...]) -> bool:
    """Whether a ``log`` call's values hold an Image, Table, Text, Audio or a gallery of them."""
    for value in values:
        if isinstance(value, MEDIA_TYPES):
            return True
        if type(value) in (list, tuple) and value and isinstance(value[0], MEDIA_TYPES):
            return True
    return False


class MediaLogging:
    """Mixed into :class:`runtel.Run`; uses its queue, steps and span like ``log`` does."""

    _last_step: int
    _silent: bool
    _span_id: int
    _series_ids: dict[str, int]
    _media_names: dict[str, str]
    _media: MediaWriter
    _owner_pid: int
    _wake: threading.Event

    if TYPE_CHECKING:  # Run's own

        def log(
            self, metrics: Mapping[str, Any], step: int | None = None, *, all_ranks: bool = False
        ) -> None: ...
        def _check_open(self) -> None: ...
        def _implicit_step(self) -> int: ...
        def _log_at(self, metrics: Mapping[str, Any], at: int, all_ranks: bool) -> None: ...
        def _explicit_step(self, at: int) -> None: ...
        def _emit(self, record: Any) -> None: ...
        @property
        def step(self) -> int: ...

    def log_image(self, name: str, data: Any, step: int | None = None, caption: str | None = None) -> None:
        """An image (numpy HWC/CHW/HW, torch tensor, PIL image, path or matplotlib figure) at ``step``
        (default: the current step). A list of images is a gallery. uint8 is stored as PNG, any other
        dtype exactly as ``.npy`` with a PNG preview."""
        items = tuple(_gallery(data, caption))
        self._queue_media(name, items, self._media_step(step), all_ranks=False)

    def log_table(
        self, name: str, data: Any, columns: Sequence[str] | None = None, step: int | None = None
    ) -> None:
        """A table (pandas or polars DataFrame, list of rows with ``columns``, or list of dicts) at
        ``step`` (default: the current step), column types and every cell kept."""
        item = data if isinstance(data, Table) else Table(data, columns)
        self._queue_media(name, (item,), self._media_step(step), all_ranks=False)

    def log_text(self, name: str, text: str, step: int | None = None, caption: str | None = None) -> None:
        """A text (UTF-8) at ``step`` (default: the current step)."""
        item = text if isinstance(text, Text) else Text(text, caption)
        self._queue_media(name, (item,), self._media_step(step), all_ranks=False)

    def log_audio(
        self, name: str, waveform: Any, sample_rate: int, step: int | None = None, caption: str | None = None
    ) -> None:
        """A waveform (1-D mono; 2-D numpy (frames, channels), 2-D torch (channels, frames) as
        torchaudio lays it out) at ``sample_rate`` Hz, at ``step`` (default: the current step); stored
        as WAV (exact for int16/int32/uint8 PCM, else with an exact ``.npy``)."""
        item = Audio(waveform, sample_rate, caption)
        self._queue_media(name, (item,), self._media_step(step), all_ranks=False)

    def _log_with_media(self, metrics: Mapping[str, Any], step: int | None, all_ranks: bool) -> None:
        """``log`` of a call holding media: the scalars as usual, each media value at the same step."""
        scalars: dict[str, Any] = {}
        media: list[tuple[str, tuple[Media, ...]]] = []
        for key, value in metrics.items():
            items = as_media_items(key, value) if isinstance(key, str) else None
            if items is None:
                scalars[key] = value
            else:
                media.append((self._check_media_name(key, register=False), items))
        for key, value in scalars.items():  # the scalars' errors come before any step is taken
            coerce_value(check_name(key), value)
        at = self._take_step(step)
        if scalars:
            self._log_at(scalars, at, all_ranks)
        for name, items in media:
            self._queue_media(name, items, at, all_ranks=all_ranks)

    def _take_step(self, step: int | None) -> int:
        """The step of a ``log`` call, handed out as ``log`` does (implicit: previous + 1)."""
        if step is None:
            return self._implicit_step()
        at = check_step(step)
        self._explicit_step(at)
        return at

    def _media_step(self, step: int | None) -> int:
        self._check_open()
        return self.step if step is None else check_step(step)

    def _queue_media(self, name: str, items: tuple[Media, ...], at: int, *, all_ranks: bool) -> None:
        self._check_open()
        name = self._check_media_name(name)
        if self._silent and not all_ranks:
            return
        nbytes = sum(map(_nbytes, items))
        if os.getpid() == self._owner_pid:  # a forked child's queue drops what it is given
            self._media.reserve(nbytes, self._wake.set)
        self._emit(PendingMedia(name, at, time.time(), self._span_id, items, nbytes))

    def _check_media_name(self, name: object, *, register: bool = True) -> str:
        """A media key: a safe relative name (exporters write files by it) that is no metric's name;
        ``register`` makes it a media key of the run (once the whole call is known to be valid)."""
        from runtel.store.artifacts import check_artifact_name

        if isinstance(name, str) and name in self._media_names:
            return name
        try:
            check_artifact_name(name)
        except ValueError as exc:
            raise InvalidNameError(str(exc).replace("artifact name", "media name")) from None
        assert isinstance(name, str)
        if name in self._series_ids:
            raise InvalidNameError(
                f"media name {name!r} is already a metric of this run; give the media another name"
            )
        if register:
            self._media_names[name] = name
        return name


def _nbytes(item: Media) -> int:
    """About what the copy of ``item`` holds in memory until the flush has encoded it."""
    if isinstance(item, Image):
        return item.array.nbytes if item.array is not None else len(item.source or b"")
    if isinstance(item, Audio):
        return int(item.waveform.nbytes)
    if isinstance(item, Text):
        return len(item.text.encode("utf-8"))
    cells = [cell for row in item.rows for cell in row] if item.frame is None else _frame_images(item)
    images = sum(_nbytes(cell) for cell in cells if isinstance(cell, Image))
    return 64 * item.row_count * len(item.columns) + images


def _frame_images(table: Table) -> list[Any]:
    """The Image cells of a DataFrame's object columns (a polars frame holds none)."""
    frame = table.frame
    if not type(frame).__module__.startswith("pandas"):
        return []
    columns = [frame.iloc[:, i] for i in range(len(table.columns)) if frame.dtypes.iloc[i].kind == "O"]
    return [cell for column in columns for cell in column.tolist() if isinstance(cell, Image)]


def _gallery(data: Any, caption: str | None) -> Iterator[Image]:
    if isinstance(data, Image):
        yield data
    elif isinstance(data, list | tuple):
        if not data:
            raise InvalidMediaError("log_image got an empty list; a gallery needs at least one image")
        for item in data:
            yield item if isinstance(item, Image) else owned_image(item, caption)
    else:
        yield owned_image(data, caption)


__all__ = ["MediaLogging", "holds_media"]
