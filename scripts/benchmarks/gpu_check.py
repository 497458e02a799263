"""The GPU check of the speed work (run it through scripts/benchmarks/gpu_check.sh): one JSON + one text table.

  scripts/benchmarks/gpu_check.sh                       # CUDA, official 512 networks, filler weights, < 8 min (H100)
  scripts/benchmarks/gpu_check.sh --device cpu --quick  # dry run on the CPU, small networks (tests/test_gpu_check.py)

Measures, per setting, the min seconds of one UNet and one estimator forward at batch 1 and 8 and from
them the seconds per face for the official loop (100 UNet evaluations), DDIM 10, the fast preset's
FAST_NFE (difface.presets: DPM-Solver++(2M) on its fitted schedule) and DDIM 5 (estimator + NFE evaluations,
per face); one timed end-to-end DifFace.restore at 10 NFE per setting; the
peak GPU memory; and the fp32 parity with the CPU golden vectors (tests/fixtures/golden: unet_small,
swinir_small and the official-sampler replay sampler_small): max abs difference and whether bit-identical.

Settings: eager fp32 (the official path, TF32 off), fp16 and bf16 autocast, bf16 + channels-last, compiled
(torch.compile, bf16 + channels-last), CUDA graphs (bf16 UNet forward captured once, replayed),
onnxruntime-gpu CUDA EP (fp16 graph) and TensorRT EP when they load. Each setting runs inside the time
budget (--budget seconds in all); what does not fit, fails or is not installed is listed with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from difface import models  # noqa: E402
from difface.core import DifFace  # noqa: E402
from difface.device import autocast, fast_module  # noqa: E402
from difface.presets import FAST_NFE  # noqa: E402

GOLDEN = ROOT / "tests" / "fixtures" / "golden"


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def min_time(fn, dev: torch.device, reps: int) -> float:
    fn()
    sync(dev)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def parity(dev: torch.device, quick: bool = False) -> dict:
    """fp32 on `dev` against the CPU golden vectors: max abs difference and bit identity."""
    from difface.diffusion.sampling import replay_noise

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    unet = models.fill_deterministic(models.build("unet_small")).to(dev)
    swin = models.fill_deterministic(models.build("swinir_small")).to(dev)
    out = {}
    with torch.inference_mode():
        g = np.load(GOLDEN / "unet_small.npz")
        o = unet(torch.from_numpy(g["x_b2"]).to(dev), torch.from_numpy(g["t_b2"]).to(dev)).cpu().numpy()
        out["unet_small"] = {"max_abs_diff": float(np.abs(o - g["out_b2"]).max()), "bit_identical":
                             bool(np.array_equal(o, g["out_b2"]))}
        g = np.load(GOLDEN / "swinir_small.npz")
        o = swin(torch.from_numpy(g["x"]).to(dev)).cpu().numpy()
        out["swinir_small"] = {"max_abs_diff": float(np.abs(o - g["out"]).max()), "bit_identical":
                               bool(np.array_equal(o, g["out"]))}
    g = np.load(GOLDEN / "sampler_small.npz")
    model = DifFace.from_modules(unet, swin)
    noises = [torch.from_numpy(g["q_noise"])] + [torch.from_numpy(n) for n in g["step_noises"]]
    res = model.restore(torch.from_numpy(g["y0"]).to(dev), start_step=20, eta=0.5, noise_fn=replay_noise(noises))
    o = res.result.cpu().numpy()
    out["sampler_small_replay"] = {"max_abs_diff": float(np.abs(o - g["final"]).max()),
                                   "bit_identical": bool(np.array_equal(o, g["final"]))}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small networks, batch 1 and 2, one rep (a dry run)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    ap.add_argument("--budget", type=float, default=420.0, help="seconds for all settings (default 420)")
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print(f"error: --device cuda but torch sees no CUDA device (torch {torch.__version__})", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    names = ("unet_small", "swinir_small") if quick else ("unet_ffhq512", "swinir_restoration512")
    batches = (1, 2) if quick else (1, 8)
    reps = args.reps or (1 if quick else 5)
    report: dict = {"device": str(dev), "quick": quick, "torch": torch.__version__, "python": platform.python_version(),
                    "networks": names, "batches": batches, "reps": reps, "settings": [], "skipped": []}
    if dev.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(dev)
    t0 = time.perf_counter()
    report["parity_fp32_vs_cpu_golden"] = parity(dev, quick)
    print(f"parity: {json.dumps(report['parity_fp32_vs_cpu_golden'])} ({time.perf_counter() - t0:.1f} s)", flush=True)

    prior = models.fill_deterministic(models.build(names[0])).to(dev).eval()
    est = models.fill_deterministic(models.build(names[1])).to(dev).eval()
    size = prior.config.image_size
    gpu = dev.type == "cuda"
    settings = [("eager fp32", "torch", torch.float32, False, False), ("fp16", "torch", torch.float16, False, False),
                ("bf16", "torch", torch.bfloat16, False, False),
                ("bf16 channels-last", "torch", torch.bfloat16, True, False),
                ("compiled bf16 channels-last", "torch", torch.bfloat16, True, True),
                ("CUDA graphs bf16", "cudagraph", torch.bfloat16, False, False),
                ("onnxruntime CUDA EP fp16", "ort-cuda", torch.float16, False, False),
                ("onnxruntime TensorRT EP fp16", "ort-trt", torch.float16, False, False)]
    for label, kind, dt, cl, comp in settings:
        if quick and not gpu and label not in ("eager fp32", "bf16 channels-last"):
            report["skipped"].append({"setting": label, "reason": "left out of the CPU dry run (--quick)"})
            continue
        if not gpu and (dt == torch.float16 or kind != "torch" or (comp and quick)):
            report["skipped"].append({"setting": label, "reason": "GPU only" if dt == torch.float16 or kind != "torch"
                                      else "compilation is minutes on a CPU; left out of --quick"})
            continue
        left = args.budget - (time.perf_counter() - t_start)
        need = 240 if kind == "ort-trt" else 20  # a TensorRT engine build of the 512 UNet takes minutes
        if left < need:
            report["skipped"].append({"setting": label, "reason": f"{left:.0f} s of the {args.budget:.0f} s budget "
                                      f"left, {need} s needed"})
            continue
        try:
            row = measure(label, kind, dt, cl, comp, prior, est, size, batches, reps, dev, quick)
        except Exception as e:  # noqa: BLE001 - a setting that cannot run is reported, the others go on
            report["skipped"].append({"setting": label, "reason": f"{type(e).__name__}: {e}".strip()[:500]})
            traceback.print_exc()
            continue
        report["settings"].append(row)
        print(f"{label}: {json.dumps(row)}", flush=True)
        write(report, args.out, t_start)  # after every setting: a run cut short still leaves its rows
    print(write(report, args.out, t_start))
    return 0


def write(report: dict, out: Path, t_start: float) -> str:
    """Fill in the speed-ups, write gpu_check.json and gpu_check.txt; returns the table."""
    first = report["settings"][0] if report["settings"] else None
    batches = report["batches"]
    base = {b: first["per_face_s"][str(b)]["official_100"] for b in batches} if first else {}
    for row in report["settings"]:
        row["speedup_vs_eager_fp32_official"] = {str(b): base[b] / row["per_face_s"][str(b)]["official_100"]
                                                 for b in batches}
    report["wall_s"] = time.perf_counter() - t_start
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    table = text_table(report)
    (out / "gpu_check.txt").write_text(table + "\n")
    return table


def measure(label, kind, dt, cl, comp, prior, est, size, batches, reps, dev, quick) -> dict:
    """One setting: forwards at each batch, per-face seconds for 100 / 10 / 5 evaluations, one restore."""
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    row: dict = {"setting": label, "forward_s": {}, "per_face_s": {}, "restore_10nfe_s": {}}
    if kind in ("torch", "cudagraph"):
        net_p = fast_module(prior, channels_last=cl, compile=comp)
        net_e = fast_module(est, channels_last=cl, compile=comp)
    else:
        net_p, net_e = ort_networks(kind, prior, est, size, dev)
    ref = None
    for b in batches:
        g = torch.Generator().manual_seed(b)
        x = (torch.rand(b, 3, size, size, generator=g) * 2 - 1).to(dev)
        y = torch.rand(b, 3, size, size, generator=g).to(dev)
        t = torch.full((b,), 396, dtype=torch.long, device=dev)
        if kind == "cudagraph":
            run_p = cuda_graph(net_p, x, t, dt, dev)
        else:
            def run_p(x=x, t=t):
                with torch.inference_mode(), autocast(dev, dt if kind == "torch" else torch.float32):
                    return net_p(x, t)

        def run_e(y=y):
            with torch.inference_mode(), autocast(dev, dt if kind in ("torch", "cudagraph") else torch.float32):
                return net_e(y)

        up = min_time(run_p, dev, reps)
        ue = min_time(run_e, dev, reps)
        row["forward_s"][str(b)] = {"unet": up, "estimator": ue}
        row["per_face_s"][str(b)] = {f"{name}": (ue + n * up) / b for name, n in
                                     (("official_100", 100), ("ddim_10", 10), ("fast", FAST_NFE),
                                                                 ("ddim_5", 5))}
        if ref is None:
            ref = run_p().float().cpu()
    # one whole restoration at 10 NFE (batch 1) through DifFace, the code path of `difface restore`
    if kind in ("torch", "ort-cuda", "ort-trt"):
        model = DifFace.from_modules(net_p, net_e)
        model.image_size = size
        lq = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev)
        nfe = 2 if quick else 10  # the dry run only checks the code path
        for b in batches[:1]:
            def run_r():
                return model.restore(lq, start_step=100, seeds=[0], sampler="ddim", nfe=nfe,
                                     dtype=dt if kind == "torch" else torch.float32)
            row["restore_10nfe_s"][str(b)] = min_time(run_r, dev, 1 if quick else 2)
    row["setup_and_measure_s"] = time.perf_counter() - t0
    row["peak_gpu_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    row["unet_out_b1_absmean"] = float(ref.abs().mean())
    return row


def cuda_graph(net, x, t, dt, dev):
    """The UNet forward captured as a CUDA graph on static x, t; returns a replay function."""
    s = torch.cuda.Stream(dev)
    s.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(s), torch.inference_mode(), autocast(dev, dt):
        for _ in range(2):
            net(x, t)
    torch.cuda.current_stream(dev).wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.inference_mode(), autocast(dev, dt):
        out = net(x, t)

    def replay():
        graph.replay()
        return out

    return replay


def ort_networks(kind, prior, est, size, dev):
    """onnxruntime-gpu stand-ins (fp16 graphs) with the CUDA or TensorRT execution provider."""
    import onnxruntime as ort

    from difface.backends import RuntimeNet, ort_runner
    from difface.backends.onnx_export import cached_export

    provider = {"ort-cuda": "CUDAExecutionProvider", "ort-trt": "TensorrtExecutionProvider"}[kind]
    if provider not in ort.get_available_providers():
        raise RuntimeError(f"{provider} is not in this onnxruntime ({', '.join(ort.get_available_providers())}); "
                           "pip install onnxruntime-gpu")
    nets = []
    for net in (prior, est):
        path, _ = cached_export(net.cpu(), dtype="fp16", image_size=size)
        net.to(dev)
        run, desc = ort_runner(path, providers=[provider, "CPUExecutionProvider"])
        if provider not in desc:
            raise RuntimeError(f"{provider} did not load ({desc})")
        nets.append(RuntimeNet(run, net.config, desc, np.float16).to(dev))
    return nets


def text_table(report: dict) -> str:
    bs = report["batches"]
    head = ["setting"] + [f"{k} b{b} (s/face)" for b in bs for k in ("official 100", "ddim 10",
                                                                       f"fast preset {FAST_NFE}", "ddim 5")]
    head += ["restore 10 NFE b1 (s)", "peak GPU MB", "vs eager fp32 (official, b1)"]
    lines = [f"difface GPU check: {report.get('gpu', report['device'])}, torch {report['torch']}, networks "
             f"{', '.join(report['networks'])}, filler weights, min of {report['reps']} reps",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report["settings"]:
        cells = [r["setting"]]
        for b in bs:
            pf = r["per_face_s"][str(b)]
            cells += [f"{pf[k]:.3f}" for k in ("official_100", "ddim_10", "fast", "ddim_5")]
        rs = r["restore_10nfe_s"].get(str(bs[0]))
        cells += ["" if rs is None else f"{rs:.3f}", "" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.0f}",
                  f"{r['speedup_vs_eager_fp32_official'][str(bs[0])]:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("fp32 parity with the CPU golden vectors: " + ", ".join(
        f"{k} max|d| {v['max_abs_diff']:.1e}{' (bit-identical)' if v['bit_identical'] else ''}"
        for k, v in report["parity_fp32_vs_cpu_golden"].items()))
    for s in report["skipped"]:
        lines.append(f"skipped {s['setting']}: {s['reason']}")
    lines.append(f"wall time {report['wall_s']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
