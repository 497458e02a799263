"""What a run did to the faces, said at its end: how many the model changed and by how much, from the start
steps and pixel changes the pipeline recorded per face (ImageResult.start_steps / changes / face_sides, carried
by each Outcome), and once per machine what would help faces far larger than the model.

    totals = face_totals(outcomes)          # a flat list of sums: add the lists of several processes
    for line in face_summary(totals):        # "3 faces: none needed the diffusion model (...)"
        log.info("%s", line)
    note_large_faces(totals, model_size=64, bundled=True)   # says once what would help, then a marker file

A face whose start step is 0 got the estimator's output with no diffusion: on the bundled model that is a
light touch (about 1-2 gray levels on a sharp face), so the summary says it was left nearly as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from difface.config import MODELS
from difface.hub import REGISTRY, cache_dir

log = logging.getLogger("difface")

# A face whose side spans at least this many times the model's size has detail the model cannot restore.
LARGE_FACE_FACTOR = 4
OFFICIAL_512 = (MODELS["official-512"].prior, MODELS["official-512"].estimator)
MARKER = ".official-512-suggested"
# the order of face_totals' sums
FIELDS = ("faces", "diffused", "change_diffused", "change_kept", "large", "largest")


def face_totals(outcomes: Sequence, model_size: int | None = None) -> list[float]:
    """Sums over the faces of the written outcomes: faces, faces with a start step > 0, the sum of their mean
    changes (gray levels of 255), the same for the faces with start step 0, the faces at least
    LARGE_FACE_FACTOR x `model_size` (None: not counted) and the largest face side in pixels."""
    t = dict.fromkeys(FIELDS, 0.0)
    for o in outcomes:
        if not o.ok or getattr(o, "kept", False):
            continue
        for step, change in zip(o.start_steps, o.changes):
            t["faces"] += 1
            key = "diffused" if step > 0 else "kept"
            t["diffused"] += step > 0
            t[f"change_{key}"] += change
        for side in o.face_sides:
            t["largest"] = max(t["largest"], side)
            t["large"] += bool(model_size) and side >= LARGE_FACE_FACTOR * model_size
    return [t[k] for k in FIELDS]


def face_summary(totals: Sequence[float], auto: bool = True) -> list[str]:
    """The run's end-of-run lines about its faces (none when no face carries a record, e.g. inpainting)."""
    t = dict(zip(FIELDS, totals))
    n, diffused = int(t["faces"]), int(t["diffused"])
    if n == 0:
        return []
    kept = n - diffused
    parts = []
    if diffused:
        parts.append(f"{diffused} restored by the diffusion model (mean change {t['change_diffused'] / diffused:.1f} "
                     "gray levels of 255)")
    if kept:
        if not auto:
            lead = f"{kept} got the estimator alone"
        else:
            lead = "none needed the diffusion model" if not diffused else f"{kept} did not need it"
        parts.append(f"{lead} (start step 0): left nearly as {'they were' if kept > 1 else 'it was'}, mean change "
                     f"{t['change_kept'] / kept:.1f} gray levels of 255")
    line = f"{n} face{'s' if n > 1 else ''}: " + "; ".join(parts)
    if not diffused and auto:
        line += (f". {'These faces' if n > 1 else 'The face'} looked sharp enough to the model: little to restore. "
                 f"A `strength` above 0 makes it change {'them' if n > 1 else 'it'} anyway, at a cost in likeness "
                 "(docs/strength.md)")
    return [line]


def official_hint(largest: float, model_size: int) -> str:
    """What helps faces far larger than the model: the official 512 px weights, their size when known, and the
    command that fetches them."""
    sizes = [REGISTRY[n].size for n in OFFICIAL_512]
    size = f", {sum(sizes) / 1e6:.0f} MB to download" if all(sizes) else ""
    largest = max(largest, LARGE_FACE_FACTOR * model_size)  # at least the threshold (another process's face)
    return (f"faces here are up to {largest:.0f} px but the bundled model restores {model_size} px: only their "
            f"coarse band was restored and their fine detail kept as it was. For such faces the official 512 px "
            f"models help (`model` official-512{size}; much slower on a CPU): "
            f"difface weights download {' '.join(OFFICIAL_512)}. (Said once; a marker in the weights cache "
            "remembers it.)")


def note_large_faces(totals: Sequence[float], model_size: int, bundled: bool) -> bool:
    """Log `official_hint` once per machine when the bundled model met faces of LARGE_FACE_FACTOR x its size or
    more; the marker file in the weights cache (hub.cache_dir) keeps it from coming back. True when said."""
    t = dict(zip(FIELDS, totals))
    if not bundled or not t["large"]:
        return False
    marker = cache_dir() / MARKER
    if marker.is_file():
        return False
    log.info("%s", official_hint(t["largest"], model_size))
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    except OSError:  # a read-only cache: the hint comes again next time
        pass
    return True
