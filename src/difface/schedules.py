"""Few-step timestep schedules fitted to a model's official loop, stored with the model they were fitted on.

A fitted schedule (`difface tune`, difface.tune) is a list of original timesteps t_start = tau_0 > ... >= 0 for
`difface.diffusion.solvers.solve`, found by matching the official 100-step result on calibration faces. It
is only valid for the prior it was fitted on, so it is stored keyed by the SHA-256 of that prior's weights
file: the shipped fits of the bundled models in `difface/assets/fitted_schedules.json`, the user's own fits
(`difface tune`, any prior, the bundled one included) in `<weights cache>/fitted_schedules.json`, which is read
first: a user's refit of the bundled prior wins over the shipped one. `fitted_timesteps` returns None for any
other prior (or another start, solver or NFE); it never falls back to a schedule of another model. The generic
schedule (below) is the bundled fit restated in log-SNR positions, independent of any prior's weights;
difface.fastplan uses it for priors on the same noise schedule that have no fit of their own.

File format: {"format": 1, "schedules": [{"prior_sha256", "prior_file", "method", "nfe", "t_start", "eta",
"timesteps", "fitted_on"}, ...], "generic": {...}} ("generic": the package's file only, see below).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from difface import hub
from difface.atomic import atomic_write_bytes

ASSETS_FILE = Path(__file__).parent / "assets" / "fitted_schedules.json"
_sha_memo: dict[tuple, str] = {}


def user_file() -> Path:
    return hub.cache_dir().parent / "fitted_schedules.json"


def prior_sha256(path: str | Path) -> str:
    """SHA-256 of a weights file (the package's record for bundled files, else hashed once per process)."""
    p = Path(path).resolve()
    try:
        rel = p.relative_to(hub.ASSETS.resolve()).as_posix()
        digest = hub.bundled_manifest().get(rel)
        if digest:
            return digest
    except ValueError:
        pass
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _sha_memo:
        _sha_memo[key] = hub.sha256_of(p)
    return _sha_memo[key]


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if data.get("format") != 1:
        raise ValueError(f"{path}: unknown fitted-schedule format {data.get('format')!r}")
    return list(data["schedules"])


def schedules_for(sha256: str, files: tuple[Path, ...] | None = None) -> list[dict]:
    """Every stored schedule fitted on the prior with this SHA-256 (the user's file first, then the package's)."""
    files = (user_file(), ASSETS_FILE) if files is None else files
    return [s for f in files for s in _read(f) if s["prior_sha256"] == sha256]


def fitted_timesteps(prior: str | Path | None, *, method: str, nfe: int, t_start: int, eta: float = 0.0,
                     files: tuple[Path, ...] | None = None) -> tuple[int, ...] | None:
    """The schedule fitted on this prior file for (method, nfe, t_start, eta), or None when there is none."""
    if prior is None:
        return None
    for s in schedules_for(prior_sha256(prior), files):
        if (s["method"], int(s["nfe"]), int(s["t_start"]), float(s["eta"])) == (method, nfe, t_start, float(eta)):
            ts = tuple(int(t) for t in s["timesteps"])
            if len(ts) != nfe or ts[0] != t_start or list(ts) != sorted(set(ts), reverse=True) or ts[-1] < 0:
                raise ValueError(f"fitted schedule {ts} for {Path(prior).name} is not {nfe} decreasing timesteps "
                                 f"from {t_start}")
            return ts
    return None


def store_schedule(prior: str | Path, *, method: str, nfe: int, t_start: int, eta: float, timesteps: list[int],
                   fitted_on: str, path: Path | None = None) -> Path:
    """Add (or replace) the schedule of this prior file; bundled priors go to the package's file. Atomic write."""
    p = Path(prior).resolve()
    if path is None:
        path = ASSETS_FILE if p.is_relative_to(hub.ASSETS.resolve()) else user_file()
    sha = prior_sha256(p)
    keep = [s for s in _read(path) if not (s["prior_sha256"] == sha and s["method"] == method and
                                           int(s["nfe"]) == nfe and int(s["t_start"]) == t_start and
                                           float(s["eta"]) == float(eta))]
    keep.append({"prior_sha256": sha, "prior_file": p.name, "method": method, "nfe": nfe, "t_start": t_start,
                 "eta": float(eta), "timesteps": [int(t) for t in timesteps], "fitted_on": fitted_on})
    path.parent.mkdir(parents=True, exist_ok=True)
    other = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("format", "schedules")} \
        if path.is_file() else {}  # the generic schedule, kept as it is
    atomic_write_bytes(path, (json.dumps({"format": 1, "schedules": keep, **other}, indent=1) + "\n").encode())
    return path


# -- generic schedules: positions in log-SNR, for any prior on the noise schedule they were measured on ----------
# A fitted schedule restated without the prior's weights: evaluation k sits at the fraction
# f_k = (lambda(tau_k) - lambda(t_start)) / (lambda(0) - lambda(t_start)) of the log-SNR interval from the start to
# t = 0 (lambda = log(alpha / sigma) of the chain's alphas_cumprod). Mapped back on the same chain from the same
# start it gives the fitted timesteps again; from another start t it places the evaluations at the same fractions
# of that start's interval. Other NFE: the fractions are read off the piecewise-linear curve through
# (k / n_fit, f_k) and (1, 1) at (j / nfe). Stored under "generic" in the package's file.


def log_snr(alphas_cumprod) -> np.ndarray:
    """lambda_t = log(alpha_t / sigma_t) = 0.5 log(abar_t / (1 - abar_t)) of every timestep, float64."""
    ac = np.asarray(alphas_cumprod, np.float64)
    return 0.5 * np.log(ac / (1.0 - ac))


def fractions_of(alphas_cumprod, timesteps) -> list[float]:
    """The log-SNR fractions (module text above) of a schedule that starts at timesteps[0]."""
    lam = log_snr(alphas_cumprod)
    lo, hi = lam[int(timesteps[0])], lam[0]
    return [float((lam[int(t)] - lo) / (hi - lo)) for t in timesteps]


def timesteps_from_fractions(alphas_cumprod, t_start: int, fractions, nfe: int | None = None) -> tuple[int, ...]:
    """Timesteps t_start = tau_0 > ... >= 0 at the given log-SNR fractions (resampled to `nfe` evaluations when
    given); evaluations that land on the same timestep (small starts) are merged, so there may be fewer."""
    fr = [float(f) for f in fractions]
    if nfe is not None and nfe != len(fr):
        if nfe < 1:
            raise ValueError(f"nfe must be at least 1, got {nfe}")
        pos = np.arange(len(fr) + 1) / len(fr)
        fr = list(np.interp(np.arange(nfe) / nfe, pos, fr + [1.0]))
    lam = log_snr(alphas_cumprod)[: int(t_start) + 1]
    lo, hi = lam[int(t_start)], lam[0]
    ts: list[int] = []
    for f in fr:
        target = lo + f * (hi - lo)
        t = int(np.argmin(np.abs(lam - target)))
        if not ts or t < ts[-1]:
            ts.append(t)
    return tuple(ts)


def generic_schedule(files: tuple[Path, ...] | None = None) -> dict | None:
    """The stored generic schedule ({"beta_schedule", "num_timesteps", "fractions", "derived_from",
    "validated_on": [...]}) of the package's file, or None."""
    path = (files or (ASSETS_FILE,))[0]
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("generic")
