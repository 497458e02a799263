"""`difface export onnx`: write a model's networks as ONNX graphs with a manifest (difface.export)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from difface import models
from difface.backends import BackendUnavailable
from difface.commands import COMMANDS
from difface.commands.options import option_message
from difface.commands.restore import add_model_argument, start_step_arg
from difface.config import DEFAULT_NFE, DEFAULT_SEED, DEFAULT_STEPS, SAMPLERS, SCHEDULES, OptionError, SamplingOptions
from difface.core import DifFace
from difface.diffusion.solvers import OFFICIAL
from difface.enhancer import DEFAULT_SAMPLER, Enhancer, export_enhancer
from difface.export import EXPORT_SAMPLERS, ExportSettings, export_model

log = logging.getLogger("difface")

EPILOG = """examples:
  difface export onnx -o difface-onnx                                  # the bundled small model
  difface export onnx --model official-512 -o difface512                # the paper's 512 px models
  difface export onnx --filler -o filler512       # official 512 networks with the deterministic filler weights
  difface export onnx --sampler ddim --nfe 10 -o fast       # the manifest writes out the 10-step DDIM instead
  python examples/onnx_restore.py difface-onnx face.png -o restored.png   # numpy + onnxruntime, no torch

Graphs are cached in the weights cache (onnx/ beside weights/) under a key of the weights file's SHA-256,
the network config, the dtype and the opset, and reused while the key matches (docs/onnx.md)."""

ENHANCER_EPILOG = """examples:
  difface export enhancer -o difface-enhancer.onnx                  # the bundled small model (64 px, band merge)
  difface export enhancer --model official-512 -o difface512-enhancer.onnx
  difface export enhancer --start-step 40 --nfe 5 --seed 7 -o stronger.onnx

One self-contained file a host program runs as its face enhancer (facefusion, ComfyUI's ReActor node, plain
onnxruntime): input `input` float32 (1, 3, 512, 512) RGB in [-1, 1], an FFHQ-512 aligned crop; output the
enhanced crop, same shape and range. The noise is drawn from --seed once and stored in the file: the same crop
always gives the same pixels (docs/integrations.md)."""

FILLER_DEFAULTS = {"restoration": "unet_ffhq512,swinir_restoration512", "inpainting": "unet_ffhq256,lama_inpainting256"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help=COMMANDS["export"], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    fmt = p.add_subparsers(dest="format", metavar="FORMAT")
    o = fmt.add_parser("onnx", help="ONNX graphs + manifest.json", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    o.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="output folder")
    add_model_argument(o, task=None)
    o.add_argument("--prior", help="diffusion prior: registry name or file (default: the bundled small model)")
    o.add_argument("--estimator", help="estimator: registry name or file (default: bundled)")
    o.add_argument("--task", default="restoration", choices=["restoration", "inpainting"],
                   help="which bundled (or filler) model: restoration (default) or inpainting")
    o.add_argument("--filler", nargs="?", const="", default=None, metavar="PRIOR,ESTIMATOR",
                   help="networks of difface.models.CONFIGS with the deterministic filler weights (default: the "
                   "official 512 restoration networks, or the 256 inpainting ones with --task inpainting)")
    o.add_argument("--steps", default=DEFAULT_STEPS, help=f"timestep respacing (default {DEFAULT_STEPS})")
    o.add_argument("--start-step", type=int, default=None, help="respaced start step written to the manifest "
                   "(default: the model's; the bundled model's 'auto' is written as its fixed alternative)")
    o.add_argument("--eta", type=float, default=None, help="DDIM eta (default: the model's)")
    o.add_argument("--sampler", default=OFFICIAL, choices=list(EXPORT_SAMPLERS),
                   help="the loop the manifest writes out (default official)")
    o.add_argument("--nfe", type=int, default=None, help=f"evaluations of --sampler ddim (default {DEFAULT_NFE})")
    o.add_argument("--dtype", default="fp32", choices=["fp32", "fp16"], help="graph precision (fp16: for GPUs)")
    o.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    o.set_defaults(func=run)
    register_enhancer(fmt)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def register_enhancer(fmt: argparse._SubParsersAction) -> None:
    e = fmt.add_parser("enhancer", help="one ONNX face-enhancer file for facefusion, ReActor, onnxruntime",
                       epilog=ENHANCER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("-o", "--output", required=True, type=Path, metavar="FILE.onnx", help="the file to write")
    add_model_argument(e)
    e.add_argument("--prior", help="diffusion prior: registry name or file (default: the bundled small model)")
    e.add_argument("--estimator", help="estimator: registry name or file (default: bundled)")
    e.add_argument("--filler", nargs="?", const="", default=None, metavar="PRIOR,ESTIMATOR",
                   help="networks with the deterministic filler weights (default: the official 512 ones); for timing")
    e.add_argument("--steps", default=DEFAULT_STEPS, help=f"timestep respacing (default {DEFAULT_STEPS})")
    e.add_argument("--start-step", type=start_step_arg, default=None, metavar="N",
                   help="respaced start step (default: the model's fixed default; the bundled model's is 20 = t 80)")
    e.add_argument("--eta", type=float, default=None, help="DDIM eta in [0, 1] (default: the model's)")
    e.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=list(SAMPLERS),
                   help=f"reverse process unrolled in the file (default {DEFAULT_SAMPLER})")
    e.add_argument("--nfe", type=int, default=None, help=f"network evaluations of a few-step sampler "
                   f"(default {DEFAULT_NFE})")
    e.add_argument("--schedule", default="even", choices=list(SCHEDULES), help="timesteps of the few-step sampler")
    e.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the noise stored in the file "
                   f"(default {DEFAULT_SEED})")
    e.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    e.set_defaults(func=run_enhancer, task="restoration")


def load_model(args: argparse.Namespace):
    """The DifFace model the options name (a named model of MODELS, bundled, named files, or filler networks)."""
    model = getattr(args, "model", None)
    if args.filler is not None:
        if args.prior or args.estimator or model:
            raise ValueError("--filler builds its own networks; leave out --model, --prior and --estimator")
        names = (args.filler or FILLER_DEFAULTS[args.task]).split(",")
        if len(names) != 2:
            raise ValueError(f"--filler: expected PRIOR,ESTIMATOR network names, got {args.filler!r}")
        nets = []
        for n in names:
            if n not in models.CONFIGS:
                raise ValueError(f"--filler: unknown network {n!r}; known: {', '.join(models.CONFIGS)}")
            nets.append(models.fill_deterministic(models.build(n)))
        task = "inpainting" if models.kind_of(nets[1].config) == "lama" else "restoration"
        return DifFace.from_modules(nets[0], nets[1], args.steps, name=f"filler weights ({names[0]}, {names[1]})",
                                    task=task)
    if model is not None and (args.prior is not None or args.estimator is not None):
        raise ValueError(f"give --model or --prior and --estimator, not both: {model} names its own weights")
    if (args.prior is None) != (args.estimator is None):
        raise ValueError("give both --prior and --estimator (or neither, for the bundled model)")
    return DifFace.from_pretrained(model, prior=args.prior, estimator=args.estimator, steps=args.steps,
                                   task=args.task, device="cpu")


def run(args: argparse.Namespace) -> int:
    try:
        model = load_model(args)
        if args.nfe is not None and args.sampler != "ddim":
            raise ValueError("--nfe applies to --sampler ddim")
        settings = ExportSettings(args.start_step, args.eta, args.sampler, args.nfe, args.dtype, args.opset)
        manifest = export_model(model, args.output, settings, log=log.info)
    except (ValueError, FileNotFoundError, KeyError, BackendUnavailable) as e:
        log.error("error: %s", e.args[0] if isinstance(e, KeyError) and e.args else e)
        return 2
    s = manifest["sampling"]
    log.info("wrote %s: %s, %d network evaluations from start step %d (t = %d), eta %g",
             args.output / "manifest.json", s["sampler"], len(s["steps"]), s["start_step"], s["start_t"], s["eta"])
    return 0


def run_enhancer(args: argparse.Namespace) -> int:
    try:
        if args.output.suffix.lower() != ".onnx":
            raise OptionError("output", f"host programs load .onnx files; name the file e.g. "
                              f"{args.output.with_suffix('.onnx').name}")
        if args.output.is_dir() or not args.output.parent.is_dir():
            raise OptionError("output", f"{args.output} must be a file in an existing folder")
        sampling = SamplingOptions(args.start_step, args.eta, args.sampler, args.nfe, args.seed, args.schedule)
        enhancer = Enhancer(load_model(args), sampling)
        log.info("exporting %s", enhancer.describe())
        info = export_enhancer(enhancer, args.output, opset=args.opset)
    except OptionError as e:
        log.error("error: %s", option_message(e))
        return 2
    except (ValueError, FileNotFoundError, KeyError) as e:
        log.error("error: %s", e.args[0] if isinstance(e, KeyError) and e.args else e)
        return 2
    log.info("wrote %s (%.1f MiB; licence: %s)", args.output, info["bytes"] / 2**20,
             info["metadata"]["difface.licence"])
    return 0
