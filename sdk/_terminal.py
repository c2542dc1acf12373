"""Untrusted text made safe to print on a terminal: no escape sequences, no control characters.

A run's ``output.log`` and environment file are written by whatever the script printed (or by anyone
who can write the store): an OSC sequence there could retitle the terminal or set its clipboard
(OSC 52), a CSI one move the cursor over other output. :func:`plain` keeps newline and tab only.
"""

from __future__ import annotations

import re

#: CSI (``ESC [`` or its C1 form) with its parameters; OSC, DCS, SOS, PM and APC strings up to
#: their terminator (or the end); any other ``ESC`` plus its intermediate and final bytes.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
#: C0 controls but tab and newline, DEL and the C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
#: Anything :func:`plain` would change (ESC is a C0 control).
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def plain(text: str) -> str:
    """``text`` without terminal escape sequences and control characters (newline and tab kept)."""
    return _CONTROL.sub("", _SEQUENCE.sub("", text))


def plain_row(cells: tuple[str, ...]) -> tuple[str, ...]:
    """A table row with :func:`plain` applied to each cell; one search for the common clean row."""
    if _UNSAFE.search("".join(cells)) is None:
        return cells
    return tuple(plain(cell).replace("\n", " ").replace("\t", " ") for cell in cells)
