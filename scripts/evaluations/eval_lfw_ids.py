"""ids_dlib on LFW: score distributions of same-person and different-person pairs.

Draws N same-person and N different-person pairs from a folder of `Person_Name_NNNN.jpg` files with
a seeded numpy Generator, embeds every image once with the dlib ResNet descriptor
(`difface.metrics.identity.DlibEmbedder`), and prints, for the cosine similarity (ids_dlib) and for
dlib's own Euclidean distance: mean, std and quantiles of both groups, the accuracy at the best
threshold on these pairs (optimistic: the threshold is fitted on the same pairs) and, for the
distance, at dlib's published threshold 0.6.

    python scripts/evaluations/eval_lfw_ids.py --data ../shared/data/lfw-150 --pairs 200 --seed 0
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from difface.images import read_image
from difface.metrics.identity import DlibEmbedder, cosine_similarity

_NAME = re.compile(r"^(.+)_(\d{4})$")


def people(folder: Path) -> dict[str, list[Path]]:
    """Person name -> sorted image paths."""
    out: dict[str, list[Path]] = defaultdict(list)
    for p in sorted(folder.glob("*.jpg")):
        m = _NAME.match(p.stem)
        if m:
            out[m.group(1)].append(p)
    return dict(out)


def draw_pairs(groups: dict[str, list[Path]], n: int, rng: np.random.Generator):
    """n distinct same-person pairs and n distinct different-person pairs of paths."""
    names = sorted(groups)
    multi = [k for k in names if len(groups[k]) >= 2]
    same, diff = set(), set()
    while len(same) < n:
        imgs = groups[multi[rng.integers(len(multi))]]
        i, j = sorted(rng.choice(len(imgs), 2, replace=False))
        same.add((imgs[i], imgs[j]))
    while len(diff) < n:
        a, b = rng.choice(len(names), 2, replace=False)
        pa, pb = groups[names[a]], groups[names[b]]
        diff.add((pa[rng.integers(len(pa))], pb[rng.integers(len(pb))]))
    return sorted(same), sorted(diff)


def summary(x: np.ndarray) -> dict[str, float]:
    q = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)), "q05": q[0], "q25": q[1], "median": q[2],
            "q75": q[3], "q95": q[4], "min": float(x.min()), "max": float(x.max())}


def best_threshold(pos: np.ndarray, neg: np.ndarray, higher_same: bool) -> tuple[float, float]:
    """(threshold, accuracy) maximising the accuracy of `score >= t` (or <= t) meaning same person."""
    s, n = (pos, neg) if higher_same else (-pos, -neg)
    cands = np.unique(np.concatenate([s, n]))
    acc = [(np.sum(s >= t) + np.sum(n < t)) / (len(s) + len(n)) for t in cands]
    k = int(np.argmax(acc))
    return float(cands[k] if higher_same else -cands[k]), float(acc[k])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/lfw-150"))
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: not a folder")
    same, diff = draw_pairs(people(args.data), args.pairs, np.random.default_rng(args.seed))
    emb = DlibEmbedder()
    files = sorted({p for pair in same + diff for p in pair})
    vec = {p: emb.embed(read_image(p).rgb) for p in tqdm(files, desc="dlib descriptors")}
    report = {"pairs": args.pairs, "seed": args.seed, "images": len(files), "no_face_fallbacks": emb.fallbacks}
    for metric, fn, higher in (("ids_dlib (cosine)", cosine_similarity, True),
                               ("euclidean distance", lambda a, b: float(np.linalg.norm(a - b)), False)):
        pos = np.array([fn(vec[a], vec[b]) for a, b in same])
        neg = np.array([fn(vec[a], vec[b]) for a, b in diff])
        t, acc = best_threshold(pos, neg, higher)
        entry = {"same": summary(pos), "different": summary(neg), "best_threshold": t, "best_accuracy": acc}
        if not higher:
            entry["accuracy_at_0.6"] = float((np.sum(pos < 0.6) + np.sum(neg >= 0.6)) / (len(pos) + len(neg)))
        report[metric] = entry
    print(f"LFW {args.data}: {args.pairs} same + {args.pairs} different pairs, seed {args.seed}, "
          f"{len(files)} images, {emb.fallbacks} without a HOG detection")
    for metric in ("ids_dlib (cosine)", "euclidean distance"):
        e = report[metric]
        print(f"\n{metric}")
        cols = ("mean", "std", "q05", "q25", "median", "q75", "q95")
        print(f"  {'group':10} " + " ".join(f"{c:>7}" for c in cols))
        for g in ("same", "different"):
            print(f"  {g:10} " + " ".join(f"{e[g][c]:7.4f}" for c in cols))
        print(f"  best threshold {e['best_threshold']:.4f}: accuracy {e['best_accuracy']:.4f}")
        if "accuracy_at_0.6" in e:
            print(f"  dlib threshold 0.6: accuracy {e['accuracy_at_0.6']:.4f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
