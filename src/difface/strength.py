"""`strength`: one knob for how far the model may move a face away from the input.

    strength "auto"   the model's default: the bundled model's per-image rule (difface.autostart), which
                      leaves a sharp face as the estimator returns it; a model without a rule: its fixed start
    strength s        a number in [0, 1]: the estimate is diffused to t = s * FULL_T (the nearest step of
                      the respaced chain) and the prior's reverse process runs from there. 0 is the
                      estimator alone (no diffusion); 1 is t = 400, the paper's restoration setting
                      (start step 100 of ddim250).

More strength lets the prior replace more of the face: sharper, more "face-like" results that look less
like the person. docs/strength.md has the measured range that keeps identity on the bundled model.
It is an alternative to `start_step` (the same choice in the chain's own units); giving both is an error.
"""

from __future__ import annotations

import math

FULL_T = 400  # strength 1: the official restoration start, t = 400 of 1000
AUTO = "auto"


def parse_strength(text: str) -> float | str:
    """A command-line value: "auto" or a number ("0.2"); ValueError otherwise (range: check_strength)."""
    t = text.strip().lower()
    if t == AUTO:
        return AUTO
    return float(t)


def strength_error(value) -> str | None:
    """Why `value` is no strength (None, "auto" or a finite number in [0, 1]), or None when it is one."""
    if value is None or value == AUTO:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return f"expected a number in [0, 1] or auto, got {value!r}"
    if not 0.0 <= value <= 1.0:
        return f"must lie in [0, 1] (or be auto), got {value:g}"
    return None


def strength_t(strength: float) -> int:
    """The original timestep (of 1000) that strength s in [0, 1] asks for: round(s * FULL_T)."""
    return int(round(float(strength) * FULL_T))


def strength_start_step(model, strength: float | str | None) -> int | str | None:
    """The start step of `model` (a DifFace) for a strength: None for None/"auto" (the model's default), else the
    respaced step nearest to strength_t(s); 0 only for s = 0 (the estimator alone): any s > 0 diffuses."""
    if strength is None or strength == AUTO:
        return None
    return 0 if strength == 0 else max(1, model.step_for_t(strength_t(strength)))
