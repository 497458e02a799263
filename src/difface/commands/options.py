"""Options <-> command line: `options_from_args` (parsed arguments -> validated options) and its inverse
`args_from_options` (options -> the arguments of `difface restore` / `difface inpaint` that give them).

These two and `FLAGS` (field name -> flag, for OptionError messages: `option_message`) are the only
translation between flag names and difface.config's option classes: the commands build their options with
the first, the app writes its "Same as: difface ..." line with the second.
"""

from __future__ import annotations

import argparse

from difface.config import (
    DEFAULT_MAX_PIXELS,
    InpaintOptions,
    ModelOptions,
    OptionError,
    PhotoOptions,
    RestoreOptions,
    SamplingOptions,
    VideoSettings,
)
from difface.presets import Resolved, bundled_cpu_backend, resolve_args


def model_options(args: argparse.Namespace, preset: Resolved) -> ModelOptions:
    """The ModelOptions of parsed arguments, the run preset's values (`preset.options`) for what it sets."""
    p = preset.options
    return ModelOptions(prior=args.prior, estimator=args.estimator, steps=args.steps, device=args.device,
                        dtype=p["dtype"], fast=p["fast"], compile=args.compile, backend=p["backend"],
                        threads=getattr(args, "threads", None) or 0, model=getattr(args, "model", None))


def sampling_options(args: argparse.Namespace, preset: Resolved) -> SamplingOptions:
    """The SamplingOptions of parsed arguments, the run preset's values for what it sets."""
    p = preset.options
    return SamplingOptions(start_step=args.start_step, eta=args.eta, sampler=p["sampler"], nfe=p["nfe"],
                           seed=args.seed, schedule=p["schedule"], schedule_fallback=preset.fallback,
                           strength=getattr(args, "strength", None))


def _max_pixels(args: argparse.Namespace) -> int:
    return DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels


def restore_options(args: argparse.Namespace) -> RestoreOptions:
    """The validated RestoreOptions of parsed `difface restore` arguments (OptionError for a bad value), built once
    with their run preset's values (difface.presets.resolve_args; the arguments are never written)."""
    preset = resolve_args(args)
    tracking = not args.no_tracking
    return RestoreOptions(
        model=model_options(args, preset),
        sampling=sampling_options(args, preset),
        photo=PhotoOptions(upscale=args.upscale, detector=args.detector, only_center_face=args.only_center_face,
                           bg_upsampler=preset.options["bg_upsampler"], draw_boxes=args.draw_boxes,
                           max_face_size=args.max_face_size),
        video=VideoSettings(tracking=tracking, track_seeds=tracking and not args.no_track_seeds,
                            smoothing=tracking and not args.no_smoothing, batch_frames=args.batch_frames,
                            crf=args.crf, resume=not args.no_resume, refuse_vfr=args.refuse_vfr,
                            max_seconds=args.max_video_seconds),
        aligned=args.aligned, batch_size=args.batch_size, save_comparison=args.save_comparison,
        max_pixels=_max_pixels(args),
        ext=args.ext, quality=args.quality,
    )


def inpaint_options(args: argparse.Namespace) -> InpaintOptions:
    """The validated InpaintOptions of parsed `difface inpaint` arguments (OptionError for a bad value)."""
    preset = resolve_args(args)
    return InpaintOptions(model=model_options(args, preset), sampling=sampling_options(args, preset), mask=args.mask,
                          batch_size=args.batch_size, save_comparison=args.save_comparison,
                          max_pixels=_max_pixels(args))


def options_from_args(args: argparse.Namespace) -> RestoreOptions | InpaintOptions:
    """The options of parsed `difface restore` or `difface inpaint` arguments (inpaint: it has --mask), after
    their --preset (difface.presets: fills the options the preset sets and the user left out)."""
    return inpaint_options(args) if hasattr(args, "mask") else restore_options(args)


# -- options -> arguments (only what differs from the defaults) -------------------------------------------
# (attribute, flag) of the options whose value is written after the flag; booleans are below.
_MODEL_VALUES = (("model", "--model"), ("prior", "--prior"), ("estimator", "--estimator"), ("steps", "--steps"),
                 ("device", "--device"), ("dtype", "--dtype"), ("backend", "--backend"), ("threads", "--threads"))
_MODEL_FLAGS = (("fast", "--fast"), ("compile", "--compile"))
_SAMPLING_VALUES = (("start_step", "--start-step"), ("eta", "--eta"), ("sampler", "--sampler"), ("nfe", "--nfe"),
                    ("seed", "--seed"), ("schedule", "--schedule"), ("strength", "--strength"))
_PHOTO_VALUES = (("upscale", "--upscale"), ("detector", "--detector"), ("bg_upsampler", "--bg-upsampler"),
                 ("max_face_size", "--max-face-size"))
_PHOTO_FLAGS = (("only_center_face", "--only-center-face"), ("draw_boxes", "--draw-boxes"))
_VIDEO_VALUES = (("batch_frames", "--batch-frames"), ("crf", "--crf"), ("max_seconds", "--max-video-seconds"))
_VIDEO_FLAGS = (("refuse_vfr", "--refuse-vfr"),)
_VIDEO_OFF = (("tracking", "--no-tracking"), ("resume", "--no-resume"))
_OUTPUT_VALUES = (("ext", "--ext"), ("quality", "--quality"))


def _text(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)  # repr: a float reads back exactly


def _changed(obj, default, values=(), flags=(), off=()) -> list[str]:
    """The flags that turn `default` (an options object) into `obj`."""
    out: list[str] = []
    for name, flag in values:
        if getattr(obj, name) != getattr(default, name):
            out += [flag, _text(getattr(obj, name))]
    out += [flag for name, flag in flags if getattr(obj, name) and not getattr(default, name)]
    out += [flag for name, flag in off if not getattr(obj, name) and getattr(default, name)]
    return out


def _video_args(v: VideoSettings) -> list[str]:
    args = _changed(v, VideoSettings(), _VIDEO_VALUES, _VIDEO_FLAGS, _VIDEO_OFF)
    if v.tracking:  # without tracking, --no-tracking implies both
        args += ["--no-track-seeds"] if not v.track_seeds else []
        args += ["--no-smoothing"] if not v.smoothing else []
    return args


def args_from_options(options: RestoreOptions | InpaintOptions) -> list[str]:
    """The command-line arguments (after the inputs and -o) that give `options`, defaults left out.

    Parsing them back (`options_from_args`) gives options equal to `options` (video settings: with
    tracking off, track seeds and smoothing are off too, as --no-tracking implies).
    """
    args = _changed(options.model, ModelOptions(), _MODEL_VALUES, _MODEL_FLAGS)
    m = options.model
    if m.backend == "torch" and bundled_cpu_backend(*m.files(), device=m.device, dtype=m.dtype, fast=m.fast,
                                                    compile=m.compile, inpainting=isinstance(options, InpaintOptions)):
        args += ["--backend", "torch"]  # the command line's default for the bundled model on a CPU is not torch
    args += _changed(options.sampling, SamplingOptions(), _SAMPLING_VALUES)
    if isinstance(options, InpaintOptions):
        args += [] if options.mask is None else ["--mask", options.mask]
    else:
        args = (["--aligned"] if options.aligned else []) + args
        args += _changed(options.photo, PhotoOptions(), _PHOTO_VALUES, _PHOTO_FLAGS)
        args += _video_args(options.video)
        args += _changed(options, RestoreOptions(), _OUTPUT_VALUES)
    return args + _changed(options, type(options)(), (("batch_size", "--batch-size"), ("max_pixels", "--max-pixels")),
                           (("save_comparison", "--save-comparison"),))


# Every option's flag by its field name (OptionError names options by field): the tables above, and the rest.
FLAGS: dict[str, str] = {
    **dict(_MODEL_VALUES + _MODEL_FLAGS + _SAMPLING_VALUES + _PHOTO_VALUES + _PHOTO_FLAGS + _VIDEO_VALUES
           + _VIDEO_FLAGS + _OUTPUT_VALUES),
    "aligned": "--aligned", "batch_size": "--batch-size", "max_pixels": "--max-pixels", "mask": "--mask",
    "save_comparison": "--save-comparison", "output": "-o", "preset": "--preset",
}


def option_message(e: OptionError) -> str:
    """An OptionError as the command line says it: "--eta: must lie in [0, 1], got 2"."""
    return e.say(FLAGS)
