"""Fit the few-step schedule of a model to its own official loop (`difface tune`; training-free, in the spirit of
"Align Your Steps").

From a fixed start step N (original timestep t = tau_0), eta 0 and seed 0 for every face (`SEED`, as the
maintainers' fits of the shipped schedules), the official respaced loop makes N evaluations per face: its results
on the user's low-quality aligned faces are the target (no high-quality faces are needed). The search looks for
the NFE timesteps t = tau_0 > tau_1 > ... > tau_{n-1} >= 0 of `difface.diffusion.solvers.solve` (ddim or dpmpp2m,
eta 0) whose results from the same start states have the smallest mean squared error (images in [0, 1]) to those
targets: coordinate descent over the integer timesteps tau_1..tau_{n-1}, with steps 40, 20, 10, 5, 2, 1, for a
number of passes (it stops early after a pass without improvement). Network evaluations are memoised by timestep
prefix (`PrefixMemo`), so a candidate that changes tau_k costs n - k evaluations.

Only eta 0: the solvers are compared with the deterministic official loop, and a stochastic run has no single
result to match. The fit is resumable: `fit` takes a work folder where the targets (reference_part.npz after each
batch, then reference.npz) and the search state (state.json, after each improvement and each finished position)
are written atomically; a rerun with the same folder continues from there and ends where an uninterrupted run
would have.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from difface import hub
from difface.atomic import atomic_write_bytes
from difface.diffusion.sampling import Prediction
from difface.diffusion.solvers import solve, solver_timesteps
from difface.images import IMAGE_EXTENSIONS, image_to_tensor, read_image
from difface.schedules import prior_sha256, store_schedule, user_file

STEPS = (40, 20, 10, 5, 2, 1)  # coordinate-descent step sizes, in original timesteps
SEED = 0  # every face draws its start noise from seed 0 (the shipped fits' convention)
ETA = 0.0
METHODS = ("dpmpp2m", "ddim")


class TuneError(ValueError):
    """A fit that cannot run as asked (no faces, eta > 0, evaluations that do not fit below the start)."""


def check_settings(model, *, method: str, nfe: int, start_step: int, eta: float = ETA) -> int:
    """Check a fit's settings against `model` (difface.core.DifFace); returns the start's original timestep."""
    if eta != 0:
        raise TuneError(f"eta {eta:g}: only eta 0 can be fitted (the few-step solvers are fitted to the "
                        "deterministic official loop, which needs eta 0)")
    if method not in METHODS:
        raise TuneError(f"sampler must be one of {', '.join(METHODS)}, got {method!r}")
    if model.task != "restoration":
        raise TuneError("tune fits a restoration model's schedule; this model inpaints")
    try:
        start_step = model.check_start_step(start_step)
    except ValueError as e:
        raise TuneError(str(e)) from None
    if start_step < 1:
        raise TuneError("start step 0 runs no sampler: there is nothing to fit")
    t = int(model.diffusion.timestep_map[start_step])
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 2:
        raise TuneError(f"nfe must be an integer of at least 2 (one timestep is the start), got {nfe!r}")
    if nfe >= start_step:
        raise TuneError(f"nfe {nfe} is not fewer evaluations than the official loop makes from start step "
                        f"{start_step} (t = {t}); use at most {start_step - 1}")
    return t


def face_files(folder: str | Path, limit: int | None = None) -> list[Path]:
    """The sorted image files of `folder` (not its sub-folders), the first `limit` of them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TuneError(f"{folder}: no such folder (give a folder of aligned low-quality faces)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise TuneError(f"{folder}: no faces found (images ending in {', '.join(IMAGE_EXTENSIONS)})")
    return files[:limit] if limit else files


def read_faces(files: list[Path], size: int) -> torch.Tensor:
    """Aligned faces of any size as (N, 3, size, size) float32 in [0, 1], each resized as `restore --aligned`
    does (bicubic, antialiased, not clamped: a resized face may overshoot [0, 1] slightly; no-op at the model
    size)."""
    out = []
    for path in files:
        x = image_to_tensor(read_image(path).rgb)
        if tuple(x.shape[2:]) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True)
        out.append(x)
    return torch.cat(out).float()


def official_reference(model, lq: torch.Tensor, start_step: int, batch: int,
                       on_step: Callable[[], None] | None = None,
                       done: list[torch.Tensor] | None = None,
                       on_batch: Callable[[list[torch.Tensor]], None] | None = None) -> torch.Tensor:
    """The official loop's results (N, 3, S, S) in [0, 1] from `start_step`, eta 0, seed SEED per face, for lq
    (N, 3, S, S) in [0, 1] at the model size. done: results of the first batches already computed (a resumed
    run); on_step is called after each step of each batch, on_batch with the results so far after each batch."""
    plan = model.plan(start_step=start_step, eta=ETA)
    cb = None if on_step is None else (lambda _event: on_step())
    out = list(done or [])
    for i in range(sum(len(o) for o in out), len(lq), batch):
        x = lq[i: i + batch].to(model.device)
        out.append(model.restore(x, plan, seeds=[SEED] * len(x), callback=cb).result.float().cpu())
        if on_batch is not None:
            on_batch(out)
    return torch.cat(out)


class StartRecorder:
    """A Sampler that keeps the start state x and the denoiser factory, and returns x unchanged."""

    def __init__(self) -> None:
        self.states: list[torch.Tensor] = []
        self.denoiser_for = None

    def __call__(self, denoiser_for, x, *, noise_fn, callback=None):
        self.states.append(x.clone())
        self.denoiser_for = denoiser_for
        return x


def start_states(model, lq: torch.Tensor, start_step: int, batch: int):
    """(x (N, 3, S, S): the diffused estimates at the start, in diffusion space [-1, 1] plus noise; a denoiser
    over the un-respaced chain taking (x, t) in batches of at most `batch`; that chain), with the official loop's
    noise (seed SEED per face)."""
    rec = StartRecorder()
    plan = model.plan(start_step=start_step, eta=ETA, sampler=rec)
    for i in range(0, len(lq), batch):
        x = lq[i: i + batch].to(model.device)
        model.restore(x, plan, seeds=[SEED] * len(x))
    base = model.diffusion.base()
    return torch.cat(rec.states), batched(rec.denoiser_for(base), batch), base


def batched(denoiser, batch: int):
    """denoiser(x, t) run on at most `batch` images at a time (the results concatenated)."""
    names = [f.name for f in fields(Prediction)]

    def run(x: torch.Tensor, t: torch.Tensor) -> Prediction:
        if len(x) <= batch:
            return denoiser(x, t)
        parts = [denoiser(x[i: i + batch], t[i: i + batch]) for i in range(0, len(x), batch)]
        return Prediction(**{n: torch.cat([getattr(p, n) for p in parts]) for n in names})

    return run


class PrefixMemo:
    """A denoiser memoising each evaluation by the timestep prefix that determines its input (eta 0 only).

    Call `start(schedule)` before each solve; `evals` counts the network evaluations made (each one over all
    faces), `on_eval` is called after each."""

    def __init__(self, denoiser, on_eval: Callable[[], None] | None = None) -> None:
        self.denoiser, self.on_eval = denoiser, on_eval
        self.memo: dict[tuple[int, ...], Prediction] = {}
        self.schedule: tuple[int, ...] = ()
        self.k = self.evals = 0

    def start(self, schedule: tuple[int, ...]) -> None:
        self.schedule, self.k = tuple(schedule), 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> Prediction:
        key = self.schedule[: self.k + 1]
        self.k += 1
        if key not in self.memo:
            self.memo[key] = self.denoiser(x, t)
            self.evals += 1
            if self.on_eval is not None:
                self.on_eval()
        return self.memo[key]


def psnr_of(mse: float) -> float:
    """PSNR in dB of a mean squared error of images in [0, 1]."""
    return float(10 * math.log10(1 / mse)) if mse > 0 else math.inf


@dataclass
class SearchState:
    """Where the coordinate descent stands: the best schedule and its MSE, the even schedule's MSE, the position
    (pass, index into STEPS, timestep index k >= 1), whether this pass improved, whether it converged, the network
    evaluations made so far (all runs) and the history of improvements."""

    best: list[int]
    best_mse: float
    even: list[int]
    even_mse: float
    pass_index: int = 0
    step_index: int = 0
    k: int = 1
    improved: bool = False
    converged: bool = False
    evaluations: int = 0
    history: list[dict] = field(default_factory=list)

    def finished(self, passes: int) -> bool:
        return self.converged or self.pass_index >= passes


def coordinate_descent(loss: Callable[[tuple[int, ...]], float], state: SearchState, passes: int,
                       save: Callable[[SearchState], None] | None = None,
                       on_position: Callable[[SearchState], None] | None = None) -> SearchState:
    """Move one timestep at a time (tau_1.. tau_{n-1}, by -step then +step within the neighbours) while the loss
    falls, for each step of STEPS, for up to `passes` passes (stopping after a pass without improvement). Starts
    at `state`'s position; `save(state)` after each improvement and each finished position, `on_position(state)`
    after each finished position."""
    nfe = len(state.best)
    save = save or (lambda s: None)
    while not state.finished(passes):
        while state.step_index < len(STEPS):
            step = STEPS[state.step_index]
            while state.k < nfe:
                k, moved = state.k, True
                while moved:
                    moved = False
                    for d in (-step, step):
                        cand = list(state.best)
                        cand[k] += d
                        lo = cand[k + 1] + 1 if k + 1 < nfe else 0
                        if not lo <= cand[k] <= cand[k - 1] - 1:
                            continue
                        mse = loss(tuple(cand))
                        if mse < state.best_mse:
                            state.best, state.best_mse, state.improved, moved = cand, mse, True, True
                            state.history.append({"timesteps": cand, "mse": mse, "psnr_vs_official": psnr_of(mse)})
                            save(state)
                            break
                state.k += 1
                save(state)
                if on_position is not None:
                    on_position(state)
            state.step_index, state.k = state.step_index + 1, 1
        state.converged = not state.improved
        state.pass_index, state.step_index, state.k, state.improved = state.pass_index + 1, 0, 1, False
        save(state)
    return state


@dataclass
class TuneResult:
    """A fit: the fitted timesteps and the even ones with their MSE / PSNR (dB) to the official loop on the
    calibration faces, and how it was made (evaluations: network evaluations over all faces, this run / all runs)."""

    method: str
    nfe: int
    start_step: int
    t_start: int
    eta: float
    timesteps: list[int]
    mse: float
    psnr_vs_official: float
    even_timesteps: list[int]
    even_mse: float
    even_psnr_vs_official: float
    faces: list[str]
    seed: int
    prior_path: str | None
    prior_sha256: str | None
    estimator_sha256: str | None
    passes_done: int
    converged: bool
    network_evaluations: int
    network_evaluations_this_run: int
    reference_evaluations: int
    resumed: bool
    seconds: float
    history: list[dict]

    def to_json(self) -> dict:
        return asdict(self)


def work_key(model, *, method: str, nfe: int, start_step: int, names: list[str], lq: torch.Tensor) -> str:
    """The work folder's name for a fit: the prior's and estimator's SHA-256, the solver, nfe, the official loop's
    timesteps from the start, seed, eta and the faces (names and pixels)."""
    src = model.sources
    faces = hashlib.sha256(json.dumps(names).encode() + lq.numpy().tobytes()).hexdigest()
    chain = [int(t) for t in model.diffusion.timestep_map[: start_step + 1]]
    parts = [prior_sha256(src["prior"]) if "prior" in src else None,
             prior_sha256(src["estimator"]) if "estimator" in src else None,
             method, nfe, chain, SEED, ETA, faces]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def work_dir(key: str) -> Path:
    """The resumable work folder of a fit under the weights cache (`<cache>/tune/<key>`)."""
    return hub.cache_dir() / "tune" / key


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def kept_reference(model, lq: torch.Tensor, names: list[str], start_step: int, batch: int, workdir: Path | None,
                   on_step: Callable[[], None] | None = None) -> tuple[torch.Tensor, int, bool]:
    """(the official loop's results (N, 3, S, S) in [0, 1], the batched network evaluations made for them now,
    whether any were read from `workdir`): reference.npz when complete, else reference_part.npz's finished batches
    and the rest computed, each batch kept as it is done."""
    if workdir is None:
        return official_reference(model, lq, start_step, batch, on_step), start_step * math.ceil(len(lq) / batch), \
            False
    workdir.mkdir(parents=True, exist_ok=True)
    whole, part = workdir / "reference.npz", workdir / "reference_part.npz"
    if whole.is_file():
        with np.load(whole) as z:
            return torch.from_numpy(z["out"]), 0, True
    done = []
    if part.is_file():
        with np.load(part) as z:
            done = [torch.from_numpy(z["out"])]
    ref = official_reference(model, lq, start_step, batch, on_step, done,
                             lambda out: _save_npz(part, out=torch.cat(out).numpy()))
    _save_npz(whole, out=ref.numpy(), names=np.array(names))
    part.unlink(missing_ok=True)
    return ref, start_step * math.ceil((len(lq) - sum(len(d) for d in done)) / batch), bool(done)


@dataclass(frozen=True)
class TuneSettings:
    """What to fit: `method` a deterministic solver (ddim, dpmpp2m) with `nfe` evaluations from respaced
    `start_step` (None: the model's default fixed start); `passes` of the coordinate descent; faces per `batch`;
    eta (0 only: the fit compares with the deterministic official loop)."""

    method: str = "dpmpp2m"
    nfe: int = 6
    start_step: int | None = None
    passes: int = 2
    batch: int = 30
    eta: float = ETA


@dataclass(frozen=True)
class Hooks:
    """Progress callbacks of `fit`: each step of the reference loop, each network evaluation of the search, each
    finished position (with the search state)."""

    on_reference_step: Callable[[], None] | None = None
    on_eval: Callable[[], None] | None = None
    on_position: Callable[[SearchState], None] | None = None


def fit(model, lq: torch.Tensor, names: list[str], settings: TuneSettings = TuneSettings(), *,
        workdir: Path | None = None, hooks: Hooks = Hooks()) -> TuneResult:
    """Fit the timesteps of `settings` to the official loop on faces lq (N, 3, S, S) in [0, 1] at the model size,
    named `names`. workdir: where the targets and the search state are kept (a rerun continues from them; None:
    nothing is kept). TuneError for settings that cannot be fitted."""
    method, nfe, start_step, passes, batch, eta = (settings.method, settings.nfe, settings.start_step,
                                                   settings.passes, settings.batch, settings.eta)
    on_reference_step, on_eval, on_position = hooks.on_reference_step, hooks.on_eval, hooks.on_position
    t0 = time.perf_counter()
    start_step = model.default_start_step if start_step is None else start_step
    t_start = check_settings(model, method=method, nfe=nfe, start_step=start_step, eta=eta)
    if len(lq) == 0:
        raise TuneError("no faces to fit on")
    if batch < 1:
        raise TuneError(f"batch must be at least 1, got {batch}")
    lq = lq.float().cpu()
    state_file = None if workdir is None else workdir / "state.json"
    ref, ref_evals, resumed = kept_reference(model, lq, names, start_step, batch, workdir, on_reference_step)
    ref = ref.to(model.device)

    with torch.inference_mode():
        x, den, base = start_states(model, lq, start_step, batch)
        memo = PrefixMemo(den, on_eval)

        def loss(schedule: tuple[int, ...]) -> float:
            memo.start(schedule)
            out = (solve(memo, base, x, schedule, method=method) * 0.5 + 0.5).clamp(0, 1)
            return float(((out - ref) ** 2).mean())

        state = None
        if state_file is not None and state_file.is_file():
            state = SearchState(**json.loads(state_file.read_text()))
            resumed = True
        before = state.evaluations if state is not None else 0  # evaluations of earlier runs
        if state is None:
            even = [int(t) for t in solver_timesteps(t_start, nfe)]
            even_mse = loss(tuple(even))
            state = SearchState(best=even, best_mse=even_mse, even=even, even_mse=even_mse,
                                history=[{"timesteps": even, "mse": even_mse, "psnr_vs_official": psnr_of(even_mse)}])

        def save(s: SearchState) -> None:
            s.evaluations = before + memo.evals
            if state_file is not None:
                atomic_write_bytes(state_file, (json.dumps(asdict(s), indent=1) + "\n").encode())

        save(state)
        state = coordinate_descent(loss, state, passes, save, on_position)
    src = model.sources
    return TuneResult(
        method=method, nfe=nfe, start_step=start_step, t_start=t_start, eta=float(eta), timesteps=list(state.best),
        mse=state.best_mse, psnr_vs_official=psnr_of(state.best_mse), even_timesteps=list(state.even),
        even_mse=state.even_mse, even_psnr_vs_official=psnr_of(state.even_mse), faces=list(names), seed=SEED,
        prior_path=str(src["prior"]) if "prior" in src else None,
        prior_sha256=prior_sha256(src["prior"]) if "prior" in src else None,
        estimator_sha256=prior_sha256(src["estimator"]) if "estimator" in src else None,
        passes_done=state.pass_index, converged=state.converged, network_evaluations=state.evaluations,
        network_evaluations_this_run=memo.evals, reference_evaluations=ref_evals, resumed=resumed,
        seconds=time.perf_counter() - t0, history=state.history)


def store(result: TuneResult, path: Path | None = None) -> Path:
    """Store a fit keyed by its prior file's SHA-256 in the weights cache's fitted_schedules.json (`path`: another
    file), never in the package's shipped file, so that `--schedule fitted` and `--preset fast` find it for that
    prior (the cache's file is read before the shipped one). Returns the file written."""
    if result.prior_path is None:
        raise TuneError("the prior's weights file is not known, so the schedule cannot be stored for it")
    if prior_sha256(result.prior_path) != result.prior_sha256:
        raise TuneError(f"{result.prior_path} changed since the fit (SHA-256 differs); not stored")
    return store_schedule(result.prior_path, method=result.method, nfe=result.nfe, t_start=result.t_start,
                          eta=result.eta, timesteps=result.timesteps, path=path or user_file(),
                          fitted_on=f"{len(result.faces)} faces, mse {result.mse:.3e} "
                          f"({result.psnr_vs_official:.2f} dB) to the official loop from start step "
                          f"{result.start_step}, seed {result.seed} (difface tune)")
