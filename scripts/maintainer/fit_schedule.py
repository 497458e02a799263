"""Fit the few-step timesteps of a DifFace model to its official loop: the maintainers' wrapper over difface.tune
(the search `difface tune` runs), for the shipped fits on the prepared validation sets.

What it adds to `difface tune`: the calibration faces named by their place in a validation set (--calib
calib:A:B = sorted faces A..B-1, which must lie after the first 100 used for evaluation), the JSON with the
calibration recorded, and --write, which stores the schedule of the bundled prior in the package's own file
(src/difface/assets/fitted_schedules.json; `difface tune` only ever writes the weights cache's file). From the
official start (respaced step 100 of ddim250, t = 400), eta 0, seed 0 per face; the search is resumable (its work
folder is under the weights cache, as `difface tune`'s).

example (bundled model, 1 thread):
  PYTHONPATH=src python scripts/maintainer/fit_schedule.py --lq celeba64/val_celebatest/lq \
      --method ddim --nfe 5 --json docs/results/fit_schedule_ddim5.json --write
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluations"))  # shares the evaluations' helpers
from fastsched_common import START_STEP, split_names  # noqa: E402

from difface import tune  # noqa: E402
from difface.core import BUNDLED_DIR, DifFace  # noqa: E402
from difface.schedules import prior_sha256, store_schedule  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lq", type=Path, required=True)
    ap.add_argument("--hq", type=Path, help="unused (the target is the official loop's result); kept for old commands")
    ap.add_argument("--calib", default="calib:400:430", help="calibration faces: calib:A:B = sorted faces A..B-1")
    ap.add_argument("--method", default="ddim", choices=list(tune.METHODS))
    ap.add_argument("--nfe", type=int, default=5)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--batch", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prior", help="prior name or file (default: the bundled model's)")
    ap.add_argument("--estimator", help="estimator name or file (with --prior)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--write", action="store_true", help="store the schedule with the model (difface.schedules)")
    ap.add_argument("--store", type=Path, metavar="JSON", help="only store the schedule of an earlier run's --json "
                    "(checked against the prior's SHA-256) and exit")
    args = ap.parse_args()
    if args.store:
        store_result(json.loads(args.store.read_text()))
        return
    torch.set_num_threads(args.threads)
    model = DifFace.from_pretrained(prior=args.prior, estimator=args.estimator, device=args.device)
    names = split_names(args.lq, args.calib)
    lq = tune.read_faces([args.lq / n for n in names], model.image_size)
    key = tune.work_key(model, method=args.method, nfe=args.nfe, start_step=START_STEP, names=names, lq=lq)
    def said(s: tune.SearchState) -> None:
        print(f"  pass {s.pass_index + 1} {s.best}: {tune.psnr_of(s.best_mse):.2f} dB, {s.evaluations} evaluations",
              flush=True)

    settings = tune.TuneSettings(method=args.method, nfe=args.nfe, start_step=START_STEP, passes=args.passes,
                                 batch=args.batch)
    r = tune.fit(model, lq, names, settings, workdir=tune.work_dir(key), hooks=tune.Hooks(on_position=said))
    prior = Path(r.prior_path)
    result = {**r.to_json(), "prior_file": prior.name, "threads": args.threads,
              "calibration": {"faces": names, "set": str(args.lq), "spec": args.calib}}
    print(json.dumps({k: v for k, v in result.items() if k not in ("history", "calibration", "faces")}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    if args.write:
        store_result(result)


def store_result(result: dict) -> None:
    """Store a fit result (this script's --json) with the prior it was fitted on (the bundled one's in the
    package, others in the weights cache's fitted_schedules.json)."""
    prior = Path(result["prior_path"]) if result.get("prior_path") else BUNDLED_DIR / result["prior_file"]
    if prior_sha256(prior) != result["prior_sha256"]:
        raise SystemExit(f"{prior} is not the prior this schedule was fitted on (SHA-256 differs)")
    c = result["calibration"]
    path = store_schedule(prior, method=result["method"], nfe=result["nfe"], t_start=result["t_start"],
                          eta=result["eta"], timesteps=result["timesteps"],
                          fitted_on=f"{len(c['faces'])} calibration faces ({c['spec']}: sorted faces of "
                          f"{Path(c['set']).parent.name}, disjoint from the first 100 used for evaluation), mse "
                          f"{result['mse']:.3e} to the official 100-step loop (difface.tune, "
                          "scripts/maintainer/fit_schedule.py)")
    print(f"stored in {path}")


if __name__ == "__main__":
    main()
