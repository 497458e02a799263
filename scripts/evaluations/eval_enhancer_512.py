"""The official-512 enhancer file (filler weights) against the Python API and the restore step, face by face.

  PYTHONPATH=src python scripts/evaluations/eval_enhancer_512.py --work /tmp/enh512 --count 20 \
      --json docs/results/enhancer_eval_512.json

The long sibling of `eval_enhancer.py` for the paper's networks: every 512 face costs three runs of ten 512 UNet
forwards (the file through onnxruntime, `Enhancer` in torch, and `RestorePipeline.restore_aligned`, the step
`difface restore --aligned` runs, with its own noise), so it keeps one JSON line per finished face in `--work`
and a rerun goes on where it stopped. The deterministic filler weights stand in for the official ones (which
cannot be fetched here): the figures check the file's arithmetic and cost, not the 512 model's quality.

Per face: the mean and largest absolute difference of the file's output to the Python API's (in [0, 1]), and
PSNR-Y to the 64 px truth of the input, the file's output and the restore step's output (each reduced to 64 px).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from eval_enhancer import RAW, api_output, at_model_size, make_faces, q8  # noqa: E402  (same folder)

from difface import models
from difface.atomic import atomic_write_bytes
from difface.config import DEFAULT_SEED, ModelOptions, RestoreOptions, SamplingOptions
from difface.core import DifFace
from difface.enhancer import Enhancer, export_enhancer
from difface.images import LoadedImage, read_image
from difface.metrics.psnr_ssim import psnr
from difface.pipeline import RestorePipeline
from difface.weights import save_network


def prepare(work: Path, count: int, threads: int) -> tuple[Path, Path, Path]:
    """Crops, truths and the exported 512 file in `work`, each made once."""
    if not (work / "deg" / "lq").is_dir():
        make_faces(work, count)
    files = work / "filler512"
    prior_f, est_f = files / "prior.safetensors", files / "estimator.safetensors"
    if not est_f.is_file():
        files.mkdir(exist_ok=True)
        for name, f in (("unet_ffhq512", prior_f), ("swinir_restoration512", est_f)):
            save_network(models.fill_deterministic(models.build(name)), f)
    onnx_path = work / "filler512.onnx"
    if not onnx_path.is_file():
        t0 = time.perf_counter()
        model = DifFace.from_pretrained(prior=str(prior_f), estimator=str(est_f), device="cpu")
        export_enhancer(Enhancer(model, SamplingOptions(None, None, "ddim", None, DEFAULT_SEED)), onnx_path)
        (work / "export_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    return work / "crops512", work / "deg" / "hq", onnx_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="folder kept between runs (resumable)")
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not RAW.is_dir():
        raise SystemExit(f"skipped: {RAW} is absent (the research-only CelebA crops of ../shared/data)")
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DIFFACE_HOME", str(args.work / "home"))
    crops_dir, hq_dir, onnx_path = prepare(args.work, args.count, args.threads)
    files = args.work / "filler512"
    model = DifFace.from_pretrained(prior=str(files / "prior.safetensors"),
                                    estimator=str(files / "estimator.safetensors"), device="cpu")
    enh = Enhancer(model, SamplingOptions(None, None, "ddim", None, DEFAULT_SEED))
    st = enh.settings
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    pipe = RestorePipeline(model, RestoreOptions(model=ModelOptions(device="cpu"), sampling=st, aligned=True),
                           torch.device("cpu"))
    rows_f = args.work / "rows.jsonl"
    done = {json.loads(x)["face"] for x in rows_f.read_text().splitlines()} if rows_f.is_file() else set()
    for f in sorted(crops_dir.glob("*.png"))[:args.count]:
        if f.stem in done:
            continue
        crop = read_image(f).rgb
        x = (crop.transpose(2, 0, 1)[None] * 2 - 1).astype(np.float32)
        t0 = time.perf_counter()
        got = ((sess.run(None, {"input": x})[0][0].transpose(1, 2, 0) + 1) / 2).clip(0, 1)
        t1 = time.perf_counter()
        api = api_output(enh, crop)
        t2 = time.perf_counter()
        restored = pipe.restore_aligned([LoadedImage(crop, None, 8, False)])[0].image
        t3 = time.perf_counter()
        truth = read_image(hq_dir / f.name).rgb
        s = truth.shape[0]
        row = {"face": f.stem, "mad_file_vs_api": float(np.abs(got - api).mean()),
               "max_file_vs_api": float(np.abs(got - api).max()),
               "psnr_y_input": psnr(at_model_size(crop, s), truth, y_channel=True),
               "psnr_y_file": psnr(at_model_size(q8(got), s), truth, y_channel=True),
               "psnr_y_restore": psnr(at_model_size(q8(restored), s), truth, y_channel=True),
               "s_file_ort": t1 - t0, "s_api": t2 - t1, "s_restore_step": t3 - t2}
        with rows_f.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
    rows = [json.loads(x) for x in rows_f.read_text().splitlines()]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "face"}
    export_s = args.work / "export_s.txt"
    result = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                          "onnxruntime": ort.__version__, "torch": torch.__version__,
                          "providers_tested": ["CPUExecutionProvider"]},
              "model": "official 512 networks, filler weights", "describe": enh.describe(), "faces": len(rows),
              "file_bytes": onnx_path.stat().st_size,
              "export_s": float(export_s.read_text()) if export_s.is_file() else None, "mean": mean,
              "max_mad_file_vs_api": max(r["mad_file_vs_api"] for r in rows),
              "psnr_y_file_minus_restore": mean["psnr_y_file"] - mean["psnr_y_restore"], "rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(result, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
