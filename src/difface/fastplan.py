"""What `--preset fast` runs for a loaded model, a start and an eta: a few-step setting measured to keep the
quality of the official loop, on the schedule fitted for this prior or on the generic one, else the official loop.

MEASURED holds, per (task, kind of start, eta), the few-step setting with the fewest network evaluations that met
the quality gates on the bundled model's validation faces against the official loop at the same settings
(scripts/evaluations/eval_fast_any.py; docs/speed.md, "Quality of `--preset fast`"): PSNR-Y and SSIM-Y to
the truth no lower than the official loop's within 0.1 dB / 0.002, NIQE within 0.3 and, at eta 0, 35 dB to its
result. None: measured, and nothing met the gates. A key that is not in MEASURED was not measured: the official loop.

The timesteps, in order of preference:
  - "fitted for this prior": at a fixed start, a FITTED schedule stored for this prior file, start and eta
    (difface.schedules; the fast preset's fitted setting), else one stored for the measured solver and NFE;
  - "generic, validated on N priors": the measured setting on the generic schedule (log-SNR positions,
    difface.schedules) mapped to the start, when the prior runs on the noise schedule it was stated for; N
    counts the priors it was measured to meet the gates on;
  - "official loop: REASON" otherwise, and where the official loop makes no more evaluations from the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from difface.diffusion.solvers import OFFICIAL
from difface.schedules import (
    fitted_timesteps,
    generic_schedule,
    prior_sha256,
    schedules_for,
    timesteps_from_fractions,
)

MEASURED_FALLBACK = "measured"  # SamplingOptions.schedule_fallback of the fast preset: follow this module's plan
# (task, starts, eta) -> (solver, NFE) measured to meet the gates, or None where every few-step setting missed
# them; starts "fixed" (one start step for all faces, any t: the schedule maps to it) or "auto" (per face)
# a schedule fitted for the prior with this solver and NFE, at the start and eta, comes first (the fast preset's
# fitted setting: 41.8 dB to the official loop, NIQE +0.33 on the bundled prior's 100 faces at t = 400, eta 0)
FITTED = ("dpmpp2m", 6)


class Setting(NamedTuple):
    """A measured few-step setting: the solver, its evaluations, and the log-SNR fractions of its timesteps when
    they are its own (None: the generic schedule's, read off for nfe evaluations; difface.schedules)."""

    method: str
    nfe: int
    fractions: tuple[float, ...] | None = None


MEASURED: dict[tuple[str, str, float], Setting | None] = {
    ("restoration", "fixed", 0.0): Setting("dpmpp2m", 8),  # 6 on the generic schedule: NIQE +0.30 / +0.32 on two
    # other priors
    ("restoration", "auto", 0.0): None,  # 6, 8, 10: NIQE 0.6-0.9 above the official loop on the faces they change
    # the official 512 model's default (t = 400, eta 0.5): the second evaluation at the log-SNR midpoint, the result
    # 2 x0_2 - x0_1 (ddim 6 / 8 and dpmpp2m_sde 6 too smooth or too far: NIQE +0.5, PSNR-Y -0.2)
    ("restoration", "fixed", 0.5): Setting("ddim_extrap", 2, (0.0, 0.5)),
    # inpainting's default (t = 480, eta 1): evaluations evenly spaced in log-SNR, extrapolated. 3 met the gates on
    # the bundled prior but missed SSIM-Y on two other priors (-0.0023, -0.0052); 4 met them on those three but
    # missed SSIM-Y on an independently trained fourth (-0.0021); 5 met them on all four. (ddim 6 generic: NIQE
    # +0.36 on the 100 faces; ddim_extrap 2: SSIM-Y -0.011)
    ("inpainting", "fixed", 1.0): Setting("ddim_extrap", 5, (0.0, 0.2, 0.4, 0.6, 0.8)),
}


@dataclass(frozen=True)
class Plan:
    """sampler: a SOLVERS name or "official"; timesteps: the few-step schedule (None for the official loop);
    source: where the schedule comes from, as the start-of-run line says it."""

    sampler: str
    timesteps: tuple[int, ...] | None
    source: str

    @property
    def nfe(self) -> int | None:
        return None if self.timesteps is None else len(self.timesteps)


def plan_for(model, start_step: int, eta: float, auto: bool = False) -> Plan:
    """The fast preset's plan for `model` (difface.core.DifFace) from respaced `start_step` with `eta`; auto:
    the start was chosen for the face (`start_step="auto"`)."""
    t = int(model.diffusion.timestep_map[start_step])
    setting, why = measured_setting(model.task, eta, auto)
    if setting is None:
        return Plan(OFFICIAL, None, f"official loop: {why}")
    prior = model.sources.get("prior")
    ts = fitted_timesteps(prior, method=FITTED[0], nfe=FITTED[1], t_start=t, eta=eta)
    if ts is not None and not auto:
        return Plan(FITTED[0], ts, "fitted for this prior")
    method, nfe, fractions = setting
    if nfe >= start_step:
        return Plan(OFFICIAL, None, f"official loop: from start step {start_step} it makes no more than {nfe} "
                    "evaluations")
    ts = fitted_timesteps(prior, method=method, nfe=nfe, t_start=t, eta=eta)
    if ts is not None:
        return Plan(method, ts, "fitted for this prior")
    g, why = generic_for(model)
    if g is None:
        return Plan(OFFICIAL, None, f"official loop: {why}")
    return Plan(method, generic_timesteps(model, start_step, nfe, fractions),
                generic_source(g, (model.task, "fixed", float(eta)), setting))


def generic_timesteps(model, start_step: int, nfe: int, fractions=None) -> tuple[int, ...]:
    """The generic schedule (or the setting's own log-SNR `fractions`) mapped to respaced `start_step` of `model`
    with at most nfe evaluations; ValueError when no generic schedule is stored for the model's noise schedule."""
    g, why = generic_for(model)
    if g is None:
        raise ValueError(f"no generic few-step schedule for this model: {why}")
    t = int(model.diffusion.timestep_map[start_step])
    return timesteps_from_fractions(model.diffusion.base().alphas_cumprod, t, fractions or g["fractions"], nfe)


def measured_setting(task: str, eta: float, auto: bool = False) -> tuple[Setting | None, str]:
    """(the measured setting for this task, kind of start and eta, or None; why none)."""
    starts = "auto" if auto else "fixed"
    where = f"{task} at {'automatic' if auto else 'fixed'} starts, eta {eta:g}"
    key = (task, starts, float(eta))
    if key not in MEASURED:
        measured = ", ".join(f"{e:g}" for t, k, e in MEASURED if (t, k) == (task, starts))
        return None, f"no few-step setting was measured for {where}" + (f" (measured: eta {measured})" if measured
                                                                         else "")
    if MEASURED[key] is None:
        return None, f"no few-step setting met the quality gates for {where}"
    return MEASURED[key], ""


def generic_for(model) -> tuple[dict | None, str]:
    """(the generic schedule when this model's noise schedule is the one it was stated for, else None; why)."""
    g = generic_schedule()
    source = getattr(model.diffusion, "source", None)
    if g is None:
        return None, "no generic schedule is stored"
    if source != (g["num_timesteps"], g["beta_schedule"]):
        return None, (f"the prior's noise schedule ({source}) is not the {g['beta_schedule']} "
                      f"{g['num_timesteps']}-step one the generic schedule was measured on")
    return g, ""


def priors_validated(g: dict, key: tuple[str, str, float], setting: Setting) -> int:
    """How many priors the measured `setting` for `key` (task, kind of start, eta) met the gates on: the records
    of the generic schedule's "validated_on" (difface.schedules), one per prior, each listing what met the gates."""
    task, starts, eta = key
    return sum(any(m["task"] == task and m["starts"] == starts and float(m["eta"]) == eta
                   and m["method"] == setting.method and int(m["nfe"]) == setting.nfe for m in v["met_gates"])
               for v in g.get("validated_on", []))


def generic_source(g: dict, key: tuple[str, str, float], setting: Setting) -> str:
    """The start-of-run words for a measured setting on the generic schedule: on how many priors it met the gates."""
    n = priors_validated(g, key, setting)
    return f"generic, validated on {n} prior{'s' if n != 1 else ''}"


def describe(model, start: int | str, eta: float, with_eta: bool = True, fixed: Plan | None = None) -> str:
    """The start-of-run words for the fast preset: what runs from `start` (a respaced step or "auto"); fixed: the
    plan already found for a fixed start (difface.plan.SamplingPlan.fixed), else it is found here."""
    e = f", eta {eta:g}" if with_eta else ""
    if start == "auto":
        setting, why = measured_setting(model.task, eta, auto=True)
        if setting is None:
            return f"official loop from each face's automatic start{e} (official loop: {why})"
        g, gwhy = generic_for(model)
        if g is None:
            return f"official loop from each face's automatic start{e} (official loop: {gwhy})"
        method, nfe, _ = setting
        key = (model.task, "auto", float(eta))
        prior = model.sources.get("prior")
        fits = prior is not None and any(f["method"] == method and int(f["nfe"]) == nfe
                                         for f in schedules_for(prior_sha256(prior)))
        fitted = "; fitted for this prior at the starts it has a schedule for" if fits else ""
        return (f"sampler {method} with at most {nfe} evaluations from each face's automatic start{e} "
                f"({generic_source(g, key, setting)}{fitted}; the official loop where it makes no more evaluations)")
    if start == 0:
        return "no sampling (start step 0: the estimator's output)"
    p = fixed or plan_for(model, start, eta)
    t = int(model.diffusion.timestep_map[start])
    if p.timesteps is None:
        return f"official loop with {start} evaluations from t = {t}{e} ({p.source})"
    return f"sampler {p.sampler} with {p.nfe} evaluations from t = {t}{e} ({p.source})"
