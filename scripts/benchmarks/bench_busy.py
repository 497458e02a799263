"""Seconds of `difface restore` on one face and one whole photo, alone and beside one CPU-bound program, for two
source trees (before and after a change), with the load average before every measurement.

    python scripts/benchmarks/bench_busy.py --before-src OLD_TREE/src --json docs/results/busy_machine.json

Each measurement runs `python -m difface restore` in a fresh process (PYTHONPATH = the tree's src) on
examples/astronaut_lq.png: aligned (`--aligned`), and as a whole photo (detection, the band merge, Lanczos
background), both at `--start-step 20` (t = 80, the bundled model's fixed start) so that the diffusion runs.
"busy": a `python -c "while True: pass"` process started by this script runs beside it (not pinned) and is
killed afterwards. Every case runs once untimed first (imports, the ONNX export into the benchmark's own
weights cache), then `--repeats` rounds in which every case runs in turn; a figure is the median of its
rounds. "restore s" is the time the command reports for the restoration itself (models loaded); "wall s" the
whole process. The load average (1 minute, and the running count of /proc/loadavg) is read before each
measurement: on a machine shared with other work every figure moves with it, so read them side by side.

It also measures how far the onnxruntime results are from torch fp32 on faces (max abs difference of the
float results in [0, 1], same seeds): the astronaut and, with --faces GLOB, more aligned faces.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from difface import threads
from difface.backends import available_backends
from difface.core import DifFace

ROOT = Path(__file__).resolve().parents[2]
FACE = ROOT / "examples" / "astronaut_lq.png"
START = ["--start-step", "20"]
INPUTS = {"face": ["--aligned", *START], "photo": ["--bg-upsampler", "lanczos", "--upscale", "1", *START]}
# case -> (tree, extra arguments, extra environment)
CASES = {
    "before: defaults": ("before", [], {}),
    "before: OMP_NUM_THREADS=1": ("before", [], {"OMP_NUM_THREADS": "1"}),
    "after: defaults": ("after", [], {}),
    "after: --backend torch": ("after", ["--backend", "torch"], {}),
    "after: --backend torch --threads 2": ("after", ["--backend", "torch", "--threads", "2"], {}),
}
SUMMARY = re.compile(r"inputs in ([0-9.]+) s")


def load() -> dict:
    """1-minute load average and the running count of /proc/loadavg (None where unreadable)."""
    try:
        parts = Path("/proc/loadavg").read_text().split()
        return {"load1": float(parts[0]), "running": int(parts[3].split("/")[0])}
    except (OSError, ValueError, IndexError):
        return {"load1": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "running": None}


def cpu_name() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def env_for(src: Path, home: Path, extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "KMP_"))}
    return {**env, "PYTHONPATH": str(src), "DIFFACE_HOME": str(home), **extra}


def run_once(src: Path, home: Path, case: str, what: str, out: Path, timeout: float) -> dict:
    tree, extra_args, extra_env = CASES[case]
    cmd = [sys.executable, "-m", "difface", "restore", str(FACE), "-o", str(out), *INPUTS[what], *extra_args]
    rec = {"case": case, "input": what, **load()}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, env=env_for(src, home, extra_env), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**rec, "wall_s": None, "restore_s": None, "rc": "timeout"}
    rec["wall_s"] = round(time.perf_counter() - t0, 2)
    m = SUMMARY.search(p.stderr)
    rec.update(restore_s=float(m[1]) if m else None, rc=p.returncode)
    threads = re.search(r"CPU threads: .*", p.stderr)
    rec["threads_line"] = threads[0] if threads else None
    if p.returncode:
        rec["stderr_tail"] = p.stderr[-400:]
    return rec


def measure(srcs: dict, cases: list[str], condition: str, repeats: int, work: Path, timeout: float) -> list[dict]:
    """One untimed run per tree (imports, the ONNX export), then `repeats` interleaved rounds; each record
    tagged with `condition`."""
    competitor = None
    if condition == "busy":
        competitor = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    runs = []
    try:
        warm = {CASES[c][0]: c for c in reversed(cases)}.values()
        plan = [(-1, c, "face") for c in warm] + [(r, c, w) for r in range(repeats) for c in cases for w in INPUTS]
        for r, case, what in plan:
            tree = CASES[case][0]
            rec = run_once(srcs[tree], work / f"home-{tree}", case, what, work / f"out-{len(runs)}-{r}", timeout)
            rec.update(condition=condition, round=r)
            print(f"[{condition} round {r}] {case} / {what}: restore {rec['restore_s']} s, wall {rec['wall_s']} s, "
                  f"load {rec['load1']} (running {rec['running']})", file=sys.stderr, flush=True)
            if r >= 0:
                runs.append(rec)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    return runs


def median_of(group: list[dict], field: str) -> float | None:
    vals = [r[field] for r in group if r[field] is not None]
    return round(statistics.median(vals), 2) if vals and len(vals) == len(group) else None


def summarise(runs: list[dict]) -> list[dict]:
    rows = []
    for key in dict.fromkeys((r["condition"], r["case"], r["input"]) for r in runs):
        group = [r for r in runs if (r["condition"], r["case"], r["input"]) == key]
        rows.append({"condition": key[0], "case": key[1], "input": key[2], "restore_s": median_of(group, "restore_s"),
                     "wall_s": median_of(group, "wall_s"), "load1": [r["load1"] for r in group],
                     "running": [r["running"] for r in group], "threads_line": group[-1].get("threads_line")})
    return rows


def deviation(faces: list[str]) -> dict:
    """Max / mean abs difference of onnxruntime's and OpenVINO's results from torch fp32 (this process's difface)."""
    torch.set_num_threads(threads.choose().threads)  # the rule: this measurement is not timed
    imgs = [cv2.resize(cv2.imread(f)[:, :, ::-1], (64, 64), interpolation=cv2.INTER_AREA) for f in faces]
    x = torch.from_numpy(np.stack(imgs).copy()).permute(0, 3, 1, 2).float() / 255
    out, res = {}, {"faces": len(faces), "start_step": int(START[1])}
    for b in [b for b in ("torch", "onnxruntime", "openvino") if b in available_backends()]:
        model = DifFace.from_pretrained(device="cpu", backend=b)
        out[b] = model.restore(x, start_step=int(START[1]), seeds=list(range(len(faces)))).result.float()
    for b in [b for b in out if b != "torch"]:
        d = (out[b] - out["torch"]).abs()
        res[b] = {"max_abs": float(d.max()), "mean_abs": float(d.mean())}
    return res


def table(rows: list[dict]) -> str:
    lines = ["| condition | case | input | restore s (median) | wall s (median) | load average before each | threads |",
             "|---|---|---|---:|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r['condition']} | {r['case']} | {r['input']} | {r['restore_s']} | {r['wall_s']} | "
                     f"{', '.join(str(v) for v in r['load1'])} | {r['threads_line'] or ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before-src", type=Path, help="src folder of the tree to compare with (without: after only)")
    p.add_argument("--after-src", type=Path, default=ROOT / "src", help="src folder of this change (default: here)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--conditions", default="idle,busy", help="idle, busy or both (default idle,busy)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of: {', '.join(CASES)}")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before a run counts as timed out")
    p.add_argument("--faces", help="glob of more aligned faces for the deviation (default: the astronaut only)")
    p.add_argument("--json", type=Path, help="write the runs, the table and the deviation here")
    p.add_argument("--deviation-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    faces = [str(FACE)] + (sorted(str(f) for f in Path().glob(args.faces)) if args.faces else [])
    if args.deviation_only:
        print(json.dumps(deviation(faces)))
        return 0
    srcs = {"after": args.after_src.resolve()}
    if args.before_src:
        srcs["before"] = args.before_src.resolve()
    cases = [c for c in args.cases.split(",") if CASES[c][0] in srcs]
    started = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **load()}
    runs = []
    with tempfile.TemporaryDirectory(prefix="difface-busy-") as t:
        for condition in args.conditions.split(","):
            runs += measure(srcs, cases, condition, args.repeats, Path(t), args.timeout)
        dev = subprocess.run([sys.executable, __file__, "--deviation-only", *(["--faces", args.faces] if args.faces
                              else [])], env=env_for(srcs["after"], Path(t) / "home-after", {}),
                             capture_output=True, text=True)
    rows = summarise(runs)
    text = table(rows)
    print(text)
    shown = [("OLD/src" if args.before_src and a == str(args.before_src) else a) for a in sys.argv]  # no local paths
    result = {"command": " ".join([Path(sys.executable).name, *shown]), "started": started,
              "ended": {"time": time.strftime("%Y-%m-%d %H:%M:%S"), **load()},
              "machine": {"cpu": cpu_name(), "usable_cores": len(os.sched_getaffinity(0))
                          if hasattr(os, "sched_getaffinity") else os.cpu_count()},
              "inputs": {k: " ".join(v) for k, v in INPUTS.items()}, "cases": {k: list(v) for k, v in CASES.items()},
              "summary": rows, "runs": runs,
              "deviation": json.loads(dev.stdout) if dev.returncode == 0 else {"error": dev.stderr[-400:]}}
    print(json.dumps(result["deviation"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
