"""Seconds per stage of a whole photo, `--preset official` against `--preset fast`, in one process.

The stages of a whole-photo restoration (difface.face.photo), official 512 networks with the deterministic
filler (speed does not depend on the weights): detection (MTCNN), alignment, the faces, the background
(Real-ESRGAN x2 RRDBNet with filler weights, tiled 400 px as the CLI does, through torch for the official
preset and through the fast preset's backend when asked for; the fast preset itself upscales the background
with Lanczos, or keeps it as it is at --upscale 1) and paste-back.

Faces: every aligned crop is 512x512, so a face costs the same whatever it shows. Per setting one face
cost is measured (minimum of --face-reps interleaved rounds) and multiplied by the photo's number of faces:
  - official: 1 SwinIR + 100 UNet forwards, eager torch fp32 (the forwards measured; the 100-step loop
    itself is too long to run here: about 6 minutes a face);
  - fast: the preset's backend on this machine, DPM-Solver++(2M) with FAST_NFE evaluations, a whole
    `DifFace.restore` of one face measured (timesteps fitted for the bundled prior: the official 512 prior
    has none yet; the cost depends only on the number of evaluations).
Detection, alignment, background and paste-back are measured on each photo.

Reads ../shared/data/real-world (research-only images, never committed); exits 0 with a message when absent.

  PYTHONPATH=src DIFFACE_HOME=filler512 python scripts/benchmarks/bench_photo_presets.py \\
      --json docs/results/photo_presets.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from difface.core import BUNDLED_DIR, DifFace
from difface.diffusion.solvers import FewStepSampler
from difface.face.align import estimate_alignment, warp_faces
from difface.face.background import RealESRGANUpsampler, lanczos_upsampler, resize_to, target_size
from difface.face.photo import as_float_image, find_faces, paste_corrections
from difface.images import read_image
from difface.models import build, fill_deterministic
from difface.models.rrdbnet import RRDBNet
from difface.presets import FAST_NFE, FAST_SAMPLER, Machine, resolve
from difface.schedules import fitted_timesteps

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = {"t1.jpg": "real-world/pypi-samples/t1.jpg",
          "Solvay_conference_1927.png": "real-world/difface-testdata/Solvay_conference_1927.png"}


def clock(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def stages(img: np.ndarray, upscale: float, background, face_s: float, memo: dict) -> dict:
    """Seconds of each stage on one photo (H, W, 3) float32 in [0, 1]; faces = count x face_s. Real-ESRGAN
    always runs at x2 (then resized to --upscale), so its pass is measured once per photo (`memo`)."""
    h, w = img.shape[:2]
    out_hw = target_size(h, w, upscale)
    dets, det_s = clock(lambda: find_faces(img, "mtcnn"))

    def align():
        mats = estimate_alignment(np.asarray(dets.landmarks, np.float64).reshape(-1, 5, 2), 512)
        return mats, warp_faces(img, mats, 512)

    (mats, crops), align_s = clock(align)
    if background is lanczos_upsampler:
        bg, bg_s = clock(lambda: resize_to(background(img, upscale), out_hw))
    else:
        if id(background) not in memo:
            memo[id(background)] = clock(lambda: background(img, 2.0))
        x2, x2_s = memo[id(background)]
        bg, resize_s = clock(lambda: resize_to(x2, out_hw))
        bg_s = x2_s + resize_s
    _, paste_s = clock(lambda: paste_corrections(bg, crops, crops, mats, 512, upscale, None, False))
    n = len(dets)
    row = {"faces": n, "detection_s": det_s, "alignment_s": align_s, "faces_s": n * face_s, "background_s": bg_s,
           "paste_s": paste_s}
    other = det_s + align_s + bg_s + paste_s
    row["total_s"] = other + n * face_s
    row["non_face_share"] = other / row["total_s"]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--photos", default=",".join(PHOTOS))
    ap.add_argument("--upscale", default="2,1", help="comma list of --upscale values (default 2,1)")
    ap.add_argument("--face-reps", type=int, default=3, help="interleaved rounds of the face costs (minimum)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"skipped: {args.data} is absent (the real-world photos are research-only data beside the checkout)")
        return 0
    load_start = os.getloadavg()
    eager = DifFace.from_modules(fill_deterministic(build("unet_ffhq512")),
                                 fill_deterministic(build("swinir_restoration512")))
    rrdb = fill_deterministic(RRDBNet())
    fast = resolve("fast", {}, Machine.detect("cpu"), upscale=2)
    backend = fast.options["backend"]
    fast_model = eager.with_backend(backend) if backend != "torch" else eager.optimized(
        channels_last=fast.options["fast"])
    ts = fitted_timesteps(BUNDLED_DIR / "prior.safetensors", method=FAST_SAMPLER, nfe=FAST_NFE, t_start=400)
    sampler = FewStepSampler(eager.diffusion.base(), tuple(ts), FAST_SAMPLER, 0.0)
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([399])
    with torch.inference_mode():
        eager.prior(x * 2 - 1, t), eager.estimator(x)  # warm
        fast_model.restore(x, start_step=100, eta=0.0, seeds=[0], sampler=sampler)  # warm
        rounds = [(clock(lambda: eager.prior(x * 2 - 1, t))[1], clock(lambda: eager.estimator(x))[1],
                   clock(lambda: fast_model.restore(x, start_step=100, eta=0.0, seeds=[0], sampler=sampler))[1])
                  for _ in range(args.face_reps)]  # interleaved: load swings hit all three alike
        unet_s, swinir_s, fast_face_s = (min(r[k] for r in rounds) for k in range(3))
    official_face_s = swinir_s + 100 * unet_s
    print(f"{fast.line}\none face: official {official_face_s:.1f} s (1 SwinIR {swinir_s:.2f} s + 100 UNet "
          f"{unet_s:.2f} s), fast {fast_face_s:.2f} s measured; load {load_start}", flush=True)
    esr_torch = RealESRGANUpsampler(rrdb, tile=400)
    esr_fast = esr_torch if backend == "torch" else RealESRGANUpsampler(rrdb, tile=400, backend=backend)
    report = {"preset_line": fast.line, "unet512_forward_s": unet_s, "swinir512_forward_s": swinir_s,
              "official_face_s": official_face_s, "fast_face_s": fast_face_s, "load_at_start": load_start,
              "rows": []}
    for name in args.photos.split(","):
        path = args.data / PHOTOS[name]
        if not path.is_file():
            print(f"skipped {name}: {path} is absent")
            continue
        img, _, _, _ = as_float_image(read_image(path).rgb)
        memo: dict = {}
        for up in (float(u) for u in args.upscale.split(",")):
            preset_bg = resolve("fast", {}, Machine.detect("cpu"), upscale=up).options["bg_upsampler"]
            fast_bg = lanczos_upsampler if preset_bg == "lanczos" else esr_fast
            with torch.inference_mode():
                for setting, bg, face_s in (("official", esr_torch, official_face_s), ("fast", fast_bg, fast_face_s),
                                            ("fast --bg-upsampler realesrgan", esr_fast, fast_face_s)):
                    kind = ("kept as it is" if up == 1 else "Lanczos") if bg is lanczos_upsampler else \
                        f"Real-ESRGAN x2 ({'torch' if bg is esr_torch else backend})"
                    row = {"photo": name, "size": list(img.shape[1::-1]), "upscale": up, "setting": setting,
                           "background": kind, **stages(img, up, bg, face_s, memo)}
                    report["rows"].append(row)
                    print(json.dumps(row), flush=True)
    report["load_at_end"] = os.getloadavg()
    print("\n| photo | --upscale | preset | faces | detection (s) | alignment (s) | faces (s) | background | "
          "background (s) | paste-back (s) | total (s) | non-face share |")
    print("|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in report["rows"]:
        print(f"| {r['photo']} | {r['upscale']:g} | {r['setting']} | {r['faces']} | {r['detection_s']:.2f} | "
              f"{r['alignment_s']:.3f} | {r['faces_s']:.1f} | {r['background']} | {r['background_s']:.2f} | "
              f"{r['paste_s']:.2f} | {r['total_s']:.1f} | {r['non_face_share']:.1%} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
