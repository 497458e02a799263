"""`difface inpaint`: fill the missing region of aligned faces (DifFace's second task)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from difface.commands import COMMANDS
from difface.commands.options import inpaint_options
from difface.commands.restore import add_model_arguments, run_pipeline
from difface.device import kept_threads
from difface.pipeline import InpaintPipeline

log = logging.getLogger("difface")

EPILOG = """examples:
  difface inpaint masked/ -o out                          # missing pixels are exactly black (official)
  difface inpaint face.png -o out --mask hole.png         # white = missing, any size
  difface inpaint faces/ -o out --mask masks/             # masks paired by file name (masks/NAME.*)
  difface inpaint masked/ -o out --model official-256-inpaint   # the paper's 256 px models (downloaded once)
  difface inpaint masked/ -o out --start-step 0           # the estimator's (LaMa's) fill, no diffusion

The result for IN/name.ext is OUT/name.png at the input's size; every known pixel is kept exactly.
With no weights named, the bundled 64x64 inpainter and prior are used (docs/model-card.md)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inpaint", help=COMMANDS["inpaint"], epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Face inpainting with DifFace: a LaMa estimator fills the hole, the estimate is diffused to "
        "step N of the face prior, and the reverse process runs back with the known pixels re-imposed at "
        "every step.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="aligned face images, folders or glob patterns")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="output folder")
    p.add_argument("--mask", metavar="FILE|DIR", help="mask image for every input, or a folder of masks paired by "
                   "file stem (white = missing; resized nearest to each input). Default: pixels that are exactly "
                   "0 in all three channels are missing (the official convention)")
    add_model_arguments(p, auto_start=False, task="inpainting")
    p.add_argument("--skip-existing", action="store_true", help="leave inputs whose output file exists as "
                   "they are (rerun a killed batch with this to finish it)")
    p.add_argument("--save-comparison", action="store_true",
                   help="also write OUTDIR/comparisons/name.png: input | estimate | result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with kept_threads():
        return run_pipeline(args, inpaint_options, InpaintPipeline, videos=False, what="inpainted")
