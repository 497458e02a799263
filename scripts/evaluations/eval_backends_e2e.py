"""`difface restore --backend B` end to end on validation faces: the written PNGs of each backend against torch's.

  python scripts/evaluations/eval_backends_e2e.py --count 100 --json docs/results/backends_e2e_100.json

The first --count faces of splits/celeba64_val.txt (the bundled model's held-out faces, from
../shared/data/celeba-aligned-89x109) are aligned to 64x64 (`difface data align`), degraded with the
celeba-test preset (`difface degrade --seed 0`) and restored by the real command once per backend, with
the bundled model's defaults (automatic start, eta 0). Reported per backend: how many PNGs are
byte-identical to torch's, the largest pixel difference (of 255), the lowest and mean PSNR to the torch
result, and the wall seconds of the command (sequential runs: a rough figure, not a benchmark).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT.parent / "shared" / "data" / "celeba-aligned-89x109"


def _run(*args: str, ok: tuple[int, ...] = (0,)) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "difface", *args], stdout=subprocess.DEVNULL)
    if r.returncode not in ok:
        sys.exit(f"difface {' '.join(args)} exited with {r.returncode}")
    return time.perf_counter() - t0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--backends", default="onnxruntime,openvino")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not RAW.is_dir():
        sys.exit(f"skipped: {RAW} is absent (the research-only CelebA crops of ../shared/data)")
    stems = (ROOT / "splits" / "celeba64_val.txt").read_text().split()[: args.count]
    work = Path(tempfile.mkdtemp(prefix="difface-e2e-"))
    try:
        raw = work / "raw"
        raw.mkdir()
        for s in stems:
            src = RAW / (Path(s).stem + ".jpg")
            shutil.copy(src, raw / src.name)
        _run("data", "align", str(raw), "-o", str(work / "al"), "--size", "64", ok=(0, 1))  # 1: some had no face
        _run("degrade", str(work / "al"), "-o", str(work / "deg"), "--degradation", "celeba-test", "--seed", "0")
        lq = work / "deg" / "lq"
        common = ["restore", str(lq), "--aligned", "--device", "cpu", "--batch-size", "8"]
        seconds = {"torch": _run(*common, "-o", str(work / "out_torch"))}
        rows = []
        for b in args.backends.split(","):
            seconds[b] = _run(*common, "-o", str(work / f"out_{b}"), "--backend", b)
            ref_files = sorted((work / "out_torch").glob("*.png"))
            same, worst, psnrs = 0, 0, []
            for f in ref_files:
                other = work / f"out_{b}" / f.name
                same += f.read_bytes() == other.read_bytes()
                x, y = np.asarray(Image.open(f)), np.asarray(Image.open(other))
                worst = max(worst, int(np.abs(x.astype(int) - y.astype(int)).max()))
                psnrs.append(_psnr(x, y))
            finite = [p for p in psnrs if math.isfinite(p)]
            rows.append({"backend": b, "faces": len(ref_files), "identical": same, "max_pixel_diff": worst,
                         "min_psnr": round(min(finite), 2) if finite else math.inf,
                         "mean_psnr_of_differing": round(sum(finite) / len(finite), 2) if finite else math.inf,
                         "seconds": round(seconds[b], 1)})
        load = os.getloadavg()[0]
        aligned = len(list((work / "al").glob("*.png")))
        print(f"{len(stems)} validation photos, {aligned} aligned, torch run {seconds['torch']:.1f} s, "
              f"load average {load:.1f}")
        print("| backend | PNGs identical to torch's | largest pixel difference | lowest PSNR vs torch | seconds |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['backend']} | {r['identical']} of {r['faces']} | {r['max_pixel_diff']} | "
                  f"{r['min_psnr']} dB | {r['seconds']} |")
        if args.json:
            args.json.write_text(json.dumps({"faces": len(stems), "torch_seconds": round(seconds["torch"], 1),
                                             "load_average": load, "rows": rows}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
