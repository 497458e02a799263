"""`difface export onnx`: write a model's networks as ONNX graphs with a manifest (difface.export)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from difface import models
from difface.backends import BackendUnavailable
from difface.commands import COMMANDS
from difface.config import DEFAULT_NFE, DEFAULT_STEPS
from difface.diffusion.solvers import OFFICIAL
from difface.export import EXPORT_SAMPLERS, export_model
from difface.restore import DifFace

log = logging.getLogger("difface")

EPILOG = """examples:
  difface export onnx -o difface-onnx                                  # the bundled small model
  difface export onnx --prior iddpm-ffhq512 --estimator swinir-ffhq512 -o difface512
  difface export onnx --filler -o filler512       # official 512 networks with the deterministic filler weights
  difface export onnx --sampler ddim --nfe 10 -o fast       # the manifest writes out the 10-step DDIM instead
  python examples/onnx_restore.py difface-onnx face.png -o restored.png   # numpy + onnxruntime, no torch

Graphs are cached in the weights cache (onnx/ beside weights/) under a key of the weights file's SHA-256,
the network config, the dtype and the opset, and reused while the key matches (docs/onnx.md)."""

FILLER_DEFAULTS = {"restoration": "unet_ffhq512,swinir_restoration512", "inpainting": "unet_ffhq256,lama_inpainting256"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help=COMMANDS["export"], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    fmt = p.add_subparsers(dest="format", metavar="FORMAT")
    o = fmt.add_parser("onnx", help="ONNX graphs + manifest.json", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    o.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="output folder")
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
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def load_model(args: argparse.Namespace):
    """The DifFace model the options name (bundled, named files, or filler networks)."""
    if args.filler is not None:
        if args.prior or args.estimator:
            raise ValueError("--filler builds its own networks; leave out --prior and --estimator")
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
    if (args.prior is None) != (args.estimator is None):
        raise ValueError("give both --prior and --estimator (or neither, for the bundled model)")
    return DifFace.load(args.prior, args.estimator, respacing=args.steps, task=args.task)


def run(args: argparse.Namespace) -> int:
    try:
        model = load_model(args)
        if args.nfe is not None and args.sampler != "ddim":
            raise ValueError("--nfe applies to --sampler ddim")
        manifest = export_model(model, args.output, start_step=args.start_step, eta=args.eta, sampler=args.sampler,
                                nfe=args.nfe, dtype=args.dtype, opset=args.opset, log=log.info)
    except (ValueError, FileNotFoundError, KeyError, BackendUnavailable) as e:
        log.error("error: %s", e.args[0] if isinstance(e, KeyError) and e.args else e)
        return 2
    s = manifest["sampling"]
    log.info("wrote %s: %s, %d network evaluations from start step %d (t = %d), eta %g",
             args.output / "manifest.json", s["sampler"], len(s["steps"]), s["start_step"], s["start_t"], s["eta"])
    return 0
