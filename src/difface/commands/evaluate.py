"""`difface evaluate`: score restored faces against ground truth (PSNR, SSIM, LPIPS, FID, IDS, ...)."""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
from pathlib import Path

from difface.atomic import atomic_write_bytes
from difface.commands import COMMANDS
from difface.commands.checks import output_file_problem
from difface.config import DEFAULT_DETECTOR
from difface.device import pick_device
from difface.metrics import METRICS, parse_metric_names
from difface.metrics import backbones as _metric_weights  # noqa: F401 - registers the LPIPS/FID weights by name
from difface.metrics.runner import EvalOptions, evaluate, format_table, name_list, pair_files

log = logging.getLogger("difface")

_EPILOG = """metrics:
""" + "\n".join(f"  {m.name:10} {m.description}" for m in METRICS.values()) + """

pairing: a prediction and a ground truth pair when their keys are equal. The key is the file name
without extension, or, with --pair-regex R, the first non-empty group (else the whole match) of
re.search(R, stem) on both names. Example: lq/ffhq_00000.png vs hq/00000.png pair with
--pair-regex '(\\d+)$'.

failures: a pair whose file cannot be read, or whose images differ in size where a metric compares
pixels (psnr, ssim, psnr_y, ssim_y, lpips, lpips_vgg), is reported on a "failed:" line and left
out; the other pairs are scored. Files on one side only are reported (count and first names).
Exit status: 0 when every pair was scored; 1 when a pair failed, a requested metric could not be
scored on any image, or nothing could be scored; 2 for a usage error (unknown metric, missing
folder, an output path that cannot be written), found before any image is read.

weights: LPIPS and FID backbones are looked up in the difface cache and torch's hub cache
(~/.cache/torch/hub/checkpoints); a metric whose file is missing is skipped with a line naming it.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help=COMMANDS["evaluate"],
                       description="Score the images of --pred against --gt (paired metrics), against "
                       "reference statistics (FID) or alone (NIQE). Prints per-metric means; --json/--csv "
                       "write per-image rows.", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pred", required=True, type=Path, help="folder of restored (or any evaluated) images")
    p.add_argument("--gt", type=Path, help="folder of ground-truth images (paired metrics)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated names (default: psnr,ssim,psnr_y,ssim_y,lpips with --gt, else niqe)")
    p.add_argument("--pair-regex", help="regex giving the pairing key of a file stem (see below)")
    p.add_argument("--crop-border", type=int, default=0, help="pixels removed on each side (PSNR, SSIM, NIQE)")
    p.add_argument("--ref-stats", type=Path, help="FID reference statistics .npz (mu, sigma); created from "
                   "--ref-dir when missing")
    p.add_argument("--ref-dir", type=Path, help="folder of FID reference images (default reference: --gt)")
    p.add_argument("--alexnet", help="path of alexnet-owt-7be5be79.pth (LPIPS)")
    p.add_argument("--vgg16", help="path of vgg16-397923af.pth (LPIPS-VGG)")
    p.add_argument("--inception", help="path of pt_inception-2015-12-05-6726825d.pth (FID)")
    p.add_argument("--arcface", help="ArcFace ONNX model for ids/deg (e.g. insightface w600k_r50.onnx)")
    p.add_argument("--arcface-align", choices=("ffhq", "resize"), default="ffhq",
                   help="ffhq: warp FFHQ-aligned faces to the ArcFace 112 layout; resize: resize whole image")
    p.add_argument("--landmark-detector", default=DEFAULT_DETECTOR,
                   help=f"face detector backend for lmd (default {DEFAULT_DETECTOR})")
    p.add_argument("--download", action="store_true", help="download missing registry weights")
    p.add_argument("--device", default="cpu", help="torch device for LPIPS/FID/LMD: cpu, cuda, mps, auto")
    p.add_argument("--json", type=Path, help="write means and per-image rows as JSON")
    p.add_argument("--csv", type=Path, help="write per-image rows as CSV")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _options(args: argparse.Namespace):
    return EvalOptions(
        crop_border=args.crop_border, device=str(pick_device(args.device)), alexnet=args.alexnet, vgg16=args.vgg16,
        inception=args.inception, arcface=args.arcface, arcface_align=args.arcface_align,
        allow_download=args.download, ref_stats=str(args.ref_stats) if args.ref_stats else None,
        ref_dir=str(args.ref_dir) if args.ref_dir else None, landmark_detector=args.landmark_detector,
    )


def _check_args(args: argparse.Namespace) -> str | None:
    """The first usage problem of the arguments (an error message), else None."""
    if args.crop_border < 0:
        return f"--crop-border must be >= 0, got {args.crop_border}"
    for option, path in (("--json", args.json), ("--csv", args.csv)):
        problem = output_file_problem(path, option) if path is not None else None
        if problem:
            return problem
    return None


def run(args: argparse.Namespace) -> int:
    default = "psnr,ssim,psnr_y,ssim_y,lpips" if args.gt else "niqe"
    try:
        names = parse_metric_names(args.metrics or default)
        problem = _check_args(args)
        if problem:
            raise ValueError(problem)
        opts = _options(args)
        pairs, warnings = pair_files(args.pred, args.gt, args.pair_regex)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        log.error("error: %s", e)
        return 2
    for w in warnings:
        log.warning("warning: %s", w)
    what = "image pair(s)" if args.gt else "image(s)"  # no --gt: no-reference metrics score single images
    if not pairs:
        log.error("error: %s", "no image pairs found (check --pred/--gt and --pair-regex)" if args.gt
                  else f"no images found in {args.pred}")
        return 1
    result = evaluate(pairs, names, opts, progress=not args.no_progress)
    for n, reason in result.skipped.items():
        print(f"skipped {n}: {reason}")
    for reason in result.failed.values():
        log.error("failed: %s", reason)
    scored = len(result.rows)
    print(f"{scored} of {len(pairs)} {what} scored from {args.pred}" + (f" against {args.gt}" if args.gt else "")
          + (f"; {len(result.failed)} failed: {name_list(list(result.failed))}" if result.failed else ""))
    if scored == 0:
        log.error("error: none of the %d %s could be scored; no table%s written", len(pairs), what,
                  ", JSON or CSV" if args.json or args.csv else "")
        return 1
    print(format_table(result, names))
    empty = [n for n in names if n in result.means and result.counts.get(n, 0) == 0]
    for n in empty:
        log.error("error: %s could not be scored on any image", n)
    if args.json:
        doc = {"pred": str(args.pred), "gt": str(args.gt) if args.gt else None, "metrics": names,
               "crop_border": args.crop_border, "means": result.means, "counts": result.counts,
               "skipped": result.skipped, "failed": result.failed, "images": result.rows}
        atomic_write_bytes(args.json, (json.dumps(_jsonable(doc), indent=2) + "\n").encode())
    if args.csv:
        atomic_write_bytes(args.csv, _csv_bytes(result.rows, [n for n in names if n in result.means and n != "fid"]))
    if result.failed or empty or len(result.skipped) >= len(names):
        return 1
    return 0


def _jsonable(x):
    """Floats that JSON cannot hold (NaN, inf) become null / "inf" strings."""
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _csv_bytes(rows: list[dict], names: list[str]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "pred", "gt", *names])
    for r in rows:
        w.writerow([r["name"], r["pred"], r["gt"] or "", *(f"{r[n]:.6g}" for n in names)])
    return buf.getvalue().encode()
