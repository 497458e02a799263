"""`difface restore`: restore aligned faces or whole photos, file by file, never stopping on a bad one."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from difface import distributed
from difface.device import DTYPES
from difface.images import (
    ImageReadError,
    LoadedImage,
    collect_inputs,
    image_to_tensor,
    read_image,
    tensor_to_image,
    write_image,
)
from difface.restore import (
    BUNDLED_ETA,
    BUNDLED_START_STEP,
    DEFAULT_ETA,
    DEFAULT_RESPACING,
    DEFAULT_START_STEP,
    DifFace,
    image_seed,
)

log = logging.getLogger("difface")

EPILOG = """examples:
  difface restore face.png -o out --aligned                  # bundled small model
  difface restore faces/ -o out --aligned --prior iddpm-ffhq512 --estimator swinir-ffhq512
  difface restore photos/*.jpg -o out                        # whole photos: detect, align, restore, paste back
  difface restore faces/ -o out --aligned --start-step 0     # estimator only, no diffusion

The restored image for IN/name.ext is written to OUT/name.png at the input's size (whole photos:
multiplied by --upscale). Larger --start-step and --eta give more realistic, less faithful results."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore", help="restore faces (aligned crops or whole photos)", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Blind face restoration with DifFace: estimator f(y), diffused to step N, then the "
        "face prior's reverse process from N down to 0.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    p.add_argument("--aligned", action="store_true", help="inputs are aligned face crops (FFHQ template)")
    p.add_argument("--prior", help="diffusion prior: registry name (`difface weights list`) or file; "
                   "default: the bundled small model")
    p.add_argument("--estimator", help="diffused estimator: registry name or file (default: bundled)")
    p.add_argument("--start-step", type=int, default=None,
                   help=f"respaced step N the estimate is diffused to (default: {DEFAULT_START_STEP}, i.e. t=400 of "
                   f"1000 on ddim250, for the official models; {BUNDLED_START_STEP} for the bundled small model); "
                   "0 = estimator only")
    p.add_argument("--steps", default=DEFAULT_RESPACING, help="timestep respacing, e.g. ddim250 or 250 "
                   f"(default {DEFAULT_RESPACING})")
    p.add_argument("--eta", type=float, default=None, help=f"DDIM eta (default {DEFAULT_ETA} for the official "
                   f"models, {BUNDLED_ETA} for the bundled one); higher is more stochastic")
    p.add_argument("--seed", type=int, default=12345, help="random seed; each image draws from its own "
                   "generator, seeded from this and the image's content, so a result depends only on the image "
                   "and the seed, not on batching, order or sharding (default 12345)")
    p.add_argument("--batch-size", type=int, default=1, help="faces per network batch (default 1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default auto)")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="network precision (default fp32)")
    p.add_argument("--sampler", default="official", choices=["official", "ddim", "dpmpp2m"],
                   help="official: the respaced DDIM loop of the paper (start-step evaluations); ddim / "
                   "dpmpp2m: --nfe evaluations from the same start state (fast presets)")
    p.add_argument("--nfe", type=int, default=None, help="network evaluations for --sampler ddim/dpmpp2m "
                   "(default 10)")
    p.add_argument("--fast", action="store_true", help="channels-last memory layout (same outputs, faster on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (minutes to compile once "
                   "per process; worth it for many faces)")
    p.add_argument("--save-comparison", action="store_true",
                   help="also write OUTDIR/comparisons/name.png: input | estimate | result (whole photos: "
                   "input | result)")
    photo = p.add_argument_group("whole photos (without --aligned)")
    photo.add_argument("--upscale", type=int, default=2, help="output scale of whole photos (default 2)")
    photo.add_argument("--detector", default=None, help="face detector backend (default: offline detector)")
    photo.add_argument("--only-center-face", action="store_true", help="restore only the face nearest the centre")
    photo.add_argument("--bg-upsampler", default="auto",
                       help="background upsampler: auto (Real-ESRGAN x2 when its weights are cached, else "
                       "Lanczos), realesrgan, lanczos")
    photo.add_argument("--draw-boxes", action="store_true", help="draw the detected faces' outlines")
    photo.add_argument("--max-face-size", type=float, default=None, metavar="PX",
                       help="leave faces whose aligned crop spans more than PX input pixels as they are "
                       "(default: twice the model's resolution for models under 256 px, i.e. 128 for the "
                       "bundled 64 px model, which would only soften larger faces; no limit for the official "
                       "512 models; 0: restore every face)")
    p.set_defaults(func=run)


@dataclass
class Job:
    src: Path
    dst: Path
    image: LoadedImage | None = None


def plan_outputs(inputs: list[Path], outdir: Path) -> list[Job]:
    """OUT/name.png per input; a stem used twice gets its extension appended (`name_jpg.png`)."""
    jobs, used = [], set()
    for src in inputs:
        name = f"{src.stem}.png"
        if name in used:
            name = f"{src.stem}_{src.suffix.lstrip('.').lower()}.png"
        used.add(name)
        jobs.append(Job(src, outdir / name))
    return jobs


def run(args: argparse.Namespace) -> int:
    try:
        inputs = collect_inputs(args.inputs)
    except FileNotFoundError as e:
        log.error("error: %s", e)
        return 2
    if not inputs:
        log.error("error: no images found in %s", " ".join(args.inputs))
        return 2
    dist_info = distributed.setup(args.device)  # under torchrun: one shard of the inputs per process
    device = dist_info.device
    dtype = DTYPES[args.dtype]
    try:
        model = DifFace.load(args.prior, args.estimator, respacing=args.steps).to(device)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as e:
        log.error("error: %s", e)
        return 2
    if args.fast or args.compile:
        model.optimize(channels_last=args.fast, compile=args.compile)
    if args.start_step is None:
        args.start_step = model.default_start_step
    if args.eta is None:
        args.eta = model.default_eta
    if getattr(args, "max_face_size", None) is None:
        args.max_face_size = 2.0 * model.image_size if model.image_size < 256 else 0.0
    args.restore_kwargs = dict(start_step=args.start_step, eta=args.eta, dtype=dtype,
                               sampler=None if args.sampler == "official" else args.sampler, nfe=args.nfe)
    log.info("model: %s at %dx%d, %s on %s, start step %d of %s, eta %g",
             model.name, model.image_size, model.image_size, args.dtype, device, args.start_step, args.steps, args.eta)
    jobs = plan_outputs(inputs, args.output)
    input_paths = {j.src.resolve() for j in jobs}
    failed: list[tuple[Path, str]] = []
    for j in jobs:
        if j.dst.resolve() in input_paths:
            failed.append((j.src, f"output {j.dst} would overwrite an input; choose another -o folder"))
    jobs = [j for j in jobs if j.src not in {f for f, _ in failed}]
    if dist_info.world_size > 1:  # results depend only on image and seed, so sharding changes nothing
        jobs = jobs[dist_info.rank:: dist_info.world_size]
        failed = failed if dist_info.is_main else []
    restore = aligned_batches if args.aligned else whole_photos
    t0 = time.perf_counter()
    done = restore(model, jobs, args, device, dtype, failed)
    elapsed = time.perf_counter() - t0
    for src, why in failed:
        log.error("failed: %s: %s", src, why)
    counts = distributed.all_reduce_sum(torch.tensor([done, len(failed)], dtype=torch.float64))
    done_all, failed_all = int(counts[0]), int(counts[1])
    if dist_info.is_main:
        per = f" ({elapsed / done_all * dist_info.world_size:.2f} s/image per process)" if done_all else ""
        log.info("restored %d of %d images in %.1f s%s -> %s%s", done_all, len(inputs), elapsed, per, args.output,
                 f"; {failed_all} failed" if failed_all else "")
    return 1 if failed_all else 0


def _read(job: Job, failed: list) -> bool:
    try:
        job.image = read_image(job.src)
        return True
    except ImageReadError as e:
        failed.append((job.src, str(e).removeprefix(f"{job.src}: ")))
        return False


def _save(job: Job, rgb: np.ndarray, failed: list, estimate: np.ndarray | None, args) -> bool:
    img = job.image
    try:
        write_image(job.dst, rgb, img.alpha if img.alpha is not None and img.alpha.shape == rgb.shape[:2] else None,
                    bit_depth=16 if img.bit_depth == 16 else 8)
        if args.save_comparison:
            lq = img.rgb
            if lq.shape != rgb.shape:  # whole photos are upscaled: show the input at the output size
                import cv2

                lq = cv2.resize(lq, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_CUBIC)
            panels = [lq, rgb] if estimate is None else [lq, estimate, rgb]
            write_image(job.dst.parent / "comparisons" / job.dst.name, np.concatenate(panels, axis=1))
        return True
    except OSError as e:
        failed.append((job.src, f"cannot write {job.dst}: {e}"))
        return False


def aligned_batches(model: DifFace, jobs: list[Job], args, device, dtype, failed: list) -> int:
    """Restore aligned crops in batches; every image is resized to the model size on its own."""
    from tqdm import tqdm

    s, done = model.image_size, 0
    bar = tqdm(total=len(jobs), unit="face", desc="restoring", dynamic_ncols=True)
    pending = list(jobs)
    while pending:
        batch: list[Job] = []
        while pending and len(batch) < max(1, args.batch_size):
            job = pending.pop(0)
            if _read(job, failed):
                batch.append(job)
            else:
                bar.update(1)
        if not batch:
            continue
        t0 = time.perf_counter()
        x = torch.cat([_to_model_size(image_to_tensor(j.image.rgb), s) for j in batch])
        try:
            out = model.restore(x, seeds=[image_seed(args.seed, im) for im in x], **args.restore_kwargs)
        except RuntimeError as e:  # e.g. out of memory: report these files, keep going
            failed.extend((j.src, f"restoration failed: {e}") for j in batch)
            bar.update(len(batch))
            continue
        for k, job in enumerate(batch):
            h, w = job.image.rgb.shape[:2]
            res = tensor_to_image(_from_model_size(out.result[k: k + 1], h, w))
            est = tensor_to_image(_from_model_size(out.estimate[k: k + 1], h, w))
            done += _save(job, res, failed, est, args)
            job.image = None
        bar.update(len(batch))
        bar.set_postfix_str(f"{(time.perf_counter() - t0) / len(batch):.2f} s/face")
    bar.close()
    return done


def _to_model_size(x: torch.Tensor, s: int) -> torch.Tensor:
    """(1, 3, H, W) -> (1, 3, s, s) with bicubic antialiasing (as the official sampler), no-op at size."""
    if tuple(x.shape[2:]) == (s, s):
        return x
    return F.interpolate(x, size=(s, s), mode="bicubic", antialias=True)


def _from_model_size(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(x.shape[2:]) == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bicubic", antialias=True).clamp(0, 1)


def whole_photos(model: DifFace, jobs: list[Job], args, device, dtype, failed: list) -> int:
    """Detect, align, restore and paste back faces of whole photos (difface.face.photo)."""
    try:
        from difface.face import photo as photo_mod
    except ImportError:
        failed.extend((j.src, "whole-photo mode is not available in this build; use --aligned") for j in jobs)
        return 0
    return photo_mod.restore_photo_jobs(model, jobs, args, device, dtype, failed, save=_save, read=_read)
