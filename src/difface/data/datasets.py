"""Torch datasets for training and evaluation.

Every item is built from the file list sorted by path, so index i means the same file on every
machine. Tensors are (3, H, W) float32 RGB; the value range is chosen with `value_range`
(lo, hi): pixel p in [0, 1] becomes lo + (hi - lo) * p, e.g. (-1, 1) for the diffusion prior and
(0, 1) (the default of the paired sets) for the SwinIR estimator.

Randomness (flips, degradations) comes from `np.random.default_rng([seed, epoch, index])`, so an
item depends only on (seed, epoch, index), never on worker count, worker order or batch layout.
Call `set_epoch(e)` before creating the DataLoader iterator for epoch e (workers copy the dataset
when the iterator starts; with persistent_workers the epoch is frozen, so avoid that or pass the
epoch in the index stream yourself via `item(index, epoch)`).

Unreadable images never end a run: the file is logged (warning naming it and the reason),
counted in `num_failed` / listed in `failed` (per process: DataLoader workers keep their own
counts) and the next good index is returned instead. NoReadableImages (a RuntimeError naming the
folder) is raised only when no file in the set can be read; `check_readable()` finds that out
before a training run builds its network (it normally reads one file). The messages that libpng /
libjpeg print for broken files are captured and reported with the file name (difface.images.read_image).

Public API: ImageFolder, PairedFolder, SyntheticPairs, MaskedFaces, list_images, resize_square, item_rng.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from difface.data.degrade import DEGRADATIONS, DegradationConfig, degrade_with_params, to_gray
from difface.data.masks import MASK_KINDS, make_mask
from difface.images import IMAGE_EXTENSIONS, ImageReadError, image_to_tensor, read_image

log = logging.getLogger(__name__)


def list_images(root: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Sorted image files (IMAGE_EXTENSIONS, case-insensitive) under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    it = root.rglob("*") if recursive else root.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def resize_square(img: np.ndarray, size: int) -> np.ndarray:
    """Scale the shorter side to `size` and centre-crop to (size, size, 3).

    INTER_AREA when shrinking, INTER_LINEAR when enlarging; the input is returned unchanged when
    it already has that shape. Args/Returns: float32 (H, W, 3) in [0, 1].
    """
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    f = size / min(h, w)
    nh, nw = max(size, round(h * f)), max(size, round(w * f))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    img = cv2.resize(img, (nw, nh), interpolation=interp)
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The Generator of one item: default_rng([seed, epoch, index]) (all >= 0)."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class NoReadableImages(RuntimeError):
    """None of the files of a data set can be read; the message names the folder and a first reason."""


class _RobustDataset(Dataset):
    """Shared skip-bad-files logic; subclasses implement `_load(index, epoch)` and may set `root`
    (the folder named in messages) before calling `__init__`."""

    root: str = ""

    def __init__(self, n: int, value_range: tuple[float, float], seed: int) -> None:
        if n == 0:
            raise ValueError(f"{self._where()}: no images found")
        self._n, self.value_range, self.seed, self.epoch = n, value_range, int(seed), 0
        self.failed: dict[int, str] = {}  # index -> reason

    @property
    def num_failed(self) -> int:
        return len(self.failed)

    def _where(self) -> str:
        return self.root or type(self).__name__

    def check_readable(self) -> None:
        """Raise NoReadableImages unless some file can be read (reads until one succeeds, normally
        just the first; the unreadable ones met on the way are recorded as during training)."""
        self.item(0, self.epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._n

    def _to_tensor(self, rgb: np.ndarray) -> torch.Tensor:
        lo, hi = self.value_range
        return image_to_tensor(rgb)[0] * (hi - lo) + lo

    def item(self, index: int, epoch: int | None = None):
        """The item at `index` (or the next readable one) for `epoch` (default: self.epoch)."""
        epoch = self.epoch if epoch is None else epoch
        for k in range(self._n):
            i = (index + k) % self._n
            if i in self.failed:
                continue
            try:
                return self._load(i, epoch)
            except (ImageReadError, ValueError, cv2.error) as e:
                self.failed[i] = str(e)
                log.warning("skipping unreadable image (%d so far): %s", self.num_failed, e)
        first = self.failed[min(self.failed)] if self.failed else "no reason given"
        raise NoReadableImages(f"{self._where()}: none of the {self._n} images could be read (first: {first})")

    def __getitem__(self, index: int):
        return self.item(index)

    def _load(self, index: int, epoch: int):
        raise NotImplementedError


def _read(path: Path, size: int | None) -> np.ndarray:
    rgb = read_image(path).rgb
    return rgb if size is None else resize_square(rgb, size)


class ImageFolder(_RobustDataset):
    """High-quality images of a folder, for the diffusion prior.

    Args: root folder; size: resize_square to (size, size) (None: keep, then all images must share
    a size to be batched); recursive; flip: random horizontal flip with p 0.5 (per-item rng;
    off in the official prior training); value_range (default (-1, 1)); seed.
    Item: (3, H, W) float32 tensor in value_range.
    """

    def __init__(self, root: str | os.PathLike, size: int | None = None, recursive: bool = True,
                 flip: bool = False, value_range: tuple[float, float] = (-1.0, 1.0), seed: int = 0) -> None:
        self.files = list_images(root, recursive)
        self.root, self.size, self.flip = str(root), size, flip
        super().__init__(len(self.files), value_range, seed)

    def _load(self, index: int, epoch: int) -> torch.Tensor:
        rgb = _read(self.files[index], self.size)
        if self.flip and item_rng(self.seed, epoch, index).random() < 0.5:
            rgb = np.ascontiguousarray(rgb[:, ::-1])
        return self._to_tensor(rgb)


class PairedFolder(_RobustDataset):
    """Pairs lq_dir/<stem>.* with hq_dir/<stem>.* (matched by file stem), for evaluation.

    Files present on one side only are logged and left out; duplicate stems in one folder raise
    ValueError. Item: {"lq": (3, h, w), "gt": (3, H, W), "name": stem}, tensors in value_range
    (default (0, 1)); `size` resizes both sides with resize_square (None: sizes as stored).
    """

    def __init__(self, lq_dir: str | os.PathLike, hq_dir: str | os.PathLike, size: int | None = None,
                 recursive: bool = False, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        self.root = f"{lq_dir} and {hq_dir}"
        lq, hq = _by_stem(lq_dir, recursive), _by_stem(hq_dir, recursive)
        names = sorted(lq.keys() & hq.keys())
        unmatched = sorted(lq.keys() ^ hq.keys())
        if unmatched:
            log.warning("%d file(s) without a partner left out, e.g. %s", len(unmatched), unmatched[:3])
        self.names, self.size = names, size
        self.pairs = [(lq[n], hq[n]) for n in names]
        super().__init__(len(names), value_range, 0)

    def _load(self, index: int, epoch: int) -> dict:
        lq_path, hq_path = self.pairs[index]
        return {"lq": self._to_tensor(_read(lq_path, self.size)),
                "gt": self._to_tensor(_read(hq_path, self.size)), "name": self.names[index]}


def _by_stem(folder: str | os.PathLike, recursive: bool) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in list_images(folder, recursive):
        if p.stem in out:
            raise ValueError(f"{folder}: two files share the name {p.stem!r}: {out[p.stem]} and {p}")
        out[p.stem] = p
    return out


class SyntheticPairs(_RobustDataset):
    """On-the-fly (lq, gt) pairs from high-quality images, for the diffused estimator (the official 'gfpgan' pipeline).

    Per item, with item_rng(seed, epoch, index): horizontal flip (p 0.5, when flip), then
    degrade_with_params(gt, cfg, rng); when the draw says gray, gt is grayed too (as GFPGAN).
    Args: folder; cfg (default DEGRADATIONS["gfpgan"]), applied as cfg.for_resolution(size); seed;
    size: gt side after resize_square (default cfg.resolution); flip; recursive; value_range
    (default (0, 1), as the official estimator training).
    Item: {"lq": (3, size, size), "gt": (3, size, size)} float32 tensors; lq on the 1/255 grid.
    """

    def __init__(self, folder: str | os.PathLike, cfg: DegradationConfig = DEGRADATIONS["gfpgan"],
                 seed: int = 0, size: int | None = None, flip: bool = True, recursive: bool = True,
                 value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        self.files = list_images(folder, recursive)
        self.root, self.size = str(folder), int(size or cfg.resolution)
        self.cfg, self.flip = cfg.for_resolution(self.size), flip
        super().__init__(len(self.files), value_range, seed)

    def _load(self, index: int, epoch: int) -> dict:
        gt = _read(self.files[index], self.size)
        rng = item_rng(self.seed, epoch, index)
        if self.flip and rng.random() < 0.5:
            gt = np.ascontiguousarray(gt[:, ::-1])
        lq, params = degrade_with_params(gt, self.cfg, rng)
        if params.gray:
            gt = to_gray(gt)
        return {"lq": self._to_tensor(lq), "gt": self._to_tensor(gt)}


class MaskedFaces(_RobustDataset):
    """On-the-fly masked faces for the inpainting estimator (as the official LaMa trainer).

    Per item, with item_rng(seed, epoch, index): horizontal flip (p 0.5, when flip), then a mask
    from difface.data.masks.make_mask(mask_kind, rng, size) (official: "mixed"), and the official
    input convention lq = gt * (1 - mask) (holes exactly 0 in every channel).
    Args: folder; size: side after resize_square; seed; mask_kind; flip; recursive; value_range of
    gt and lq (default (0, 1), as the official inpainter training).
    Item: {"lq": (3, S, S), "gt": (3, S, S), "mask": (1, S, S)} float32 tensors, mask 1 = missing.
    """

    def __init__(self, folder: str | os.PathLike, size: int = 256, seed: int = 0, mask_kind: str = "mixed",
                 flip: bool = False, recursive: bool = True, value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        if mask_kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {mask_kind!r}; known: {', '.join(MASK_KINDS)}")
        self.files = list_images(folder, recursive)
        self.root, self.size, self.mask_kind, self.flip = str(folder), int(size), mask_kind, flip
        super().__init__(len(self.files), value_range, seed)

    def _load(self, index: int, epoch: int) -> dict:
        gt = _read(self.files[index], self.size)
        rng = item_rng(self.seed, epoch, index)
        if self.flip and rng.random() < 0.5:
            gt = np.ascontiguousarray(gt[:, ::-1])
        mask = torch.from_numpy(make_mask(self.mask_kind, rng, self.size))[None]
        gt_t = self._to_tensor(gt)
        return {"lq": gt_t * (1 - mask), "gt": gt_t, "mask": mask}
