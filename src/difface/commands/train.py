"""`difface train prior|estimator|inpainter`: train the diffusion prior, the diffused estimator or the
inpainting estimator (LaMa)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from difface.commands import COMMANDS
from difface.data.datasets import NoReadableImages
from difface.train.checkpoint import load_checkpoint
from difface.train.config import ConfigError, apply_overrides, from_dict, load_config
from difface.train.run import best_checkpoint, export_checkpoint, run_training

log = logging.getLogger("difface")

EPILOG = """examples:
  difface train prior --config configs/train/prior_tiny64.yaml --data faces/ --out runs/prior
  difface train estimator --config configs/train/estimator_tiny64.yaml --data faces/ --out runs/est \\
      --set data.val_lq=val/lq --set data.val_hq=val/hq
  difface train inpainter --config configs/train/inpainter_tiny64.yaml --data faces/ --out runs/inp \
      --set data.val_hq=val/hq
  difface train prior --resume runs/prior --max-steps 20000        # continue (newest checkpoint)
  torchrun --standalone --nproc_per_node 8 -m difface train prior --config configs/train/prior_ffhq512.yaml
  difface train estimator --export runs/est --best psnr_y --export-to est_best.safetensors

The run folder receives config.yaml, train.jsonl/csv (loss, lr, grad norm, speed), val.jsonl/csv,
samples/*.png, checkpoints/step_*.pt and <task>.safetensors (EMA weights when the config has an
EMA), usable as `difface restore --prior runs/prior/prior.safetensors --estimator ...`.
Results do not depend on the number of processes: the global batch (optim.batch_size) is split
between them, and every sample's timestep and noise come from (seed, step, sample position). The
inpainter's BatchNorm normalises each micro-batch (optim.micro_batch), so set micro_batch when comparing
runs on different numbers of processes; its running statistics follow the whole global batch."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help=COMMANDS["train"],
                       description="Train a DifFace network from a YAML config (strict: unknown keys are "
                       "errors; omitted keys keep the official values).", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=("prior", "estimator", "inpainter"),
                   help="prior: diffusion UNet; estimator: SwinIR; inpainter: LaMa on masked faces")
    p.add_argument("--config", type=Path, metavar="FILE", help="training config (YAML); optional with --resume "
                   "(the checkpoint's config is used)")
    p.add_argument("--data", metavar="DIR", help="training images (overrides data.folder)")
    p.add_argument("--out", type=Path, metavar="DIR", help="run folder (default: runs/<task>-<config name>; "
                   "with --resume: the checkpoint's run folder)")
    p.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps in total (overrides max_steps)")
    p.add_argument("--resume", metavar="CKPT", help="checkpoint file or run folder (newest checkpoint) to "
                   "continue exactly where it stopped")
    p.add_argument("--estimator", metavar="WEIGHTS", help="prior only: estimator for the restoration grids "
                   "(overrides sample.estimator)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=2e-4 --set data.size=64 (repeatable)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (under torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads of torch (default: torch's choice; "
                   "1 is often faster on a busy machine)")
    g = p.add_argument_group("exporting a checkpoint instead of training")
    g.add_argument("--export", metavar="CKPT|RUN", help="write the weights (the EMA when there is one) of a "
                   "checkpoint, or of a run folder's newest or --best checkpoint, to --export-to; no training")
    g.add_argument("--best", metavar="METRIC", help="with --export RUN: the kept checkpoint with the best "
                   "validation METRIC of val.jsonl (higher psnr/ssim, lower errors), e.g. psnr_y, val_eps_mse")
    g.add_argument("--export-to", type=Path, metavar="FILE", help="output .safetensors (default: "
                   "RUN/<task>_step_<N>.safetensors)")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> list[str]:
    items = list(args.overrides)
    if args.data:
        items.append(f"data.folder={args.data}")
    if args.max_steps is not None:
        items.append(f"max_steps={args.max_steps}")
    if args.estimator:
        items.append(f"sample.estimator={args.estimator}")
    return items


def _quote(item: str) -> str:
    # Paths are passed as YAML strings; quote them so that e.g. "1e3" or "null" stay strings.
    key, value = item.split("=", 1)
    if key in ("data.folder", "sample.estimator"):
        return f"{key}={value!r}" if "'" not in value else f'{key}="{value}"'
    return item


def prepare(args: argparse.Namespace):
    """(config, run folder, loaded checkpoint or None) from the command-line arguments."""
    saved = load_checkpoint(args.resume) if args.resume else None
    if args.config is not None:
        cfg = load_config(args.config, args.task)
    elif saved is not None:
        cfg = from_dict(saved["config"], args.task, where=saved["path"])
    else:
        raise ValueError("give --config FILE (or --resume CKPT to continue a run)")
    cfg = apply_overrides(cfg, [_quote(s) for s in _overrides(args)])
    if args.out is not None:
        out = args.out
    elif saved is not None:
        out = Path(saved["path"]).parent.parent
    else:
        out = Path("runs") / f"{args.task}-{args.config.stem}"
    return cfg, out, saved


def export(args: argparse.Namespace) -> int:
    """--export: write a checkpoint's weights without training."""
    try:
        source = Path(args.export)
        if args.best:
            if not source.is_dir():
                raise ValueError(f"--best needs a run folder, and {source} is not a folder")
            source, score = best_checkpoint(source, args.best)
            print(f"best {args.best}: {score:.6g} at {source.name}", file=sys.stderr)
        saved = load_checkpoint(source)
        task = from_dict(saved["config"], where=saved["path"]).task
        if task != args.task:
            raise ValueError(f"{saved['path']}: a checkpoint of the {task}, not of the {args.task}")
        ckpt = Path(saved["path"])
        out = args.export_to or ckpt.parent.parent / f"{args.task}_step_{int(saved['step'])}.safetensors"
        if out.suffix != ".safetensors":
            raise ValueError(f"--export-to {out}: give a .safetensors file name")
        path = export_checkpoint(saved, out)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"exported step {int(saved['step'])} of {ckpt} to {path}", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.export:
        return export(args)
    if args.best or args.export_to:
        print("error: --best and --export-to go with --export", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cfg, out, saved = prepare(args)
        state = run_training(cfg, out, device=args.device, resume=saved)
    except (ConfigError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NoReadableImages as e:  # every training image is unreadable: nothing to train on
        print(f"error: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {cfg.task} to step {state.step}; weights: {out / (cfg.task + '.safetensors')}",
              file=sys.stderr)
    return 0
