"""``runtel tag``, ``note``, ``rename`` and ``rm``: editing stored runs after the fact.

Safe while the run is being written: edits are appended to the run's ``edits.jsonl``, which the live
writer never touches. Nothing here asks a question, so scripts can call it: ``rm`` moves the run to
``<base_dir>/.trash/`` (and prints how to move it back); ``rm --yes`` removes it for good.
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

    rm = commands.add_parser("rm", help="move runs to the store's .trash folder (--yes: delete for good)")
    rm.add_argument("runs", nargs="+", help="run ids, 8+ character id prefixes, folders or names")
    rm.add_argument(
        "--yes",
        "--permanent",
        dest="permanent",
        action="store_true",
        help="delete the run folders for good instead of moving them to the trash (there are no prompts)",
    )
    _common(rm, remove_runs)


def _common(parser: argparse.ArgumentParser, handler: Any) -> None:
    parser.add_argument(
        "--base-dir", default=None, help="store folder (default: runtel_runs, RUNTEL_BASE_DIR)"
    )
    parser.set_defaults(handler=handler)


def tag_run(args: argparse.Namespace) -> int:
    add: list[str] = []
    remove: list[str] = []
    changes = _tag_changes(args)
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


def _tag_changes(args: argparse.Namespace) -> list[str]:
    """The ``+tag``/``-tag`` words after RUN, with the options given among them (where REMAINDER took
    them) applied to ``args``: ``--base-dir DIR`` and ``--base-dir=DIR``. After ``--`` every word is a
    change, so ``-- --draft`` removes the tag ``-draft``; before it, another ``--word`` is refused."""
    changes: list[str] = []
    words = iter(args.changes)
    for word in words:
        if word == "--":
            changes.extend(words)
        elif word == "--base-dir" or word.startswith("--base-dir="):
            folder = word.partition("=")[2] if "=" in word else next(words, None)
            if not folder:
                raise ConfigError("--base-dir needs a folder")
            args.base_dir = folder
        elif word.startswith("--"):
            raise ConfigError(
                f"unknown option {word!r} for runtel tag (the only option is --base-dir); to remove a "
                f"tag that starts with '-', put -- before the changes: runtel tag RUN -- {word}"
            )
        else:
            changes.append(word)
    return changes


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
