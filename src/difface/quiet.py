"""Keep the messages of C image libraries and PIL's warnings off the terminal; report them by file.

libpng and libjpeg write straight to the process's stderr (file descriptor 2) from C, without a
file name: "libpng error: IDAT: invalid stored block lengths", "Corrupt JPEG data: premature end
of data segment". PIL reports broken EXIF blocks through `warnings`. `read_image_quietly` reads an
image with both captured and says it itself, naming the file:

- a read that fails raises ImageReadError whose message ends with the library's reason;
- a read that succeeds despite a complaint logs one warning naming the file (once per file and
  process, so that training, which reads a file every epoch, does not repeat it).

`native_stderr_captured()` is the underlying context manager. It swaps file descriptor 2 for a
temporary file, so it is meant for the command line's single reading thread: output that another
thread writes to stderr meanwhile is captured too (and logged at debug level, not lost).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from difface.images import ImageReadError, LoadedImage, read_image

log = logging.getLogger(__name__)

_lock = threading.RLock()
_warned: set[str] = set()


@contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Send what C code writes to stderr into a list of lines (filled when the block ends).

    Where file descriptor 2 cannot be duplicated (closed, or an unusual platform), nothing is
    captured and the block runs as is.
    """
    lines: list[str] = []
    with _lock:
        try:
            saved = os.dup(2)
        except OSError:
            saved = None
        if saved is None:
            yield lines
            return
        try:
            with tempfile.TemporaryFile() as tmp:
                _flush_python_stderr()
                os.dup2(tmp.fileno(), 2)
                try:
                    yield lines
                finally:
                    os.dup2(saved, 2)
                    tmp.seek(0)
                    text = tmp.read().decode("utf-8", errors="replace")
                    lines.extend(s.strip() for s in text.splitlines() if s.strip())
        finally:
            os.close(saved)


def _flush_python_stderr() -> None:
    # Text that Python still buffers for the real stderr must go there, not into the capture.
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass


def read_image_quietly(path: str | os.PathLike) -> LoadedImage:
    """`difface.images.read_image` with the libraries' messages captured and reported by file name.

    Raises ImageReadError naming the file (and, when a library gave one, its reason).
    """
    path = Path(path)
    error: ImageReadError | None = None
    img = None
    with native_stderr_captured() as native, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            img = read_image(path)
        except ImageReadError as e:
            error = e
    notes = list(dict.fromkeys(native + [" ".join(str(w.message).split()) for w in caught]))
    for line in notes:
        log.debug("%s: %s", path, line)
    if error is not None:
        raise ImageReadError(f"{error}; {'; '.join(notes)}" if notes else str(error)) from error
    if notes and str(path) not in _warned:
        _warned.add(str(path))
        log.warning("warning: %s: read despite a decoder complaint: %s", path, "; ".join(notes))
    return img
