"""The ONNX face-enhancer file (`difface export enhancer`) against the Python API and `difface restore`.

  PYTHONPATH=src python scripts/evaluations/eval_enhancer.py --json docs/results/enhancer_eval.json

Faces: the first --count (20) of splits/celeba64_val.txt (the bundled model's held-out faces, from
../shared/data/celeba-aligned-89x109), aligned to 64x64 (`difface data align`) and degraded with the celeba-test
preset (`difface degrade --seed 0`), as scripts/evaluations/eval_backends_e2e.py makes them. A host gives the file
a 512 crop: each degraded face is enlarged to 512 (bicubic, antialiased: difface.face.band.resize) and rounded to
8 bits.

Measured, for the bundled model at the enhancer's default settings (start step 20 of ddim250 = t 80, eta 0, ddim
with 10 evaluations, seed 12345):
- mean absolute difference of the file (onnxruntime, CPU) and the Python API (`Enhancer`), [0, 1] scale;
- PSNR-Y against the truth of the file's output and of `difface restore --aligned` at the same settings (its noise
  is drawn per image from the same seed, the file's is fixed), both compared at the model's 64 px (the output shrunk
  with the same resize; the band merge keeps the input above that band);
- seconds per 512 face: the file through onnxruntime (1 thread), `difface restore` (wall time of the command over
  the faces, start-up and loading included) and its pipeline in process (`RestorePipeline.restore_aligned`, 1
  thread); and the same for the official 512 networks with the deterministic filler weights (--count512 faces,
  their default start 100 = t 400, eta 0.5, ddim with 10 evaluations).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from difface import models
from difface.atomic import atomic_write_bytes
from difface.config import DEFAULT_SEED, ModelOptions, RestoreOptions, SamplingOptions
from difface.core import DifFace
from difface.enhancer import Enhancer
from difface.face import band
from difface.images import LoadedImage, image_to_tensor, read_image, write_image
from difface.metrics.psnr_ssim import psnr
from difface.pipeline import RestorePipeline
from difface.weights import save_network

ROOT = Path(__file__).resolve().parents[2]
RAW = ROOT.parent / "shared" / "data" / "celeba-aligned-89x109"


def difface(*args: str, ok: tuple[int, ...] = (0,)) -> float:
    """Run `python -m difface ARGS` (1 thread); its wall seconds."""
    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "difface", *args], stdout=subprocess.DEVNULL, env=env)
    if r.returncode not in ok:
        sys.exit(f"difface {' '.join(args)} exited with {r.returncode}")
    return time.perf_counter() - t0


def make_faces(work: Path, count: int) -> tuple[Path, Path]:
    """(folder of 512 host crops, folder of the 64 px truths) of the first `count` held-out faces."""
    raw = work / "raw"
    raw.mkdir()
    for s in (ROOT / "splits" / "celeba64_val.txt").read_text().split()[:count]:
        shutil.copy(RAW / (Path(s).stem + ".jpg"), raw)
    difface("data", "align", str(raw), "-o", str(work / "al"), "--size", "64", ok=(0, 1))  # 1: a face not found
    difface("degrade", str(work / "al"), "-o", str(work / "deg"), "--degradation", "celeba-test", "--seed", "0")
    crops = work / "crops512"
    crops.mkdir()
    for f in sorted((work / "deg" / "lq").glob("*.png")):
        big = band.resize(image_to_tensor(read_image(f).rgb), (512, 512)).clamp(0, 1)
        write_image(crops / f.name, big[0].permute(1, 2, 0).numpy())
    return crops, work / "deg" / "hq"


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_file(sess: ort.InferenceSession, crop: np.ndarray) -> tuple[np.ndarray, float]:
    """The file on an (512, 512, 3) RGB crop in [0, 1]: (output in [0, 1], seconds)."""
    x = (crop.transpose(2, 0, 1)[None] * 2 - 1).astype(np.float32)
    t0 = time.perf_counter()
    y = sess.run(None, {"input": x})[0]
    return ((y[0].transpose(1, 2, 0) + 1) / 2).clip(0, 1), time.perf_counter() - t0


def at_model_size(img: np.ndarray, s: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img, np.float32)).permute(2, 0, 1)[None]
    return band.resize(t, (s, s)).clamp(0, 1)[0].permute(1, 2, 0).numpy()


def q8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0, 1) * 255) / 255


def restore_args(st: SamplingOptions) -> list[str]:
    nfe = [] if st.nfe is None else ["--nfe", str(st.nfe)]
    return ["--start-step", str(st.start_step), "--eta", repr(st.eta), "--sampler", st.sampler, *nfe, "--seed",
            str(st.seed), "--device", "cpu", "--batch-size", "1"]


def pipeline_seconds(model: DifFace, st: SamplingOptions, crops: list[np.ndarray]) -> float:
    """Seconds per face of RestorePipeline.restore_aligned (the command's restore step) at the settings, in process."""
    opts = RestoreOptions(model=ModelOptions(device="cpu"), sampling=st, aligned=True)
    pipe = RestorePipeline(model, opts, torch.device("cpu"))
    pipe.restore_aligned([LoadedImage(crops[0], None, 8, False)])  # warm-up
    t0 = time.perf_counter()
    for c in crops:
        pipe.restore_aligned([LoadedImage(c, None, 8, False)])
    return (time.perf_counter() - t0) / len(crops)


def eval_bundled(work: Path, crops_dir: Path, hq_dir: Path) -> dict:
    path = work / "bundled.onnx"
    export_s = difface("export", "enhancer", "-o", str(path))
    model = DifFace.from_pretrained(device="cpu")
    enh = Enhancer(model, SamplingOptions(None, None, "ddim", None, DEFAULT_SEED))
    st = enh.settings
    out = work / "restored"
    cmd_s = difface("restore", str(crops_dir), "--aligned", "-o", str(out), *restore_args(st))
    sess = session(path)
    run_file(sess, read_image(next(crops_dir.glob("*.png"))).rgb)  # warm-up
    rows, secs, crops = [], [], []
    for f in sorted(crops_dir.glob("*.png")):
        crop = read_image(f).rgb
        crops.append(crop)
        got, sec = run_file(sess, crop)
        secs.append(sec)
        api = api_output(enh, crop)
        truth = read_image(hq_dir / f.name).rgb
        restored = read_image(out / f.name).rgb
        s = model.image_size
        rows.append({"face": f.stem, "mad_file_vs_api": float(np.abs(got - api).mean()),
                     "max_file_vs_api": float(np.abs(got - api).max()),
                     "psnr_y_input": psnr(at_model_size(crop, s), truth, y_channel=True),
                     "psnr_y_file": psnr(at_model_size(q8(got), s), truth, y_channel=True),
                     "psnr_y_restore": psnr(at_model_size(restored, s), truth, y_channel=True)})
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "face"}
    return {"model": "bundled-64", "describe": enh.describe(), "faces": len(rows), "file_bytes": path.stat().st_size,
            "network_bytes": network_bytes(model), "export_s": export_s, "mean": mean,
            "max_mad_file_vs_api": max(r["mad_file_vs_api"] for r in rows),
            "psnr_y_file_minus_restore": mean["psnr_y_file"] - mean["psnr_y_restore"],
            "s_per_face_file_ort": float(np.mean(secs)), "s_per_face_restore_command": cmd_s / len(rows),
            "s_per_face_restore_pipeline": pipeline_seconds(model, st, crops),
            "restore_command": ["difface", "restore", "CROPS", "--aligned", "-o", "OUT", *restore_args(st)],
            "rows": rows}


def network_bytes(model: DifFace) -> int:
    return sum(p.numel() * p.element_size() for net in (model.prior, model.estimator) for p in net.parameters())


def api_output(enh: Enhancer, crop: np.ndarray) -> np.ndarray:
    """The Python API's (`Enhancer`, torch) result for a (512, 512, 3) RGB crop in [0, 1], in [0, 1]."""
    x = torch.from_numpy(crop).permute(2, 0, 1)[None]
    with torch.no_grad():
        return ((enh(x * 2 - 1) + 1) / 2).clamp(0, 1)[0].permute(1, 2, 0).numpy()


def eval_official_filler(work: Path, crops_dir: Path, count: int, parity: bool = False) -> dict:
    """Seconds per 512 face of the official networks (filler weights): the file against `difface restore`; with
    `parity`, also the file's mean absolute difference to the Python API on each face."""
    files = work / "filler512"
    files.mkdir()
    prior, est = (models.fill_deterministic(models.build(n)) for n in ("unet_ffhq512", "swinir_restoration512"))
    save_network(prior, files / "prior.safetensors")
    save_network(est, files / "estimator.safetensors")
    names = ["--prior", str(files / "prior.safetensors"), "--estimator", str(files / "estimator.safetensors")]
    path = work / "filler512.onnx"
    export_s = difface("export", "enhancer", *names, "-o", str(path))
    model = DifFace.from_pretrained(prior=str(files / "prior.safetensors"),
                                    estimator=str(files / "estimator.safetensors"), device="cpu")
    enh = Enhancer(model, SamplingOptions(None, None, "ddim", None, DEFAULT_SEED))
    st = enh.settings
    few = work / "crops512_few"
    few.mkdir()
    picked = sorted(crops_dir.glob("*.png"))[:count]
    for f in picked:
        shutil.copy(f, few)
    cmd_s = difface("restore", str(few), "--aligned", "-o", str(work / "restored512"), *names, *restore_args(st))
    t0 = time.perf_counter()
    sess = session(path)
    load_s = time.perf_counter() - t0
    secs, mads = [], []
    for f in picked:
        crop = read_image(f).rgb
        got, sec = run_file(sess, crop)
        secs.append(sec)
        if parity:
            mads.append(float(np.abs(got - api_output(enh, crop)).mean()))
    return {"mad_file_vs_api_each": mads, "max_mad_file_vs_api": max(mads, default=None),
            "model": "official 512 networks, filler weights", "faces": len(picked), "file_bytes": path.stat().st_size,
            "network_bytes": network_bytes(model), "export_s": export_s, "session_load_s": load_s,
            "settings": {"start_step": st.start_step, "eta": st.eta, "sampler": st.sampler, "nfe": st.nfe},
            "s_per_face_file_ort": float(np.mean(secs)), "s_per_face_file_ort_each": secs,
            "s_per_face_restore_command": cmd_s / len(picked),
            "restore_command": ["difface", "restore", "CROPS", "--aligned", "-o", "OUT", "--prior", "PRIOR",
                                "--estimator", "ESTIMATOR", *restore_args(st)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--count512", type=int, default=2, help="faces for the official 512 timing (0: skip it)")
    ap.add_argument("--parity512", action="store_true",
                    help="also compare the 512 file with the Python API on each of the --count512 faces (slow)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not RAW.is_dir():
        sys.exit(f"skipped: {RAW} is absent (the research-only CelebA crops of ../shared/data)")
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="difface-enhancer-eval-"))
    os.environ.setdefault("DIFFACE_HOME", str(work / "home"))
    try:
        crops, hq = make_faces(work, args.count)
        result = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": 1,
                              "onnxruntime": ort.__version__, "torch": torch.__version__,
                              "providers_tested": ["CPUExecutionProvider"]},
                  "bundled": eval_bundled(work, crops, hq)}
        print(json.dumps({k: v for k, v in result["bundled"].items() if k != "rows"}, indent=1), flush=True)
        if args.count512:
            result["official_512_filler"] = eval_official_filler(work, crops, args.count512, args.parity512)
            print(json.dumps(result["official_512_filler"], indent=1), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(result, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
