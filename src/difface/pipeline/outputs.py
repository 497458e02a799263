"""The records of the file loop (difface.pipeline.files, difface.pipeline.video): one input's job, its outcome,
and the reason a failed restoration gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from difface.pipeline.restoration import NonFiniteResult


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
    kept: the output existed and was kept, not remade (`skip_existing`); start_steps, changes and face_sides: per
    face restored, as ImageResult has them (difface.pipeline.summary sums them up for the run).
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
    start_steps: tuple[int, ...] = ()
    changes: tuple[float, ...] = ()
    face_sides: tuple[float, ...] = ()


def failure_reason(e: Exception) -> str:
    """The reason an Outcome gives for a restoration that raised `e` (out of memory: with what to try)."""
    if isinstance(e, NonFiniteResult):
        return str(e)
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "out of memory" in text.lower() or "can't allocate memory" in text.lower():
        return f"out of memory ({text}); try a smaller `batch_size`, `dtype` bf16, or a smaller image"
    return f"restoration failed: {text}"
