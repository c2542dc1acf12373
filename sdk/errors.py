"""Exceptions raised by runtel.

Each error subclasses the built-in type a caller would expect (``TypeError`` for a
wrong type, ``ValueError`` for a bad value), so ``except ValueError`` keeps working,
and every message names the offending key or value and how to fix it.
"""

from __future__ import annotations


class RuntelError(Exception):
    """Base class of every error runtel raises on purpose."""


class InvalidMetricError(RuntelError, TypeError):
    """A metric value is not a real scalar (str, None, list, multi-element tensor...)."""


class InvalidNameError(RuntelError, ValueError):
    """A metric, parameter or artifact name is empty, too long, or not allowed."""


class InvalidStepError(RuntelError, ValueError):
    """A step is negative, not an integer, or out of range."""


class InvalidParamError(RuntelError, TypeError):
    """A hyperparameter value cannot be stored as JSON."""


class InvalidValueError(RuntelError, ValueError):
    """A metric value cannot be stored exactly (e.g. an int beyond 2**53)."""


class InvalidMediaError(RuntelError, TypeError, ValueError):
    """An image, table, text or audio value has a wrong type (a ``TypeError``) or a bad shape, dtype,
    sample rate or cell (a ``ValueError``)."""


class RunFinishedError(RuntelError, RuntimeError):
    """The run has already finished; start a new run or resume this one."""


class RunForkedError(RuntelError, RuntimeError):
    """A forked child (a DataLoader worker, a multiprocessing fork) tried to write files into its
    parent's run; the run belongs to the process that started it."""


class RunStillRunningError(RuntelError, RuntimeError):
    """The run's writer is still alive; finish it before deleting it."""


class RunNotFoundError(RuntelError, KeyError):
    """No run in the store matches the given id or name."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class MetricNotFoundError(RuntelError, KeyError):
    """The run has no series with the given metric name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(RuntelError, ValueError):
    """A keyword argument or ``RUNTEL_*`` environment variable has a bad value."""


class ArtifactError(RuntelError, ValueError):
    """An artifact name is unsafe, a source path is missing, or a stored file failed its checksum."""


class ChecksumMismatchError(ArtifactError):
    """A stored artifact no longer matches the SHA-256 recorded when it was logged."""


class MissingExtraError(RuntelError, ImportError):
    """An optional backend is not installed; the message names the ``pip install runtel[...]`` to run."""


class StoreWriteError(RuntelError, OSError):
    """The local store could not write a run's data: ``path`` and ``errno`` say where and why.

    Raised by ``init()`` when the run folder cannot be created or written, and by ``finish()``
    when points or records logged during the run are not in the store (the disk stayed full,
    the backlog limit was passed, or a record could not be encoded).
    """

    def __init__(self, message: str, *, path: str, errno: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.errno = errno
        self.filename = path

    def __str__(self) -> str:  # OSError would print "[Errno ...] strerror: filename" instead
        return str(self.args[0])


class PortInUseError(ConfigError):
    """A server was asked for a port another process holds; the message names it and the way out."""


class AlreadyExportedError(RuntelError, FileExistsError):
    """The target already holds this run: a second export would duplicate or merge into it.

    ``detail`` says where; the message adds how to replace it from Python (``remedy``), and
    ``runtel export`` says ``--force`` instead.
    """

    def __init__(self, detail: str, *, remedy: str) -> None:
        super().__init__(f"{detail}; {remedy}")
        self.detail = detail


class StoreCorruptError(RuntelError, ValueError):
    """A run folder holds a file or field runtel cannot trust: wrong type, path outside, missing file.

    ``path`` is the damaged file and ``field`` the field inside it (None for the whole file), so a
    listing can name the reason and skip that one folder.
    """

    def __init__(self, path: object, field: str | None, problem: str) -> None:
        where = f"{path}: field {field!r}" if field is not None else f"{path}"
        super().__init__(f"{where} {problem}; the run folder is damaged or was not written by runtel")
        self.path = str(path)
        self.field = field
        self.problem = problem
