"""Atomic file writes: every file difface writes goes through `atomic_write_bytes` (a reader sees the old
file or the new one, never a part). Imports nothing of difface: any layer may use it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["atomic_write_bytes"]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to `path` through a temporary file in the same folder and an atomic rename.

    The temporary file is created with mode 0o666, so the process's umask gives it the permissions of any
    new file (read from nowhere, changed nowhere: no process-wide state is touched)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
            break
        except FileExistsError:  # pragma: no cover - a 48-bit name collision
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
