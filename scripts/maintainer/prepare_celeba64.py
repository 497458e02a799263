"""Prepare the 64x64 training data of the bundled model from ../shared/data/celeba-aligned-89x109.

  1. difface data align RAW -o WORK/all --size 64 --shared-transform 200
  2. seeded split (numpy default_rng(0)): 500 validation faces, the rest for training; the file-name
     lists are kept in splits/ (the images never enter the repository: non-commercial licence)
  3. WORK/train and WORK/val hold hard links to the aligned faces
  4. difface degrade WORK/val -o WORK/val_celebatest --degradation celeba-test --seed 0 (official test
     recipe scaled to 64 px) gives the paired validation set lq/ and hq/

  5. with --half-split SEED: WORK/train_halfSEED, a seeded half of the training faces (numpy default_rng(SEED)),
     for a second prior trained on other data (configs/train/prior_seed2_64.yaml); its list is
     splits/celeba64_train_halfSEED.txt

usage: python scripts/maintainer/prepare_celeba64.py [--raw ../shared/data/celeba-aligned-89x109] [--work celeba64]
                                                     [--half-split SEED]
"""

import argparse
import os
from pathlib import Path

import numpy as np

from difface.cli import main as difface

ROOT = Path(__file__).resolve().parents[2]


def split(names: list[str], n_val: int, seed: int = 0) -> tuple[list[str], list[str]]:
    perm = np.random.default_rng(seed).permutation(len(names))
    val = sorted(names[i] for i in perm[:n_val])
    train = sorted(names[i] for i in perm[n_val:])
    return train, val


def link(names: list[str], src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        if not (dst / n).exists():
            os.link(src / n, dst / n)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--raw", type=Path, default=ROOT.parent / "shared" / "data" / "celeba-aligned-89x109")
    ap.add_argument("--work", type=Path, default=Path("celeba64"))
    ap.add_argument("--val", type=int, default=500)
    ap.add_argument("--half-split", type=int, metavar="SEED", help="also link a seeded half of the training faces")
    args = ap.parse_args()
    aligned = args.work / "all"
    if not (aligned / "align_report.json").exists():
        assert difface(["data", "align", str(args.raw), "-o", str(aligned), "--size", "64",
                        "--shared-transform", "200"]) == 0
    names = sorted(p.name for p in aligned.glob("*.png"))
    train, val = split(names, args.val)
    (ROOT / "splits").mkdir(exist_ok=True)
    (ROOT / "splits" / "celeba64_train.txt").write_text("\n".join(train) + "\n")
    (ROOT / "splits" / "celeba64_val.txt").write_text("\n".join(val) + "\n")
    link(train, aligned, args.work / "train")
    link(val, aligned, args.work / "val")
    if not (args.work / "val_celebatest" / "lq").exists():
        assert difface(["degrade", str(args.work / "val"), "-o", str(args.work / "val_celebatest"),
                        "--degradation", "celeba-test", "--seed", "0"]) == 0
    print(f"train {len(train)}, val {len(val)} -> {args.work}")
    if args.half_split is not None:
        _, half = split(train, len(train) // 2, args.half_split)  # the first half of a seeded permutation
        (ROOT / "splits" / f"celeba64_train_half{args.half_split}.txt").write_text("\n".join(half) + "\n")
        link(half, aligned, args.work / f"train_half{args.half_split}")
        print(f"train_half{args.half_split}: {len(half)} faces")
