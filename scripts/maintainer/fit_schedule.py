"""Fit the few-step timesteps of a DifFace model to its official loop (training-free, "Align Your Steps"-style).

From the official start (respaced step 100 of ddim250, t = 400, eta 0, seed 0 per face) the official loop
makes 100 evaluations. This script searches the NFE timesteps 400 = tau_0 > tau_1 > ... > tau_{n-1} >= 0
of `difface.diffusion.solvers.solve` (ddim or dpmpp2m) that minimise the mean squared error of the result
(in [0, 1]) to the official 100-step result on calibration faces, by coordinate descent over the integer
timesteps with shrinking steps (40, 20, 10, 5, 2, 1). Network evaluations are memoised by timestep prefix,
so a candidate that changes tau_k costs n - k + 1 evaluations. The calibration faces must be disjoint from
the evaluation faces (the first 100 sorted validation faces); the default uses sorted faces 400..429.

With --write the schedule is stored in the model's fitted-schedule file (difface.schedules), keyed by the
SHA-256 of the prior file it was fitted on.

example (bundled model, 1 thread):
  PYTHONPATH=src python scripts/maintainer/fit_schedule.py --lq celeba64/val_celebatest/lq \
      --hq celeba64/val_celebatest/hq --method ddim --nfe 5 --json docs/results/fit_schedule_ddim5.json --write
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluations"))  # shares the evaluations' helpers
from fastsched_common import load_faces, reference, split_names, start_states  # noqa: E402

from difface.core import DifFace  # noqa: E402
from difface.diffusion.solvers import solve, solver_timesteps  # noqa: E402
from difface.weights import sha256_of  # noqa: E402


class PrefixMemo:
    """Denoiser wrapper memoising each evaluation by the timestep prefix that determines its input."""

    def __init__(self, denoiser) -> None:
        self.denoiser, self.memo, self.schedule, self.k, self.evals = denoiser, {}, (), 0, 0

    def start(self, schedule: tuple[int, ...]) -> None:
        self.schedule, self.k = schedule, 0

    def __call__(self, x, t):
        key = self.schedule[: self.k + 1]
        self.k += 1
        if key not in self.memo:
            self.memo[key] = self.denoiser(x, t)
            self.evals += 1
        return self.memo[key]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lq", type=Path, required=True)
    ap.add_argument("--hq", type=Path, required=True)
    ap.add_argument("--calib", default="calib:400:430", help="calibration faces: calib:A:B = sorted faces A..B-1")
    ap.add_argument("--method", default="ddim", choices=["ddim", "dpmpp2m"])
    ap.add_argument("--nfe", type=int, default=5)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--batch", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/speed_ref"))
    ap.add_argument("--prior", help="prior name or file (default: the bundled model's)")
    ap.add_argument("--estimator", help="estimator name or file (with --prior)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--write", action="store_true", help="store the schedule with the model (difface.schedules)")
    ap.add_argument("--store", type=Path, metavar="JSON", help="only store the schedule of an earlier run's --json "
                    "(checked against the bundled prior's SHA-256) and exit")
    args = ap.parse_args()
    if args.store:
        store_result(json.loads(args.store.read_text()))
        return
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = DifFace.from_pretrained(prior=args.prior, estimator=args.estimator, device=args.device)
    names = split_names(args.lq, args.calib)
    lq, _ = load_faces(args.lq, args.hq, names)
    ref = torch.from_numpy(reference(model, lq, names, args.cache, args.batch)).permute(0, 3, 1, 2)
    t_start = int(model.diffusion.timestep_map[100])
    with torch.inference_mode():
        x, den, base = start_states(model, lq, args.batch)
        memo = PrefixMemo(den)

        def loss(schedule: tuple[int, ...]) -> float:
            memo.start(schedule)
            out = (solve(memo, base, x, schedule, method=args.method) * 0.5 + 0.5).clamp(0, 1)
            return float(((out - ref) ** 2).mean())

        def psnr_of(mse: float) -> float:
            return float(10 * np.log10(1 / mse))

        best = tuple(solver_timesteps(t_start, args.nfe))
        best_loss = loss(best)
        history = [{"timesteps": list(best), "mse": best_loss, "psnr_vs_official": psnr_of(best_loss)}]
        print(f"even {best}: mse {best_loss:.3e} ({psnr_of(best_loss):.2f} dB)", flush=True)
        for _ in range(args.passes):
            improved = False
            for step in (40, 20, 10, 5, 2, 1):
                for k in range(1, args.nfe):
                    while True:
                        moved = False
                        for d in (-step, step):
                            cand = list(best)
                            cand[k] += d
                            hi = cand[k - 1] - 1
                            lo = cand[k + 1] + 1 if k + 1 < args.nfe else 0
                            if not lo <= cand[k] <= hi:
                                continue
                            c = tuple(cand)
                            cl = loss(c)
                            if cl < best_loss:
                                best, best_loss, moved, improved = c, cl, True, True
                                history.append({"timesteps": list(best), "mse": best_loss,
                                                "psnr_vs_official": psnr_of(best_loss)})
                                print(f"  {best}: mse {best_loss:.3e} ({psnr_of(best_loss):.2f} dB), "
                                      f"{memo.evals} evaluations", flush=True)
                                break
                        if not moved:
                            break
            if not improved:
                break
    sec = time.perf_counter() - t0
    prior = model.sources["prior"]
    result = {"method": args.method, "nfe": args.nfe, "t_start": t_start, "start_step": 100, "eta": 0.0,
              "timesteps": list(best), "mse": best_loss, "psnr_vs_official": psnr_of(best_loss),
              "even_mse": history[0]["mse"], "even_psnr_vs_official": history[0]["psnr_vs_official"],
              "calibration": {"faces": names, "set": str(args.lq), "spec": args.calib},
              "prior_file": prior.name, "prior_path": str(prior), "prior_sha256": sha256_of(prior),
              "network_evaluations": memo.evals,
              "seconds": sec, "threads": args.threads, "history": history}
    print(json.dumps({k: v for k, v in result.items() if k not in ("history", "calibration")}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    if args.write:
        store_result(result)


def store_result(result: dict) -> None:
    """Store a fit result (this script's --json) with the prior it was fitted on (the bundled one's in the
    package, others in the weights cache's fitted_schedules.json)."""
    from difface.core import BUNDLED_DIR
    from difface.schedules import prior_sha256, store_schedule

    prior = Path(result["prior_path"]) if result.get("prior_path") else BUNDLED_DIR / result["prior_file"]
    if prior_sha256(prior) != result["prior_sha256"]:
        raise SystemExit(f"{prior} is not the prior this schedule was fitted on (SHA-256 differs)")
    c = result["calibration"]
    path = store_schedule(prior, method=result["method"], nfe=result["nfe"], t_start=result["t_start"],
                          eta=result["eta"], timesteps=result["timesteps"],
                          fitted_on=f"{len(c['faces'])} calibration faces ({c['spec']}: sorted faces of "
                          f"{Path(c['set']).parent.name}, disjoint from the first 100 used for evaluation), mse "
                          f"{result['mse']:.3e} to the official 100-step loop (scripts/maintainer/fit_schedule.py)")
    print(f"stored in {path}")


if __name__ == "__main__":
    main()
