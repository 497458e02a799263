"""`difface restore`: parse the options, run the restoration pipeline, report every input's outcome."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch

from difface import (
    config,  # the tables' names, read when the parser is built
    distributed,
)
from difface.commands import COMMANDS
from difface.commands.options import option_message, restore_options
from difface.config import (
    DEFAULT_BATCH_FRAMES,
    DEFAULT_BATCH_SIZE,
    DEFAULT_CRF,
    DEFAULT_DETECTOR,
    DEFAULT_DEVICE,
    DEFAULT_MAX_VIDEO_SECONDS,
    DEFAULT_MODEL,
    DEFAULT_NFE,
    DEFAULT_QUALITY,
    DEFAULT_RUN_PRESET,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    DEFAULT_UPSCALE,
    DETECTORS,
    MODELS,
    OUTPUT_FORMATS,
    SAMPLERS,
    SCHEDULES,
    SOLVERS,
    models_of,
)
from difface.device import DTYPES, kept_threads, set_cpu_threads
from difface.images import IMAGE_EXTENSIONS, collect_inputs
from difface.pipeline import OptionError, RestorePipeline, files, summary
from difface.strength import parse_strength
from difface.video.io import VIDEO_EXTENSIONS

log = logging.getLogger("difface")

EPILOG = """examples:
  difface restore photo.jpg -o out                           # whole photo, bundled small model
  difface restore faces/ -o out --aligned                    # aligned face crops (FFHQ template)
  difface restore faces/ -o out --aligned --model official-512   # the paper's models (downloaded once)
  difface restore faces/ -o out --aligned --prior my-prior.pth --estimator my-estimator.pth
  difface restore faces/ -o out --aligned --start-step 0     # estimator only, no diffusion
  difface restore old.jpg -o out --strength 0.1              # more change than auto (damaged faces; docs/strength.md)
  difface restore old.jpg -o out --strength 0                # the estimator alone: the least change
  difface restore faces/ -o out --aligned --preset fast      # fewer evaluations, faster backend (docs/speed.md)
  difface restore clip.mp4 -o out                            # a video: OUT/clip.mp4, audio kept (docs/video.md)

The restored image for IN/name.ext is written to OUT/name.png (--ext: .jpg, .webp) at the input's size
(whole photos: multiplied by --upscale); a gray input gives a gray result (one channel for one
channel). A larger --start-step or --eta gives a more realistic, less faithful result. Every option
is checked before any work; an input that fails is named with the reason, the others are still
restored, and the exit status is 1 (2 for a usage error)."""


def start_step_arg(text: str) -> int | str:
    """--start-step: an integer or 'auto'."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def threads_arg(text: str) -> int:
    """--threads: a count of at least 1, or 0 / 'auto' (the cores not busy with other work)."""
    if text.strip().lower() == "auto":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a thread count or 'auto', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (auto) or more, got {value}")
    return value


def strength_arg(text: str) -> float | str:
    """--strength: a number in [0, 1] or 'auto' (the range is checked with the other options)."""
    try:
        return parse_strength(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1] or 'auto', got {text!r}") from None


def pixels_arg(text: str) -> int:
    """--max-pixels: a count such as 50000000, 50e6 or 50M."""
    t = text.strip().upper()
    mult = 1_000_000 if t.endswith("M") else 1
    try:
        value = float(t.rstrip("M")) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a pixel count such as 50000000 or 50M, got {text!r}") from None
    if not value >= 1 or value != value or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive pixel count, got {text!r}")
    return int(value)


def fixed_start_step_arg(text: str) -> int:
    """--start-step of `difface inpaint`: an integer (auto chooses from a restoration input's damage)."""
    try:
        return int(text)
    except ValueError:
        why = ("auto chooses a start from the damage of a restoration input, so inpainting takes a number"
               if text.strip().lower() == "auto" else "expected an integer")
        raise argparse.ArgumentTypeError(f"{why}, got {text!r}") from None


def add_fixed_start_step(p: argparse.ArgumentParser) -> None:
    """--start-step of `difface inpaint`: a number only."""
    p.add_argument("--start-step", type=fixed_start_step_arg, default=None, metavar="N",
                   help="respaced step N the estimate (LaMa's fill) is diffused to; 0 = the estimate only, no "
                   "diffusion. Default: the model's (t = 480 of 1000, i.e. 120 on ddim250), printed at start; N "
                   "is kept at the same t when --steps changes")


def add_model_argument(p: argparse.ArgumentParser, task: str | None = "restoration") -> None:
    """--model NAME: a named model of difface.config.MODELS (of `task`; None: of any task), its choices read from
    the table when the parser is built."""
    names = list(MODELS) if task is None else models_of(task)
    about = "; ".join(f"{n}: {MODELS[n].description}" for n in names)
    default = f" Default: {DEFAULT_MODEL[task] if task else 'the bundled model of the task'}, unless " \
        "--prior/--estimator are given."
    p.add_argument("--model", default=None, choices=names, metavar="NAME",
                   help="a named model: its weights and its own defaults (start, eta, automatic start) in one word, "
                   f"instead of --prior/--estimator (not together with them). {about}.{default} `difface weights "
                   "list` shows which weights each one needs and their licences")


def add_model_arguments(p: argparse.ArgumentParser, auto_start: bool = True, task: str = "restoration") -> None:
    """Options shared by the commands that run DifFace (restore, inpaint; auto_start: --start-step takes auto)."""
    add_model_argument(p, task)
    p.add_argument("--prior", help="diffusion prior: registry name (`difface weights list`) or file, with the "
                   "official defaults of its task; default: the bundled small model")
    p.add_argument("--estimator", help="diffused estimator: registry name or file (default: bundled)")
    if auto_start:
        p.add_argument("--start-step", type=start_step_arg, default=None, metavar="N|auto",
                       help="respaced step N the estimate is diffused to; 0 = estimator only; auto = chosen per "
                       "image from how much the estimator changed it (more damage, more diffusion). Default: the "
                       "model's (the official models: t = 400 of 1000, i.e. 100 on ddim250; the bundled small "
                       "model: auto), printed at start; a fixed N is kept at the same t when --steps changes")
    else:
        add_fixed_start_step(p)
    p.add_argument("--steps", default=DEFAULT_STEPS, help="timestep respacing of the official loop, e.g. ddim250, "
                   f"ddim50 or 250 (default {DEFAULT_STEPS})")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta in [0, 1]: lower is more faithful, higher "
                   "more realistic (default: the model's, printed at start)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed; each image draws from its own "
                   "generator, seeded from this and the image's content, so a result depends only on the image "
                   f"and the seed, not on batching, order or sharding (default {DEFAULT_SEED})")
    p.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                   help=f"faces per network batch (default {DEFAULT_BATCH_SIZE})")
    p.add_argument("--device", default=DEFAULT_DEVICE,
                   help=f"auto | cpu | cuda | cuda:N | mps (default {DEFAULT_DEVICE})")
    p.add_argument("--preset", default=DEFAULT_RUN_PRESET, choices=list(config.RUN_PRESETS),
                   help="official (default): the paper's path, eager fp32 and the official loop; fast: the fastest "
                   "backend, precision and sampler measured to meet the quality gates on this kind of machine "
                   "(docs/speed.md), printed at start; options given explicitly replace its parts")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="network precision: fp32, or bf16/fp16 "
                   "through autocast (fp16 only on GPUs; default fp32)")
    p.add_argument("--sampler", default=None, choices=list(SAMPLERS),
                   help="official: the respaced DDIM loop of the paper (one evaluation per step from the start "
                   f"step); {' / '.join(SOLVERS)}: --nfe evaluations from the same start state (fast presets)")
    p.add_argument("--nfe", type=int, default=None, help=f"network evaluations of --sampler {'/'.join(SOLVERS)} "
                   f"(default {DEFAULT_NFE})")
    p.add_argument("--schedule", default=None, choices=list(SCHEDULES), help="timesteps of --sampler "
                   f"{'/'.join(SOLVERS)}: even (default) or fitted to the official loop for this prior (stored with "
                   "the model; `difface tune` fits one); an error when none was fitted for it")
    p.add_argument("--fast", action="store_true", default=None, help="channels-last memory layout (same outputs "
                   "within 1e-4, faster on CPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the networks (minutes to compile once "
                   "per process; worth it for many faces)")
    p.add_argument("--backend", default=None, choices=list(config.BACKEND_NAMES),
                   help="where the network forwards run: torch, onnxruntime or openvino (their ONNX "
                   "graphs are exported once and cached; docs/onnx.md). Default torch; for the bundled model on a "
                   "CPU onnxruntime when installed (within 1e-6 of torch fp32; --backend torch: the exact reference)")
    p.add_argument("--threads", type=threads_arg, default=0, metavar="N|auto",
                   help="CPU threads of the network forwards (torch, onnxruntime, OpenVINO). Default auto (0): the "
                   "cores this process may use less those busy with other programs when the run starts, at least "
                   "1, or OMP_NUM_THREADS when set; idle threads sleep rather than spin (OMP_WAIT_POLICY=PASSIVE "
                   "unless set). Printed at start; a fixed N gives the same bits on every run (docs/speed.md)")
    p.add_argument("--max-pixels", type=pixels_arg, default=None, metavar="N",
                   help="refuse inputs with more pixels than this, from the file header, before decoding "
                   "(default 50M: about 2 GB of memory)")


def add_output_arguments(p: argparse.ArgumentParser) -> None:
    """--ext and --quality: the format of the images `difface restore` writes."""
    p.add_argument("--ext", default="png", choices=list(OUTPUT_FORMATS),
                   help="format of the restored images and comparisons, OUT/name.EXT (--skip-existing looks for "
                   "that name; videos are MP4 whatever this says): png (default) is lossless and keeps 16 bits and "
                   "transparency, but large; jpg and webp are 8-bit and lossy at --quality, several times smaller "
                   "(a 1297x1920 photo at --upscale 2: png 12.9 MB, jpg 2.0 MB, webp 1.8 MB); webp keeps "
                   "transparency, jpg drops it")
    p.add_argument("--quality", type=int, default=DEFAULT_QUALITY, metavar="1-100",
                   help=f"quality of --ext jpg or webp, 1 to 100: higher is larger and closer to the result "
                   f"(default {DEFAULT_QUALITY})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "restore", help=COMMANDS["restore"], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Blind face restoration with DifFace: estimator f(y), diffused to step N, then the "
        "face prior's reverse process from N down to 0.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    p.add_argument("--aligned", action="store_true", help="inputs are aligned face crops (FFHQ template)")
    add_model_arguments(p)
    p.add_argument("--strength", type=strength_arg, default=None, metavar="S|auto",
                   help="how far the model may move a face from the input, 0 to 1, instead of --start-step: 0 = the "
                   "estimator alone, 1 = t 400 (the paper's start; replaces people on the bundled model). auto "
                   "(default) = the model's own choice (the bundled model: per face, often 0 on sharp faces). On the "
                   "bundled model identity holds up to about 0.1 on damaged faces and starts to drift at 0.2; on sharp "
                   "faces any strength costs likeness (docs/strength.md)")
    p.add_argument("--skip-existing", action="store_true", help="leave inputs whose output file exists as "
                   "they are (outputs are written atomically, so an existing one is complete): rerun a killed "
                   "batch with this to finish it")
    p.add_argument("--save-comparison", action="store_true",
                   help="also write OUTDIR/comparisons/name.png: input | estimate | result (whole photos: "
                   "input | result)")
    add_output_arguments(p)
    photo = p.add_argument_group("whole photos (without --aligned)")
    photo.add_argument("--upscale", type=int, default=DEFAULT_UPSCALE, help="output scale of whole photos, 1 to 8 "
                       f"(default {DEFAULT_UPSCALE})")
    photo.add_argument("--detector", default=DEFAULT_DETECTOR, help=f"face detector: {DEFAULT_DETECTOR} (default, "
                       f"offline), {', '.join(d for d in DETECTORS if d != DEFAULT_DETECTOR)}")
    photo.add_argument("--only-center-face", action="store_true", help="restore only the face nearest the centre")
    photo.add_argument("--bg-upsampler", default=None,
                       help="background upsampler: auto (Real-ESRGAN x2 when its weights are cached, else "
                       "Lanczos; the default), realesrgan, lanczos, or a weights file; it runs through --backend. "
                       "--preset fast: lanczos (at --upscale 1: the background kept as it is)")
    photo.add_argument("--draw-boxes", action="store_true", help="draw the detected faces' outlines")
    photo.add_argument("--max-face-size", type=float, default=None, metavar="PX",
                       help="leave faces whose aligned crop spans more than PX input pixels as they are "
                       "(default and 0: no limit; in photos and videos a face larger than the model keeps "
                       "its own fine detail, only its coarse band is restored)")
    video = p.add_argument_group("videos (any container FFmpeg reads; needs the [video] extra: PyAV)")
    video.add_argument("--no-tracking", action="store_true", help="restore every frame on its own (no face "
                       "tracks; implies --no-track-seeds and --no-smoothing): for comparison, it flickers")
    video.add_argument("--no-track-seeds", action="store_true", help="new noise for every face in every frame "
                       "instead of one seed per tracked face")
    video.add_argument("--no-smoothing", action="store_true", help="align each frame's faces on their own "
                       "landmarks, without temporal smoothing")
    video.add_argument("--batch-frames", type=int, default=DEFAULT_BATCH_FRAMES, help="frames whose faces are "
                       f"restored together (default {DEFAULT_BATCH_FRAMES})")
    video.add_argument("--crf", type=int, default=DEFAULT_CRF, help="H.264 quality, 0-51, lower is better "
                       f"(default {DEFAULT_CRF})")
    video.add_argument("--no-resume", action="store_true", help="start an interrupted clip over instead of "
                       "reusing its finished segments")
    video.add_argument("--refuse-vfr", action="store_true", help="refuse clips with a variable frame rate "
                       "(default: keep every frame's timestamp)")
    video.add_argument("--max-video-seconds", type=float, default=DEFAULT_MAX_VIDEO_SECONDS, metavar="S",
                       help="refuse clips longer than this, from the header (default "
                       f"{DEFAULT_MAX_VIDEO_SECONDS:g}: 5 minutes; 0: no limit)")
    p.set_defaults(func=run)


def collect(specs: list[str], videos: bool = False) -> list[Path]:
    """Input files of the command line (folders give their images, and videos when `videos`); ValueError
    when a spec matches nothing or nothing is found."""
    try:
        inputs = collect_inputs(specs, extensions=IMAGE_EXTENSIONS + (VIDEO_EXTENSIONS if videos else ()))
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None
    if not inputs:
        raise ValueError(f"no images found in {' '.join(specs)}")
    return inputs


def report(outcomes, elapsed: float, outdir: Path, what: str = "restored", world_size: int = 1,
           is_main: bool = True, pipe=None) -> int:
    """Log every failure and note, then one summary line that tells the truth, then what the model did to the
    faces (difface.pipeline.summary, with `pipe`: the pipeline that ran); returns the exit status."""
    for o in outcomes:
        for note in o.notes:
            log.info("%s: %s", o.src, note)
        if not o.ok:
            log.error("failed: %s: %s", o.src, o.reason)
    done = sum(o.ok for o in outcomes)
    faces = sum(o.faces for o in outcomes if o.ok)
    skipped = sum(o.skipped for o in outcomes if o.ok)
    kept = sum(o.kept for o in outcomes)
    counts = distributed.all_reduce_sum(torch.tensor([done, len(outcomes), faces, skipped, kept],
                                                     dtype=torch.float64))
    done_all, total, faces_all, skipped_all, kept_all = (int(v) for v in counts)
    if is_main:
        made = done_all - kept_all
        per = f" ({elapsed / made * world_size:.2f} s/input per process)" if made else ""
        extra = f"; {kept_all} kept, their outputs existed (--skip-existing)" if kept_all else ""
        if skipped_all:
            extra += f"; {faces_all} face(s) restored, {skipped_all} left as they were (see --max-face-size)"
        failed = total - done_all
        log.info("%s %d of %d inputs in %.1f s%s -> %s%s%s", what, done_all, total, elapsed, per, outdir, extra,
                 f"; {failed} failed" if failed else "")
    if pipe is not None:
        say_faces(outcomes, pipe, is_main)
    return 0 if done_all == total else 1


def say_faces(outcomes, pipe, is_main: bool = True) -> None:
    """The end-of-run lines on the faces: how many the model changed and how much; once per machine, what helps
    faces far larger than the bundled model (difface.pipeline.summary)."""
    size = pipe.model.image_size
    local = summary.face_totals(outcomes, size)
    totals = distributed.all_reduce_sum(torch.tensor(local, dtype=torch.float64)).tolist()
    totals[-1] = local[-1]  # the largest face: this process's (a sum of maxima means nothing)
    if is_main:
        for line in summary.face_summary(totals, auto=pipe.start_step == "auto"):
            log.info("%s", line)
        summary.note_large_faces(totals, size, bundled=pipe.options.model.bundled)


def run_pipeline(args: argparse.Namespace, make_options, pipeline_cls, *, videos: bool, what: str) -> int:
    """Shared body of `difface restore` and `difface inpaint`: options, inputs, output check, model (all
    before any input is touched; a problem is `error:` and exit 2), then the run and its report."""
    try:
        options = make_options(args)
        log.info("%s", set_cpu_threads(options.model.threads))
        inputs = collect(args.inputs, videos=videos)
        dist_info = distributed.setup(args.device)  # under torchrun: one shard of the inputs per process
        files.check_output(args.output, options)  # before the models load
        pipe = pipeline_cls.load(options, dist_info.device)
    except (OptionError, ValueError, FileNotFoundError) as e:
        log.error("error: %s", option_message(e) if isinstance(e, OptionError) else e)
        return 2
    log.info("%s", pipe.describe())
    t0 = time.perf_counter()
    outcomes = files.run(pipe, inputs, args.output, rank=dist_info.rank, world_size=dist_info.world_size,
                         skip_existing=args.skip_existing)
    return report(outcomes, time.perf_counter() - t0, args.output, what=what, world_size=dist_info.world_size,
                  is_main=dist_info.is_main, pipe=pipe)


def run(args: argparse.Namespace) -> int:
    with kept_threads():
        return run_pipeline(args, restore_options, RestorePipeline, videos=not args.aligned, what="restored")
