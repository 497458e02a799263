"""`difface degrade`: make (lq, hq) pairs from high-quality faces with a named degradation (DEGRADATIONS)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from difface.atomic import atomic_write_bytes
from difface.commands import COMMANDS
from difface.data.datasets import resize_square
from difface.data.degrade import (
    DEGRADATIONS,
    TEST_RECIPE,
    DegradationConfig,
    DegradationParams,
    TestCombo,
    apply_degradation,
    recipe_params,
    sample_params,
    to_gray,
)
from difface.images import ImageReadError, collect_inputs, read_image, write_image

log = logging.getLogger(__name__)

DESCRIPTION = """\
Degrade every image of HQ_DIR (sorted by path) and write OUT/lq/<stem>.png, OUT/hq/<stem>.png
and OUT/degradations.jsonl (one JSON line per written pair: name, source file, parameters).

Presets: gfpgan (official SwinIR training ranges), celeba-test (official CelebA-Test grid:
image n gets the n-th of the 4000 combinations in the official loop order, sigma_y drawn from
the seed; more images cycle), mild, moderate, severe. Presets are defined for 512x512 faces and
scaled to the image size (see difface.data.degrade): use --size to resize the hq images first.
Image n uses the random stream default_rng([seed, n]), so a result does not depend on --limit.
Unreadable files are reported and skipped; the exit status is 1 if any failed.

Example: difface degrade celeba_hq512/ -o celeba_test/ --degradation celeba-test --seed 10000
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("degrade", help=COMMANDS["degrade"],
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("hq_dir", metavar="HQ_DIR", help="folder (or file / glob) of high-quality faces")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    p.add_argument("--degradation", default="celeba-test", choices=sorted(DEGRADATIONS),
                   help="degradation, a name of difface.data.degrade.DEGRADATIONS (default: celeba-test)")
    p.add_argument("--preset", dest="degradation", choices=sorted(DEGRADATIONS), help=argparse.SUPPRESS)  # old name
    p.add_argument("--seed", type=int, default=10000, help="random seed (default: 10000, as official)")
    p.add_argument("--size", type=int, default=None, metavar="N",
                   help="resize hq to NxN (shorter side + centre crop) before degrading")
    p.add_argument("--limit", type=int, default=None, metavar="K", help="only the first K images")
    p.add_argument("--recursive", action="store_true", help="also search sub-folders of HQ_DIR")
    p.set_defaults(func=run)


def _combos(seed: int) -> Iterator[TestCombo]:
    rng = np.random.default_rng([seed])
    while True:
        yield from TEST_RECIPE.combos(rng)


def _degrade_one(hq: np.ndarray, cfg: DegradationConfig, combo: TestCombo | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, DegradationParams]:
    cfg = cfg.for_resolution(min(hq.shape[:2]))
    params = recipe_params(combo, cfg) if combo is not None else sample_params(cfg, rng)
    lq = apply_degradation(hq, params, rng)
    return lq, (to_gray(hq) if params.gray else hq), params


def run(args: argparse.Namespace) -> int:
    try:
        files = collect_inputs([args.hq_dir], recursive=args.recursive)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.limit is not None:
        files = files[: max(0, args.limit)]
    if not files:
        print(f"error: {args.hq_dir}: no images found", file=sys.stderr)
        return 2
    cfg, out = DEGRADATIONS[args.degradation], Path(args.output)
    combos = _combos(args.seed) if cfg.recipe == "celeba-test" else None
    records, failed, seen = [], [], set()
    for n, path in enumerate(tqdm(files, desc="degrade", unit="img", disable=None)):
        combo = next(combos) if combos is not None else None  # consumed even on failure: n <-> combo n
        try:
            if path.stem in seen:
                raise ImageReadError(f"{path}: another input already produced {path.stem}.png")
            hq = read_image(path).rgb
            if args.size:
                hq = resize_square(hq, args.size)
            lq, hq, params = _degrade_one(hq, cfg, combo, np.random.default_rng([args.seed, n]))
        except (ImageReadError, ValueError) as e:
            failed.append(str(path))
            tqdm.write(f"skipped: {e}", file=sys.stderr)
            continue
        seen.add(path.stem)
        write_image(out / "lq" / f"{path.stem}.png", lq)
        write_image(out / "hq" / f"{path.stem}.png", hq)
        records.append({"name": path.stem, "source": str(path), "index": n, "height": hq.shape[0],
                        "width": hq.shape[1], **params.to_dict()})
    lines = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write_bytes(out / "degradations.jsonl", lines.encode())
    print(f"wrote {len(records)} pair(s) to {out}" + (f"; {len(failed)} failed" if failed else ""),
          file=sys.stderr)
    return 1 if failed else 0
