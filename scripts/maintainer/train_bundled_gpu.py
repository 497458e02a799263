"""Train the bundled 64x64 prior and estimator on one GPU within a time budget.

  python scripts/maintainer/train_bundled_gpu.py --out runs/gpu64                  # 8 minutes of training
  python scripts/maintainer/train_bundled_gpu.py --out runs/gpu_smoke --smoke  # the same path on the CPU, a few steps

What it does:
  1. data (once, outside the budget): scripts/maintainer/prepare_celeba64.py aligns ../shared/data/celeba-aligned-89x109
     with `difface data align` into WORK/{train,val,val_celebatest} (skipped when WORK/train holds
     images), and `difface degrade WORK/val -o WORK/val_range64 --degradation range64 --seed 1 --limit 64`
     gives the estimator's validation pairs;
  2. both trainings start at once on the same GPU (configs/train/prior_gpu64.yaml and
     estimator_gpu64.yaml: large batches, bf16) for a probe of --probe-steps steps in their final
     run folders;
  3. from the speed the probe measured (median steps/s of its logged windows after the first), each
     run is continued with `difface train ... --resume RUN --max-steps N`, N chosen so that it ends
     within --minutes of the start (the probe counts; a safety factor covers validation, checkpoints
     and start-up); with no --max-steps cap the estimator's cosine schedule spans the whole run;
  4. prints the exported weights (RUN/prior/prior.safetensors, RUN/estimator/estimator.safetensors,
     EMA), the steps and the time taken, and with --eval compares the new estimator with the bundled
     one on 200 validation faces (scripts/evaluations/eval_estimator.py, mild-x2 and severe-x4 recipes).

--profile bundled (default) keeps the prior at the bundled size (the CPU default must stay under
1 s per face) and widens the estimator (embed_dim 96, 4x4 blocks); --profile large also widens the
prior (model_channels 64, 9.6M parameters) for GPU users: slower on CPUs (see docs/training.md).
--smoke: CPU, batch 4, 2 + 2 steps, no workers; checks the whole path here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROFILES = {
    "bundled": {"prior": [], "estimator": []},
    "large": {"prior": ["model.unet.model_channels=64", "model.unet.num_head_channels=64"],
              "estimator": ["model.swinir.embed_dim=120", "model.swinir.depths=[4,4,4,4,4,4]",
                            "model.swinir.num_heads=[6,6,6,6,6,6]"]},
}
SMOKE = ["optim.batch_size=4", "data.num_workers=0", "data.val_count=4", "log_every=1", "sample_every=0",
         "checkpoint_every=0"]


def sh(cmd: list[str], **kw) -> subprocess.Popen:
    print("+ " + " ".join(cmd), flush=True)
    return subprocess.Popen(cmd, cwd=ROOT, **kw)


def prepare_data(raw: Path, work: Path) -> None:
    t0 = time.time()
    if not (work / "train").is_dir() or not any((work / "train").iterdir()):
        if sh([sys.executable, str(ROOT / "scripts" / "maintainer" / "prepare_celeba64.py"), "--raw", str(raw),
               "--work", str(work)]).wait():
            sys.exit("data preparation failed")
    if not (work / "val_range64" / "lq").is_dir():
        if sh(["difface", "degrade", str(work / "val"), "-o", str(work / "val_range64"), "--degradation", "range64",
               "--seed", "1", "--limit", "64"]).wait():
            sys.exit("validation pairs failed")
    print(f"data ready in {work} ({time.time() - t0:.0f} s)", flush=True)


def train_cmd(task: str, args: argparse.Namespace, run: Path, steps: int, resume: bool) -> list[str]:
    cmd = ["difface", "train", task, "--max-steps", str(steps), "--device", args.device]
    if resume:
        return cmd + ["--resume", str(run)]
    cfg = "configs/train/prior_gpu64.yaml" if task == "prior" else "configs/train/estimator_gpu64.yaml"
    val = args.work / ("val_celebatest" if task == "prior" else "val_range64")
    sets = [f"data.val_lq={val / 'lq'}", f"data.val_hq={val / 'hq'}", *PROFILES[args.profile][task]]
    if args.smoke:
        sets += SMOKE + (["sample.num_samples=2"] if task == "prior" else [])
    cmd += ["--config", cfg, "--data", str(args.work / "train"), "--out", str(run)]
    for s in sets:
        cmd += ["--set", s]
    return cmd + (["--threads", "1"] if args.smoke else [])


def measured_speed(run: Path) -> float:
    """Median steps/s of the logged windows after the first (which holds start-up and warm-up)."""
    rows = [json.loads(x) for x in (run / "train.jsonl").read_text().splitlines() if x.strip()]
    rates = [r["steps_per_s"] for r in rows[1:] if r.get("steps_per_s")] or [rows[-1]["steps_per_s"]]
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="run folder: OUT/prior and OUT/estimator")
    ap.add_argument("--raw", type=Path, default=ROOT.parent / "shared" / "data" / "celeba-aligned-89x109")
    ap.add_argument("--work", type=Path, default=Path("celeba64"), help="aligned 64x64 data folder")
    ap.add_argument("--minutes", type=float, default=8.0, help="training budget, probe included (default 8)")
    ap.add_argument("--probe-steps", type=int, default=60)
    ap.add_argument("--safety", type=float, default=0.85, help="share of the remaining time planned as steps")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="bundled")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--smoke", action="store_true", help="CPU, batch 4, probe 2 steps + 2 more: checks the path")
    ap.add_argument("--eval", action="store_true", help="compare the new estimator with the bundled one")
    args = ap.parse_args()
    if args.smoke:
        args.device, args.probe_steps = "cpu", 2
    else:
        import torch

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            sys.exit("no CUDA device: run on a GPU machine, or check the path here with --smoke")
    prepare_data(args.raw, args.work)
    runs = {t: args.out / t for t in ("prior", "estimator")}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args.out.mkdir(parents=True, exist_ok=True)
    logs = {t: open(args.out / f"{t}.log", "a") for t in runs}  # noqa: SIM115 - closed at exit
    t0 = time.time()
    probes = {t: sh(train_cmd(t, args, runs[t], args.probe_steps, False), stdout=logs[t], stderr=subprocess.STDOUT,
                    env=env) for t in runs}
    for t, p in probes.items():
        if p.wait():
            sys.exit(f"{t} probe failed: see {args.out / (t + '.log')}")
    elapsed = time.time() - t0
    left = args.minutes * 60 - elapsed
    plan = {}
    for t in runs:
        speed = measured_speed(runs[t])
        plan[t] = args.probe_steps + 2 if args.smoke else args.probe_steps + max(0, int(speed * left * args.safety))
        print(f"{t}: probe {args.probe_steps} steps, {speed:.2f} steps/s -> {plan[t]} steps in total "
              f"({left:.0f} s left of the budget)", flush=True)
    mains = {t: sh(train_cmd(t, args, runs[t], plan[t], True), stdout=logs[t], stderr=subprocess.STDOUT, env=env)
             for t in runs}
    for t, p in mains.items():
        if p.wait():
            sys.exit(f"{t} training failed: see {args.out / (t + '.log')}")
    total = time.time() - t0
    print(f"trained in {total / 60:.1f} min (budget {args.minutes} min):", flush=True)
    for t in runs:
        print(f"  {t}: {plan[t]} steps -> {runs[t] / (t + '.safetensors')}")
    if args.eval:
        sh([sys.executable, "scripts/evaluations/eval_estimator.py", "--val", str(args.work / "val"), "--count",
            "4" if args.smoke else "200", "--recipes", "mild-x2,severe-x4", "--estimator", "bundled=bundled",
            "--estimator", f"new={runs['estimator'] / 'estimator.safetensors'}", "--threads", "4",
            "--json", str(args.out / "eval_estimator.json")]).wait()


if __name__ == "__main__":
    main()
