"""Training checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is one file `checkpoints/step_XXXXXXXX.pt` written with torch.save through a
temporary file and an atomic rename, and read back with `torch.load(weights_only=True)` (plain
tensors, numbers, strings, lists and dicts only; no pickled code). Contents:
  format, step, world_size, model, ema (or None), optimizer, scaler (GradScaler state),
  rng {torch, cuda, numpy, python}, data {position, epoch, offset, num_items, seed}, config.
`data.position` = step * global batch is the next global stream position (difface.train.data).
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMAT = "difface-train-v1"
_NAME = re.compile(r"^step_(\d{8,})\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints of a run folder, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def find_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, or the newest checkpoint of a run folder (or of its checkpoints/ folder)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        found = list_checkpoints(p) or list_checkpoints(p.parent if p.name == "checkpoints" else p)
        if found:
            return found[-1]
        raise FileNotFoundError(f"{p}: no checkpoints (step_*.pt) in this run folder")
    raise FileNotFoundError(f"{p}: checkpoint not found")


def rng_state() -> dict:
    """States of the global torch (CPU and CUDA), NumPy and Python generators."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save `state` to `path` atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint file (or a run folder's newest) with weights_only=True, on the CPU."""
    p = find_checkpoint(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - name the file and the reason
        raise ValueError(f"{p}: not a readable training checkpoint ({e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{p}: not a difface training checkpoint (format {FORMAT} expected)")
    state["path"] = str(p)
    return state


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep 0: delete none)."""
    if keep > 0:
        for p in list_checkpoints(run_dir)[:-keep]:
            p.unlink(missing_ok=True)
