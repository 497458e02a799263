"""Shared parts of the fast-schedule evaluations (scripts/evaluations/eval_fast_preset.py; the calibration split of
scripts/maintainer/fit_schedule.py, whose search is difface.tune): the paired faces, the official 100-step
reference (cached as .npz, keyed by the prior's SHA-256 and the face names).

The official start of DifFace: respaced step N = 100 of "ddim250" (t = 400), eta 0, seed 0 per face.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from difface.core import DifFace
from difface.images import image_to_tensor, read_image
from difface.weights import sha256_of

START_STEP, ETA, SEED = 100, 0.0, 0


def load_faces(lq_dir: Path, hq_dir: Path, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, S, S, 3) float32 in [0, 1] of the degraded and the true faces named `names`."""
    lq = np.stack([read_image(lq_dir / n).rgb for n in names]).astype(np.float32)
    hq = np.stack([read_image(hq_dir / n).rgb for n in names]).astype(np.float32)
    return lq, hq


def split_names(lq_dir: Path, which: str) -> list[str]:
    """'val': the first 100 sorted validation faces (docs/speed.md's evaluation set); 'calib:A:B': sorted
    faces A..B-1 (disjoint from 'val' when A >= 100)."""
    names = sorted(p.name for p in lq_dir.glob("*.png"))
    if which == "val":
        return names[:100]
    _, a, b = which.split(":")
    if int(a) < 100:
        raise ValueError("calibration faces must come from index 100 on (the first 100 are the validation set)")
    return names[int(a): int(b)]


def run(model: DifFace, lq: np.ndarray, batch: int, **kw) -> np.ndarray:
    """Restore (N, S, S, 3) faces in batches with seed 0 each (batch-independent); (N, S, S, 3) in [0, 1]."""
    out = []
    for i in range(0, len(lq), batch):
        x = torch.cat([image_to_tensor(a) for a in lq[i: i + batch]])
        r = model.restore(x, seeds=[SEED] * len(x), start_step=START_STEP, eta=ETA, **kw).result
        out.append(r.permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


def reference(model: DifFace, lq: np.ndarray, names: list[str], cache: Path, batch: int) -> np.ndarray:
    """The official 100-step DDIM (eta 0) results, computed once and cached under `cache`."""
    key = hashlib.sha256(json.dumps([sha256_of(model.sources["prior"]), sha256_of(model.sources["estimator"]),
                                     START_STEP, ETA, SEED, names]).encode()).hexdigest()[:16]
    path = cache / f"official100_{key}.npz"
    if path.exists():
        return np.load(path)["out"]
    out = run(model, lq, batch)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, out=out, names=np.array(names))
    tmp.replace(path)
    return out
