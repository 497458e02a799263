"""Checks of output paths that commands run before any work, so that a bad path is a usage error
(exit status 2) instead of a traceback after the work is done.

Each function returns None when the path can be written, else a message naming the option and the
path (and what is wrong with it). Folders that do not exist yet are fine when they can be created.
"""

from __future__ import annotations

import os
from pathlib import Path


def _creatable(path: Path, option: str, target: Path) -> str | None:
    """Problem with creating `path` (a file or folder that does not exist) below its nearest
    existing ancestor, or None."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{option} {target}: {parent} is a file, not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{option} {target}: cannot write into {parent} (permission denied)"
    return None


def output_file_problem(path: str | os.PathLike, option: str) -> str | None:
    """Why the file `path` (given with `option`) cannot be written, or None; '-' (stdout) is fine."""
    if str(path) == "-":
        return None
    p = Path(path)
    if p.is_dir():
        return f"{option} {p}: is a folder; give a file name (e.g. {p / 'out.json'})"
    # Files are replaced atomically (a temporary file and a rename): their folder must be writable.
    return _creatable(p, option, p)


def output_dir_problem(path: str | os.PathLike, option: str) -> str | None:
    """Why the folder `path` (given with `option`) cannot receive files, or None."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        return f"{option} {p}: is a file, not a folder"
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            return f"{option} {p}: cannot write into this folder (permission denied)"
        return None
    return _creatable(p, option, p)
