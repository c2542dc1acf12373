"""Names that become file or folder names must work on Linux, macOS and Windows alike.

Run folders are copied between machines, so a name that Linux accepts but Windows cannot create
(``CON``, ``a:b``, a trailing dot) or that macOS folds onto another (``é`` composed and decomposed,
``Model`` and ``model``) is refused before anything is written. Each part must also leave room for
what the store derives from it (``.v12_<part>.<32 hex>.tmp`` while a version is swapped in).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

#: Bytes the store adds to a name part in the longest file name it derives from it.
DERIVED_BYTES = 56
DEFAULT_NAME_MAX = 255
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')
_WINDOWS_DEVICES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"{port}{digit}" for port in ("COM", "LPT") for digit in "0123456789¹²³"}
)


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system holding ``folder`` accepts."""
    try:
        return min(DEFAULT_NAME_MAX, os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):  # the folder does not exist yet, or no pathconf here
        return DEFAULT_NAME_MAX


def part_rule(part: str, limit: int = DEFAULT_NAME_MAX) -> str | None:
    """The first portability rule the name part ``part`` breaks, in words, or None."""
    bad = sorted(_WINDOWS_FORBIDDEN.intersection(part))
    if bad:
        return f"{part!r} contains {''.join(bad)!r}, which Windows does not allow in file names"
    if part.endswith((".", " ")):
        return f"{part!r} ends with a dot or a space, which Windows drops from file names"
    if is_device_name(part):
        return f"{part!r} is a reserved device name on Windows"
    size = len(part.encode("utf-8"))
    if size > limit - DERIVED_BYTES:
        return (
            f"{part[:20]!r}... is {size} bytes in UTF-8; the file system allows {limit}-byte file names "
            f"and the store needs {DERIVED_BYTES} of them, so each '/'-separated part may have "
            f"{limit - DERIVED_BYTES}"
        )
    return None


def is_device_name(part: str) -> bool:
    """``CON``, ``nul.txt``, ``com1.tar.gz``: Windows opens a device for these, whatever the extension."""
    return part.split(".")[0].rstrip(" ").upper() in _WINDOWS_DEVICES


def collision_key(name: str) -> str:
    """What macOS and Windows would see: two names with the same key would be one file there."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", name).casefold())
