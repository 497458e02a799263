"""int8 prior UNet (onnxruntime static quantization, QDQ, per-channel weights) against fp32, in one process.

Calibration inputs are the UNet's own inputs (x_t, t) recorded inside the official loop (ddim250 from start step
100, i.e. t = 400, eta 0.5, seed 0 per face) on --calib-count faces of the calibration split (sorted faces 400 on,
disjoint from the 100 evaluation faces): every --every-th evaluation, at most --max-evals evaluations per run (the
512 filler run records the loop's first evaluations only: its whole loop takes minutes per face). Held-out inputs
(the next face's) measure the deviation: RMS and largest |int8 - fp32| of the eps channels, relative to the RMS of
eps. Speed: eager torch fp32, onnxruntime fp32 and onnxruntime int8 forwards at batch 1, interleaved, median of
--reps per round, minimum over --rounds. The int8 graph is written to --out; its quality on the bundled model is
measured by scripts/evaluations/eval_fast_any.py --unet-onnx OUT/unet_int8.onnx.

  python scripts/benchmarks/bench_int8.py --faces DATA/val_celebatest/lq --out int8_64 \\
      --json docs/results/int8_bundled_epyc_avx2.json          # --op-types Conv: ..._bundled_conv_epyc_avx2.json
  python scripts/benchmarks/bench_int8.py --faces FACES512 --prior prior.pth --estimator estimator.pth \\
      --op-types Conv --max-evals 6 --every 1 --calib-count 1 --reps 3 --rounds 2 --out int8_512 \\
      --json docs/results/int8_512filler_conv_epyc_avx2.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from difface.backends import ort_runner
from difface.backends.onnx_export import cached_export
from difface.commands.command_cost import cpu_kind
from difface.core import DifFace, bundled_model_paths
from difface.images import image_to_tensor, read_image


class Enough(Exception):
    """Raised by Recorder once a run has made the evaluations it was allowed."""


class Recorder(torch.nn.Module):
    """Calls the UNet and keeps every `every`-th input; raises Enough after `limit` calls of a run."""

    def __init__(self, net: torch.nn.Module, every: int, limit: int):
        super().__init__()
        self.net, self.every, self.limit, self.calls, self.kept = net, every, limit, 0, []
        self.config = net.config

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.calls >= self.limit:
            raise Enough
        if self.calls % self.every == 0:
            self.kept += [(x[b: b + 1].numpy().copy(), t[b: b + 1].numpy().astype(np.int64)) for b in range(len(x))]
        self.calls += 1
        return self.net(x, t)


def record(model: DifFace, faces: list[Path], every: int, limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(x (1, 3, S, S), t (1,)) pairs seen by the UNet in the official loop, face by face."""
    net, kept = model.prior, []
    for f in faces:
        rec = Recorder(net, every, limit)
        model.prior = rec
        try:
            with torch.no_grad():
                model.restore(image_to_tensor(read_image(f).rgb), start_step=100, eta=0.5, seeds=[0])
        except Enough:
            pass
        kept += rec.kept
    model.prior = net
    return kept


class Reader(CalibrationDataReader):
    def __init__(self, pairs):
        self.it = iter([{"x": x, "t": t} for x, t in pairs])

    def get_next(self):
        return next(self.it, None)


def timed(fn, x, t, reps: int) -> float:
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(x, t)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=Path, required=True, help="folder of aligned low-quality faces")
    ap.add_argument("--prior"), ap.add_argument("--estimator")
    ap.add_argument("--calib-count", type=int, default=8)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--max-evals", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--op-types", help="comma list of ONNX op types to quantize (default: every one onnxruntime can)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prior, estimator = (args.prior, args.estimator) if args.prior else (str(p) for p in bundled_model_paths())
    model = DifFace.from_pretrained(prior=prior, estimator=estimator, device="cpu")
    names = sorted(args.faces.glob("*.png"))
    first = 400 if len(names) > 400 + args.calib_count else 0
    calib = record(model, names[first: first + args.calib_count], args.every, args.max_evals)
    held = record(model, names[first + args.calib_count: first + args.calib_count + 1], args.every, args.max_evals)
    fp32_path, _ = cached_export(model.prior, source=prior)
    args.out.mkdir(parents=True, exist_ok=True)
    int8_path = args.out / "unet_int8.onnx"
    t0 = time.perf_counter()
    quantize_static(str(fp32_path), str(int8_path), Reader(calib), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=args.op_types.split(",") if args.op_types else None)
    quant_s = time.perf_counter() - t0
    run32, desc = ort_runner(fp32_path, threads=args.threads)
    run8, _ = ort_runner(int8_path, threads=args.threads)
    c = model.prior.config.in_channels
    dev = []
    for x, t in held:
        a, b = run32([x, t])[:, :c], run8([x, t])[:, :c]
        dev.append((float(np.sqrt(np.mean((b - a) ** 2))), float(np.abs(b - a).max()), float(np.sqrt(np.mean(a * a)))))
    x, t = held[0]
    xt, tt = torch.from_numpy(x), torch.from_numpy(t)
    fns = {"torch eager fp32": lambda x_, t_: model.prior(xt, tt), "onnxruntime fp32": lambda x_, t_: run32([x, t]),
           "onnxruntime int8": lambda x_, t_: run8([x, t])}
    speed = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn(x, t)  # warm-up
        for _ in range(args.rounds):
            for k, fn in fns.items():
                speed[k].append(timed(fn, x, t, args.reps))
    best = {k: min(v) for k, v in speed.items()}
    rms, mx, ref = (float(np.mean([d[i] for d in dev])) for i in range(3))
    report = {"prior": Path(prior).name, "op_types": args.op_types or "all", "image_size": model.image_size,
              "calibration_inputs": len(calib),
              "held_out_inputs": len(held), "held_out_t": sorted({int(t[0]) for _, t in held}),
              "quantize_seconds": quant_s, "threads": args.threads, "cpu": cpu_kind(),
              "load_average_1min": os.getloadavg()[0], "onnxruntime": desc, "seconds_per_forward": best,
              "int8_vs_torch_fp32": best["torch eager fp32"] / best["onnxruntime int8"],
              "int8_vs_onnxruntime_fp32": best["onnxruntime fp32"] / best["onnxruntime int8"],
              "eps_rms_deviation": rms, "eps_max_deviation": mx, "eps_rms": ref, "relative_rms_deviation": rms / ref,
              "int8_graph_bytes": int8_path.stat().st_size, "fp32_graph_bytes": Path(fp32_path).stat().st_size}
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
