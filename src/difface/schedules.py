"""Few-step timestep schedules fitted to a model's official loop, stored with the model they were fitted on.

A fitted schedule (scripts/maintainer/fit_schedule.py) is a list of original timesteps t_start = tau_0 > ... >= 0 for
`difface.diffusion.solvers.solve`, found by matching the official 100-step result on calibration faces. It
is only valid for the prior it was fitted on, so it is stored keyed by the SHA-256 of that prior's weights
file: the bundled models' schedules in `difface/assets/fitted_schedules.json`, others in
`<weights cache>/fitted_schedules.json`. `fitted_timesteps` returns None for any other prior (or another
start, solver or NFE); it never falls back to a schedule of another model.

File format: {"format": 1, "schedules": [{"prior_sha256", "prior_file", "method", "nfe", "t_start", "eta",
"timesteps", "fitted_on"}, ...]}.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    """Every stored schedule fitted on the prior with this SHA-256."""
    files = (ASSETS_FILE, user_file()) if files is None else files
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
    atomic_write_bytes(path, (json.dumps({"format": 1, "schedules": keep}, indent=1) + "\n").encode())
    return path
