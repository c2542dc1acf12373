"""Credentials taken out of every message runtel stores or logs.

An exporter's exception text quotes what it was given (a tracking URI with a password, a request's
``Authorization`` header, an API key), and a run's traceback may show the same. Those texts reach
``summary.json``, ``runtel show``, the UI and log files, which travel further than the secrets should.
:func:`redact` replaces each credential with ``***``; the ``runtel`` logger redacts every record.

Recognised: userinfo in URLs (``http://user:pass@host``), ``Authorization:`` values and bearer tokens,
values of keys named like ``api_key``, ``token``, ``password`` or ``secret`` (``key=value``, query
strings, JSON and Python reprs), the values of environment variables so named (``WANDB_API_KEY``,
``NEPTUNE_API_TOKEN``, ``MLFLOW_TRACKING_PASSWORD``...) and secrets an exporter holds in attributes
so named (an ``api_key=`` or ``api_token=`` given to it, e.g. through ``exporter_options``).
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping

MASK = "***"
#: Shorter strings are too likely to occur by chance to be replaced wherever they appear.
_MIN_SECRET_LENGTH = 6
_KEY_WORDS = (
    r"(?:api[_-]?key|apikey|api[_-]?token|access[_-]?token|auth[_-]?token|refresh[_-]?token|token"
    r"|password|passwd|pwd|secret|client[_-]?secret)"
)
#: Names of variables and attributes holding a secret (not ``pwd``: ``PWD`` is the working directory).
_SECRET_NAME = re.compile(
    r"(?i)(?:api[_-]?key|apikey|token|password|passwd|secret|secret[_-]?key|credentials?)s?$"
)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@?#'\"]+@")
_VALUE = r"(?:\"[^\"]*\"|'[^']*'|[^\s&,;)}\]'\"]+)"
_AUTHORIZATION = re.compile(
    rf"(?i)(?P<key>\bauthorization['\"]?\s*[:=]\s*)(?P<kind>(?:bearer|basic|token|digest)\s+)?(?P<value>{_VALUE})"
)
_BEARER = re.compile(r"(?i)\b(?P<kind>bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_KEY_VALUE = re.compile(rf"(?i)(?P<key>\b[\w.-]*?{_KEY_WORDS}['\"]?\s*[:=]\s*)(?P<value>{_VALUE})")

_known: set[str] = set()
_known_lock = threading.Lock()


def redact(text: str) -> str:
    """``text`` with every credential it recognises replaced by ``***``."""
    if not text:
        return text
    for secret in sorted(_secrets(), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    text = _AUTHORIZATION.sub(lambda m: m["key"] + (m["kind"] or "") + _masked(m["value"]), text)
    text = _BEARER.sub(rf"\g<kind> {MASK}", text)
    return _KEY_VALUE.sub(lambda m: m["key"] + _masked(m["value"]), text)


def remember(secret: object) -> None:
    """Redact ``secret`` wherever it appears from now on (in this process)."""
    if isinstance(secret, str) and len(secret) >= _MIN_SECRET_LENGTH:
        with _known_lock:
            _known.add(secret)


def remember_held_by(holder: object) -> None:
    """Remember the secrets ``holder`` (an exporter) keeps in attributes named like ``_api_key``, or
    under such keys in a dict attribute (keyword arguments it passes on, e.g. ``init_kwargs``)."""
    for name, value in getattr(holder, "__dict__", {}).items():
        if _SECRET_NAME.search(name.rstrip("_")):
            remember(value)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str) and _SECRET_NAME.search(key):
                    remember(item)


class RedactingFilter(logging.Filter):
    """Redacts a record's message and traceback before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, redact(text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(logger: logging.Logger) -> None:
    """Make ``logger`` redact every record it emits (once)."""
    if not any(isinstance(item, RedactingFilter) for item in logger.filters):
        logger.addFilter(RedactingFilter())


def _masked(value: str) -> str:
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{quote}{MASK}{quote}"


def _secrets() -> set[str]:
    from_environment = {
        value
        for name, value in os.environ.items()
        if _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_LENGTH
    }
    with _known_lock:
        return from_environment | _known
