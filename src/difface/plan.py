"""Sampling, settled once: a `SamplingPlan` holds the start, eta, sampler, evaluations and schedule of a run,
resolved from the options and the model's defaults and validated when it is made; every sampler is built from it.

    plan = SamplingPlan.from_options(model, options.sampling)   # the pipelines: OptionError naming the option
    plan = model.plan(start_step=100, eta=0.5)                   # the API: ValueError naming the argument
    run = plan.sampler_at(model, start_step)                     # one Sampler: sampler(denoiser_for, x, ...)

Nothing below `make` checks a sampling value again, and no sampling setting is stored on the model. The number of
evaluations of a few-step sampler defaults here (DEFAULT_NFE) and nowhere else.

Schedules of the few-step samplers (where their timesteps come from):
  even     evenly spaced from the start's timestep (difface.diffusion.solvers.solver_timesteps);
  fitted   fitted on this prior's official loop (difface.schedules): a start without one is refused;
  fitted-or-official   the same, and the official loop where none is stored;
  fast     what `--preset fast` measured for the task, kind of start and eta (difface.fastplan.plan_for);
  generic  the generic schedule (log-SNR positions) mapped to the start (measurements).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from difface.checks import OptionError
from difface.diffusion.sampling import RespacedSampler, Sampler
from difface.diffusion.solvers import DEFAULT_NFE, OFFICIAL, SOLVERS, FewStepSampler, solver_timesteps
from difface.fastplan import MEASURED_FALLBACK, Plan, generic_timesteps, plan_for
from difface.schedules import fitted_timesteps
from difface.strength import strength_start_step

PLAN_SCHEDULES = ("even", "fitted", "fitted-or-official", "fast", "generic")
METHODS = ("ddim", "ddpm")  # the official loop's update


def schedule_of(schedule: str, fallback: str | None) -> str:
    """The plan's schedule for SamplingOptions' (schedule, schedule_fallback)."""
    if schedule != "fitted":
        return schedule
    return {None: "fitted", "official": "fitted-or-official", MEASURED_FALLBACK: "fast"}[fallback]


@dataclass(frozen=True)
class SamplingPlan:
    """start: the respaced start step of every face, one per face (a tuple), or "auto" (chosen per face from its
    estimate, difface.autostart); eta in [0, 1]; sampler: OFFICIAL, a name of SOLVERS, or a Sampler callable
    (replays); nfe: evaluations of a few-step sampler (None for the official loop or a callable); method: the
    official loop's update (ddim or ddpm); schedule: one of PLAN_SCHEDULES; strength: the strength that set the
    start (difface.strength), for the log line; fixed: for one fixed start, the sampler and timesteps it runs
    (`steps_at`), found once. Make one with `make` or `from_options`, never directly."""

    start: int | tuple[int, ...] | str
    eta: float
    sampler: str | Sampler = OFFICIAL
    nfe: int | None = None
    method: str = "ddim"
    schedule: str = "even"
    strength: float | str | None = None
    fixed: Plan | None = None  # a fixed start's sampler and timesteps, found when the plan is made

    @classmethod
    def make(cls, model, *, start_step=None, eta: float | None = None, sampler: str | Sampler = OFFICIAL,
             nfe: int | None = None, method: str = "ddim", schedule: str = "even",
             strength: float | str | None = None, ranges_checked: bool = False) -> SamplingPlan:
        """The plan for `model` (difface.core.DifFace): None fills in the model's default (start, eta) or
        DEFAULT_NFE; every value is checked here, once (ranges_checked: the options layer has already checked the
        ranges that need no model, so only the start and the evaluations against this model's chain are).
        ValueError whose message starts with the argument's name."""
        if not ranges_checked:
            _check_ranges(eta, sampler, nfe, method, schedule)
        if eta is None:
            eta = model.default_eta
        if callable(sampler):
            nfe = None
        elif sampler in SOLVERS and nfe is None:
            nfe = DEFAULT_NFE
        by_strength = strength_start_step(model, strength)
        start = _start(model, by_strength if by_strength is not None else start_step)
        plan = cls(start, float(eta), sampler, nfe, method, schedule, strength)
        for n in set(plan.starts(1)) if start != "auto" else ():
            plan._check_fits(model, n)
        if isinstance(start, int) and start > 0 and not callable(sampler):
            plan = replace(plan, fixed=plan.steps_at(model, start))
        return plan

    @classmethod
    def from_options(cls, model, sampling) -> SamplingPlan:
        """The plan of a SamplingOptions (difface.config) for `model`; OptionError naming the option when a value
        does not suit this model (config checked the ranges that need no model)."""
        try:
            return cls.make(model, start_step=sampling.start_step, eta=sampling.eta, sampler=sampling.sampler,
                            nfe=sampling.nfe, schedule=schedule_of(sampling.schedule, sampling.schedule_fallback),
                            strength=getattr(sampling, "strength", None), ranges_checked=True)
        except ValueError as e:
            option, _, message = str(e).partition(" ")
            if option.rstrip(":") not in ("start_step", "nfe", "eta", "sampler", "schedule"):
                raise
            raise OptionError(option.rstrip(":"), message) from None

    @property
    def auto(self) -> bool:
        return self.start == "auto"

    def starts(self, n: int) -> list[int]:
        """The fixed start step of each of n faces (not for "auto")."""
        if isinstance(self.start, tuple):
            if len(self.start) != n:
                raise ValueError(f"start_step: {len(self.start)} values for a batch of {n}")
            return list(self.start)
        return [int(self.start)] * n

    def _check_fits(self, model, n: int) -> None:
        """A fixed start: the few-step evaluations fit below it, and a strict fitted schedule exists."""
        if n == 0 or self.nfe is None or self.schedule == "fast":
            return
        t0 = int(model.diffusion.timestep_map[n])
        if self.schedule in ("even", "fitted", "fitted-or-official") and self.nfe > t0 + 1:
            raise ValueError(f"nfe {self.nfe} evaluations do not fit between t = {t0} (start step {n}) and 0; use "
                             f"at most {t0 + 1}")
        if self.schedule == "fitted" and self.fitted(model, n, self.nfe) is None:
            prior = model.sources.get("prior")
            where = prior.name if prior is not None else "this prior (its weights file is not known)"
            raise ValueError(f"schedule: no {self.sampler} schedule with {self.nfe} evaluations from t = {t0}, eta "
                             f"{self.eta:g} was fitted on {where}; fit one with `difface tune` or "
                             "use the even schedule")

    def fitted(self, model, n: int, nfe: int) -> tuple[int, ...] | None:
        """The schedule stored for this prior file, the solver, nfe, start step n and eta (difface.schedules)."""
        t = int(model.diffusion.timestep_map[n])
        return fitted_timesteps(model.sources.get("prior"), method=self.sampler, nfe=nfe, t_start=t, eta=self.eta)

    def steps_at(self, model, n: int, auto: bool = False) -> Plan:
        """Which sampler runs from respaced start step n (> 0) of `model`, on which timesteps, and where they come
        from (difface.fastplan.Plan; timesteps None: the official loop); auto: n was chosen for these faces (a
        few-step sampler then makes at most as many evaluations as fit below n). A fixed start's answer was found
        once, when the plan was made (`fixed`)."""
        if self.fixed is not None and n == self.start and not auto:
            return self.fixed
        if callable(self.sampler) or self.sampler == OFFICIAL:
            return Plan(OFFICIAL, None, "official loop")
        t = int(model.diffusion.timestep_map[n])
        nfe = min(self.nfe, t + 1) if auto else self.nfe
        if self.schedule == "fast":
            return plan_for(model, n, self.eta, auto)
        if self.schedule == "generic":
            ts = generic_timesteps(model, n, nfe)
            return Plan(self.sampler, ts, "generic schedule") if len(ts) < n else \
                Plan(OFFICIAL, None, f"official loop: from start step {n} it makes no more evaluations")
        if self.schedule in ("fitted", "fitted-or-official"):
            ts = self.fitted(model, n, nfe)
            if ts is None and self.schedule == "fitted":
                raise ValueError(f"schedule: no {self.sampler} schedule with {nfe} evaluations from t = {t} was "
                                 "fitted on this prior")
            return Plan(self.sampler, ts, "fitted for this prior") if ts is not None else \
                Plan(OFFICIAL, None, "official loop: no schedule fitted for this prior at this start")
        return Plan(self.sampler, tuple(solver_timesteps(t, nfe)), "even schedule")

    def sampler_at(self, model, n: int, auto: bool = False) -> Sampler:
        """The one sampler that runs from respaced start step n (> 0) of `model` (see `steps_at`)."""
        if callable(self.sampler):
            return self.sampler
        p = self.steps_at(model, n, auto)
        if p.timesteps is None:
            return RespacedSampler(model.diffusion, n, self.eta, self.method)
        return FewStepSampler(model.diffusion.base(), tuple(p.timesteps), p.sampler, self.eta)


def _check_ranges(eta, sampler, nfe, method: str, schedule: str) -> None:
    """The checks that need no model (the options layer makes the same ones for its callers)."""
    if eta is not None and (isinstance(eta, bool) or not isinstance(eta, (int, float))
                            or not (math.isfinite(eta) and 0 <= eta <= 1)):
        raise ValueError(f"eta must lie in [0, 1], got {eta!r}")
    if schedule not in PLAN_SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(PLAN_SCHEDULES)}, got {schedule!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if callable(sampler):
        return
    if sampler == OFFICIAL:
        if nfe is not None:
            raise ValueError(f"nfe applies to the few-step samplers ({', '.join(SOLVERS)}), not to the official "
                             "loop (one evaluation per respaced step)")
    elif sampler not in SOLVERS:
        raise ValueError(f"sampler must be one of {', '.join((OFFICIAL, *SOLVERS))}, got {sampler!r}")
    elif nfe is not None and (isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1):
        raise ValueError(f"nfe must be an integer of at least 1, got {nfe!r}")


def _start(model, start_step) -> int | tuple[int, ...] | str:
    """A start step as the plan holds it, checked against the model's chain and trained range."""
    if start_step is None:
        start_step = model.default_start
    if isinstance(start_step, str):
        if start_step != "auto":
            raise ValueError(f"start_step must be an integer, a sequence of integers or 'auto', got {start_step!r}")
        return "auto"
    if isinstance(start_step, (list, tuple)):
        return tuple(model.check_start_step(k) for k in start_step)
    return model.check_start_step(start_step)
