"""``runtel tag``, ``note``, ``rename`` and ``rm``: editing stored runs after the fact.

Safe while the run is being written: edits are appended to the run's ``edits.jsonl``, which the live
writer never touches. Nothing here asks a question, so scripts can call it: ``rm`` moves the run to
``<base_dir>/.trash/`` (and prints how to move it back); only ``rm --permanent --yes`` removes it.
"""

from __future__ import annotations

import argparse
import os
import shlex
from typing import Any

from runtel.errors import ConfigError


def register(commands: Any) -> None:
    """Add ``tag``, ``note``, ``rename`` and ``rm`` to ``commands`` (an argparse sub-parser set)."""
    tag = commands.add_parser("tag", help="add (+name) and remove (-name) tags of a run")
    tag.add_argument("run", help="run id, 8+ character id prefix, folder or name")
    # REMAINDER: argparse would take ``-draft`` for an option
    tag.add_argument(
        "changes",
        nargs=argparse.REMAINDER,
        metavar="+TAG|-TAG",
        help="+tag adds, -tag removes, a bare tag adds",
    )
    _common(tag, tag_run)

    note = commands.add_parser("note", help="set the free-text note of a run ('' clears it)")
    note.add_argument("run", help="run id, 8+ character id prefix, folder or name")
    note.add_argument("text", help="the note (quote it)")
    _common(note, note_run)

    rename = commands.add_parser("rename", help="change the display name of a run (its folder and id stay)")
    rename.add_argument("run", help="run id, 8+ character id prefix, folder or name")
    rename.add_argument("new_name", help="the new display name")
    _common(rename, rename_run)

    rm = commands.add_parser("rm", help="move runs to the store's .trash folder (--permanent --yes: delete)")
    rm.add_argument("runs", nargs="+", help="run ids, 8+ character id prefixes, folders or names")
    rm.add_argument("--permanent", action="store_true", help="delete for good instead (needs --yes)")
    rm.add_argument("--yes", action="store_true", help="confirm --permanent (there are no prompts)")
    _common(rm, remove_runs)


def _common(parser: argparse.ArgumentParser, handler: Any) -> None:
    parser.add_argument(
        "--base-dir", default=None, help="store folder (default: runtel_runs, RUNTEL_BASE_DIR)"
    )
    parser.set_defaults(handler=handler)


def tag_run(args: argparse.Namespace) -> int:
    add: list[str] = []
    remove: list[str] = []
    changes = list(args.changes)
    while "--base-dir" in changes:  # given after the tags, where REMAINDER took it
        at = changes.index("--base-dir")
        if at + 1 >= len(changes):
            raise ConfigError("--base-dir needs a folder")
        args.base_dir = changes[at + 1]
        del changes[at : at + 2]
    if not changes:
        raise ConfigError("give tags to change: runtel tag RUN +add -remove")
    for change in changes:
        if change.startswith("-"):
            remove.append(change[1:])
        else:
            add.append(change[1:] if change.startswith("+") else change)
    run = _open(args)
    run.tags.update(add=add, remove=remove)
    print(f"{run.name} ({run.id[:8]}): tags {', '.join(run.tags) or '(none)'}")
    return 0


def note_run(args: argparse.Namespace) -> int:
    run = _open(args)
    run.set_note(args.text)
    print(f"{run.name} ({run.id[:8]}): note {'set' if args.text else 'cleared'}")
    return 0


def rename_run(args: argparse.Namespace) -> int:
    run = _open(args)
    old = run.name
    run.rename(args.new_name)
    print(f"{old} ({run.id[:8]}) is now named {run.name} (folder {run.dir.name} unchanged)")
    return 0


def remove_runs(args: argparse.Namespace) -> int:
    from runtel.cli_commands import open_run, open_store

    if args.permanent and not args.yes:
        raise ConfigError("rm --permanent deletes the run folders for good: add --yes to confirm")
    store = open_store(args.base_dir)
    runs = [
        open_run(store, key, unique=True) for key in args.runs
    ]  # every key resolved before anything moves
    for run in runs:
        original = run.dir
        moved = store.delete(run, permanent=args.permanent)
        if moved is None:
            print(f"{run.name} ({run.id[:8]}): deleted")
        else:
            back = f"mv {shlex.quote(str(moved))} {shlex.quote(str(original))}"
            print(f"{run.name} ({run.id[:8]}): moved to {moved}{os.linesep}  restore with: {back}")
    return 0


def _open(args: argparse.Namespace) -> Any:
    from runtel.cli_commands import open_run, open_store

    return open_run(open_store(args.base_dir), args.run, unique=True)
