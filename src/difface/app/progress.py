"""A request's progress on the page: the pipeline's events become `report(fraction, text)` calls."""

from __future__ import annotations

from collections.abc import Callable

from difface.plan import SamplingPlan

Report = Callable[[float, str], None]  # (fraction done in [0, 1], what is being done)


class Progress:
    """The callback of a request's pipeline: its events ("faces", "face_start", "step", "face_end") become
    per-face and per-step `report(fraction, text)` calls, fractions in [0, 1] never going back."""

    def __init__(self, report: Report, plan: SamplingPlan):
        steps = plan.fixed  # a fixed start: what it runs (the fast preset may run the official loop)
        official = plan.sampler == "official" or (steps is not None and steps.timesteps is None)
        self.report, self.sampler = report, "official" if official else plan.sampler
        self.nfe = steps.nfe if steps is not None and steps.nfe else plan.nfe
        self.faces, self.face, self.total, self.batch = 1, 0, None, 1

    def __call__(self, event: dict) -> None:
        kind = event["event"]
        if kind == "faces":
            self.faces = max(int(event["count"]), 1)
        elif kind == "face_start":
            self.total, self.batch = None, int(event["count"])
            self.report(self.face / self.faces, f"face {self.face + 1} of {self.faces}: estimator")
        elif kind == "face_end":
            self.face += self.batch
        elif kind == "step":
            self._step(int(event["i"]))

    def _step(self, i: int) -> None:
        if self.sampler == "official":  # the respaced loop counts down: the first index is start - 1
            if self.total is None:
                self.total = i + 1
            done = self.total - i
        else:
            self.total, done = self.nfe, i + 1
        frac = (self.face + done / self.total * self.batch) / self.faces
        self.report(min(frac, 1.0), f"face {self.face + 1} of {self.faces}: denoising step {done} of {self.total}")
