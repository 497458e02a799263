"""Planning and checking outputs, and the per-input outcome every pipeline returns.

Rules: the result for IN/name.ext is OUT/name.png (OUT/name.mp4 for a video); a name taken by an
earlier input gets the input's extension appended (`name_jpg.png`) and the outcome says so; an
output that would overwrite an input is refused; the output folder (and the sub-folders a run
writes into) is checked writable before any model is loaded.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from difface.config import OptionError
from difface.video.io import is_video_path


@dataclass(frozen=True)
class Job:
    """One input and where its result goes; `note` tells of a renamed output."""

    src: Path
    dst: Path
    note: str = ""


@dataclass(frozen=True)
class Outcome:
    """What became of one input: ok (written) or failed with a reason; notes are for the user.

    faces: faces restored (whole photos; 1 for an aligned face); skipped: faces left as they were;
    kept: the output existed and was kept, not remade (`skip_existing`).
    """

    src: Path
    dst: Path | None
    ok: bool
    reason: str = ""
    faces: int = 0
    skipped: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    seconds: float = 0.0
    kept: bool = False


def output_suffix(src: Path) -> str:
    """.mp4 for videos (difface.video), .png for images."""
    return ".mp4" if is_video_path(src) else ".png"


def plan_outputs(inputs: list[Path], outdir: Path) -> tuple[list[Job], list[Outcome]]:
    """Jobs for the inputs, and failed outcomes for those whose output would overwrite an input."""
    jobs, refused, used = [], [], set()
    sources = {p.resolve() for p in inputs}
    for src in inputs:
        suffix = output_suffix(src)
        name, note = f"{src.stem}{suffix}", ""
        if name in used:
            alt = f"{src.stem}_{src.suffix.lstrip('.').lower()}{suffix}"
            k = 2
            while alt in used:
                alt, k = f"{src.stem}_{src.suffix.lstrip('.').lower()}{k}{suffix}", k + 1
            note = f"written as {alt} because {name} is the output of another input"
            name = alt
        used.add(name)
        dst = outdir / name
        if dst.resolve() in sources:
            refused.append(Outcome(src, None, False, f"output {dst} would overwrite an input; choose another -o"))
            continue
        jobs.append(Job(src, dst, note))
    return jobs, refused


def keep_existing(jobs: list[Job]) -> tuple[list[Job], list[Outcome]]:
    """Split off the jobs whose output file exists (`--skip-existing`): outputs are written atomically and
    last (after a photo's crops and comparison), so an existing one is a complete result of an earlier
    run. Returns (jobs still to do, kept outcomes)."""
    todo, kept = [], []
    for job in jobs:
        if job.dst.is_file():
            kept.append(Outcome(job.src, job.dst, True, kept=True))
        else:
            todo.append(job)
    return todo, kept


def check_writable(outdir: Path, subdirs: tuple[str, ...] = ()) -> None:
    """Raise OptionError("-o", ...) unless `outdir` (created if needed) and those of its `subdirs` that
    exist accept files (the others are made when first written to)."""
    for d in (outdir, *(outdir / s for s in subdirs)):
        if d.exists() and not d.is_dir():
            raise OptionError("-o", f"{d} exists and is not a folder")
        if d != outdir and not d.exists():
            continue
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".difface-write-test-", dir=d)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise OptionError("-o", f"cannot write into {d} ({e.strerror or e})") from None
