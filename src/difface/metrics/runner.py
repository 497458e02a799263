"""Evaluate restored images against ground truth: pairing by name, per-image scores, means.

Each metric group is a "scorer" built once (weights loaded once) that maps a (pred, gt) pair of
(H, W, 3) float RGB [0, 1] images to a dict of scores; FID also collects features and scores the
whole set at the end. A metric whose weights or packages are missing is skipped with a one-line
reason (which file it needs and where to put it).

A pair that cannot be scored (an unreadable file, or sizes that differ where a metric compares
pixels) is listed in `EvalResult.failed` with the reason and left out of the rows and means; the
other pairs are scored as usual.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from difface.config import DEFAULT_DETECTOR
from difface.images import IMAGE_EXTENSIONS, ImageReadError, read_image
from difface.metrics import METRICS
from difface.metrics.backbones import MissingWeights
from difface.metrics.fid import (
    extract_features,
    feature_statistics,
    frechet_distance_features,
    frechet_distance_to_stats,
    load_fid_inception,
    load_statistics,
    save_statistics,
)
from difface.metrics.identity import ArcFaceONNX, DlibEmbedder, angle_degrees, cosine_similarity
from difface.metrics.lmd import detector_landmarks, lmd
from difface.metrics.lpips import load_lpips
from difface.metrics.niqe import niqe
from difface.metrics.psnr_ssim import psnr, ssim

log = logging.getLogger("difface")

# Metrics that compare pixel to pixel: the prediction and its ground truth must have one size.
SAME_SIZE = frozenset({"psnr", "ssim", "psnr_y", "ssim_y", "lpips", "lpips_vgg"})


@dataclass
class EvalOptions:
    """Settings of an evaluation. Paths of optional weights override the registry lookup."""

    crop_border: int = 0
    device: str = "cpu"
    alexnet: str | None = None
    vgg16: str | None = None
    inception: str | None = None
    arcface: str | None = None
    arcface_align: str = "ffhq"
    allow_download: bool = False
    ref_stats: str | None = None
    ref_dir: str | None = None
    landmark_detector: str = DEFAULT_DETECTOR
    batch_size: int = 8


@dataclass
class EvalResult:
    """rows: one dict per scored image (name, pred, gt, scores); means: metric -> mean over non-NaN
    values; counts: metric -> number of non-NaN values; skipped: metric -> reason; failed: pair key
    -> reason the pair was not scored (unreadable file, size mismatch)."""

    rows: list[dict] = field(default_factory=list)
    means: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class Pair:
    key: str
    pred: Path
    gt: Path | None


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in `folder`, sorted by name; raises FileNotFoundError if it is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def pair_key(stem: str, pair_regex: str | None) -> str | None:
    """The pairing key of a file stem: the stem itself, or the first non-empty group (else the whole
    match) of `re.search(pair_regex, stem)`; None when the regex does not match."""
    if not pair_regex:
        return stem
    m = re.search(pair_regex, stem)
    if m is None:
        return None
    return next((g for g in m.groups() if g), m.group(0))


def pair_files(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike | None = None,
               pair_regex: str | None = None) -> tuple[list[Pair], list[str]]:
    """Pair images of `pred_dir` with those of `gt_dir` by key (see `pair_key`).

    Returns (pairs sorted by key, warnings about unmatched or ambiguous files). Without `gt_dir`
    every prediction is returned with gt None. Predictions without a ground truth and ground
    truths without a prediction are each summed up in one warning (count and the first names).
    """
    warnings: list[str] = []

    def index(folder) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for p in list_images(folder):
            k = pair_key(p.stem, pair_regex)
            if k is None:
                warnings.append(f"{p}: name does not match --pair-regex, ignored")
            elif k in out:
                warnings.append(f"{p}: key {k!r} already used by {out[k].name}, ignored")
            else:
                out[k] = p
        return out

    preds = index(pred_dir)
    if gt_dir is None:
        return [Pair(k, p, None) for k, p in sorted(preds.items())], warnings
    gts = index(gt_dir)
    lonely_preds = [preds[k].name for k in sorted(set(preds) - set(gts))]
    lonely_gts = [gts[k].name for k in sorted(set(gts) - set(preds))]
    if lonely_preds:
        warnings.append(f"{len(lonely_preds)} prediction(s) in {pred_dir} without a ground truth in {gt_dir}, "
                        f"not scored: {name_list(lonely_preds)}")
    if lonely_gts:
        warnings.append(f"{len(lonely_gts)} ground truth(s) in {gt_dir} without a prediction in {pred_dir}: "
                        f"{name_list(lonely_gts)}")
    return [Pair(k, preds[k], gts[k]) for k in sorted(set(preds) & set(gts))], warnings


def name_list(names: list[str], limit: int = 5) -> str:
    """'a.png, b.png, c.png' - at most `limit` names, then '... and N more'."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} ... and {len(names) - limit} more"


Scorer = Callable[[np.ndarray, "np.ndarray | None"], dict[str, float]]


def _psnr_ssim_scorer(names: list[str], opts: EvalOptions) -> Scorer:
    fns = {"psnr": (psnr, False), "ssim": (ssim, False), "psnr_y": (psnr, True), "ssim_y": (ssim, True)}

    def score(pred, gt):
        return {n: fns[n][0](pred, gt, crop_border=opts.crop_border, y_channel=fns[n][1]) for n in names}

    return score


def _lpips_scorer(name: str, opts: EvalOptions) -> Scorer:
    net = "alex" if name == "lpips" else "vgg"
    model = load_lpips(net, opts.alexnet if net == "alex" else opts.vgg16, allow_download=opts.allow_download,
                       device=opts.device)

    def score(pred, gt):
        if pred.shape != gt.shape:
            raise ValueError(f"images differ in shape: {pred.shape} vs {gt.shape}")
        x, y = (torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None].float().to(opts.device)
                for a in (pred, gt))
        with torch.inference_mode():
            return {name: float(model(x, y)[0])}

    return score


def _arcface_scorer(names: list[str], opts: EvalOptions) -> Scorer:
    if not opts.arcface:
        raise MissingWeights("needs an ArcFace ONNX model (e.g. insightface w600k_r50.onnx): pass --arcface FILE")
    model = ArcFaceONNX(opts.arcface, align=opts.arcface_align)

    def score(pred, gt):
        e = model.embed([pred, gt])
        cos = cosine_similarity(e[0], e[1])
        return {n: cos if n == "ids" else angle_degrees(cos) for n in names}

    return score


def _dlib_scorer(opts: EvalOptions) -> Scorer:
    model = DlibEmbedder()
    return lambda pred, gt: {"ids_dlib": cosine_similarity(model.embed(pred), model.embed(gt))}


def _lmd_scorer(opts: EvalOptions) -> Scorer:
    detect = detector_landmarks(opts.landmark_detector, device=opts.device)
    return lambda pred, gt: {"lmd": lmd(pred, gt, detect)}


def _niqe_scorer(opts: EvalOptions) -> Scorer:
    return lambda pred, gt: {"niqe": niqe(pred, crop_border=opts.crop_border)}


def build_scorers(names: list[str], opts: EvalOptions) -> tuple[list[Scorer], dict[str, str]]:
    """Scorers for the per-image metrics among `names`, and {metric: reason} for those skipped."""
    groups: list[tuple[list[str], Callable[[], Scorer]]] = []
    ps = [n for n in names if n in ("psnr", "ssim", "psnr_y", "ssim_y")]
    if ps:
        groups.append((ps, lambda: _psnr_ssim_scorer(ps, opts)))
    for n in ("lpips", "lpips_vgg"):
        if n in names:
            groups.append(([n], lambda n=n: _lpips_scorer(n, opts)))
    arc = [n for n in names if n in ("ids", "deg")]
    if arc:
        groups.append((arc, lambda: _arcface_scorer(arc, opts)))
    single = {"ids_dlib": _dlib_scorer, "lmd": _lmd_scorer, "niqe": _niqe_scorer}
    for n, make in single.items():
        if n in names:
            groups.append(([n], lambda make=make: make(opts)))
    scorers, skipped = [], {}
    for group, make in groups:
        try:
            scorers.append(make())
        except (MissingWeights, ImportError, FileNotFoundError) as e:
            hint = {"lpips": "--alexnet", "lpips_vgg": "--vgg16"}.get(group[0])
            reason = str(e).splitlines()[0].replace("or pass its path", f"or pass {hint} FILE") if hint else str(e)
            skipped.update({n: reason.splitlines()[0] for n in group})
    return scorers, skipped


def _read(path: Path | None) -> np.ndarray | None:
    return None if path is None else read_image(path).rgb


def _size(a: np.ndarray) -> str:
    return f"{a.shape[1]}x{a.shape[0]}"


def _load_pair(pair: Pair, names: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """The pair's images; raises ValueError naming the file(s) when one is unreadable or when the
    sizes differ and a metric among `names` compares pixel to pixel."""
    pred, gt = _read(pair.pred), _read(pair.gt)
    if gt is not None and pred.shape != gt.shape:
        strict = [n for n in names if n in SAME_SIZE]
        if strict:
            raise ValueError(f"{pair.pred} ({_size(pred)}) and {pair.gt} ({_size(gt)}) differ in size; "
                             f"{', '.join(strict)} compare images of one size")
    return pred, gt


def _score_pair(scorers: list[Scorer], pred: np.ndarray, gt: np.ndarray | None, names: list[str],
                warned: set[str], where: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    for scorer in scorers:
        try:
            out.update(scorer(pred, gt))
        except ValueError as e:
            msg = str(e)
            if msg not in warned:  # e.g. "no face": named once, the table's n column counts the rest
                warned.add(msg)
                log.warning("warning: %s: %s (score set to NaN)", where, msg)
    return {n: out.get(n, float("nan")) for n in names}


def _summarise(result: EvalResult, names: list[str]) -> None:
    """Fill result.means / counts from the rows; NaN marks a failed score (no face, size mismatch)."""
    for n in names:
        vals = np.array([r[n] for r in result.rows], np.float64)
        valid = vals[~np.isnan(vals)]  # inf (PSNR of identical images) is kept
        result.means[n] = float(valid.mean()) if len(valid) else float("nan")
        result.counts[n] = int(len(valid))


def evaluate(pairs: list[Pair], names: list[str], opts: EvalOptions | None = None,
             progress: bool = True) -> EvalResult:
    """Score every pair with the metrics `names` (see difface.metrics.METRICS); see EvalResult."""
    opts = opts or EvalOptions()
    has_gt = all(p.gt is not None for p in pairs)
    result = EvalResult()
    if not has_gt:
        result.skipped.update({n: "needs ground truth: pass --gt DIR" for n in names if METRICS[n].kind == "paired"})
    per_image = [n for n in names if n not in result.skipped and METRICS[n].kind != "set"]
    scorers, skipped = build_scorers(per_image, opts)
    result.skipped.update(skipped)
    per_image = [n for n in per_image if n not in result.skipped]
    fid = _FIDSet(opts, has_gt) if "fid" in names else None
    if fid is not None and fid.error:
        result.skipped["fid"], fid = fid.error, None
    warned: set[str] = set()
    for pair in tqdm(pairs, desc="evaluate", unit="img", disable=not progress):
        try:
            pred, gt = _load_pair(pair, per_image)
        except ValueError as e:  # ImageReadError included: the pair is reported and left out
            result.failed[pair.key] = str(e)
            continue
        row = {"name": pair.key, "pred": str(pair.pred), "gt": str(pair.gt) if pair.gt else None}
        row.update(_score_pair(scorers, pred, gt, per_image, warned, pair.pred))
        if fid is not None:
            fid.add(pred, gt)
        result.rows.append(row)
    _summarise(result, per_image)
    if fid is not None:
        try:
            result.means["fid"], result.counts["fid"] = fid.finish(), len(fid.pred)
        except ValueError as e:
            result.skipped["fid"] = str(e)
    return result


class _FIDSet:
    """Collects Inception features of the predictions (and of the ground truth when it is the reference)."""

    def __init__(self, opts: EvalOptions, has_gt: bool):
        self.opts, self.error = opts, None
        self.pred: list[np.ndarray] = []
        self.gt: list[np.ndarray] = []
        self.ref: tuple[np.ndarray, np.ndarray] | None = None
        try:
            self.model = load_fid_inception(opts.inception, allow_download=opts.allow_download, device=opts.device)
            self.ref = self._reference()
        except (MissingWeights, FileNotFoundError, ValueError) as e:
            self.error = str(e).splitlines()[0].replace("or pass its path", "or pass --inception FILE")
            return
        if self.ref is None and not has_gt:
            self.error = "needs reference statistics: pass --ref-stats FILE, --ref-dir DIR or --gt DIR"
        self.use_gt = self.ref is None

    def _reference(self) -> tuple[np.ndarray, np.ndarray] | None:
        o = self.opts
        if o.ref_stats and Path(o.ref_stats).is_file():
            return load_statistics(o.ref_stats)
        if o.ref_dir:
            return reference_statistics(o.ref_dir, self.model, cache=o.ref_stats, batch_size=o.batch_size)
        if o.ref_stats:
            raise FileNotFoundError(f"{o.ref_stats}: FID statistics file not found (give --ref-dir to create it)")
        return None

    def add(self, pred: np.ndarray, gt: np.ndarray | None) -> None:
        self.pred.append(extract_features(self.model, [pred])[0])
        if self.use_gt and gt is not None:
            same = gt.shape == pred.shape and np.array_equal(gt, pred)  # e.g. a folder scored against itself
            self.gt.append(self.pred[-1] if same else extract_features(self.model, [gt])[0])

    def finish(self) -> float:
        if len(self.pred) < 2:
            raise ValueError("FID needs at least 2 images")
        if self.ref is None:
            return frechet_distance_features(np.stack(self.pred), np.stack(self.gt))
        return frechet_distance_to_stats(np.stack(self.pred), *self.ref)


def reference_statistics(ref_dir: str | os.PathLike, model, *, cache: str | os.PathLike | None = None,
                         batch_size: int = 8, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """FID (mu, sigma) of all images in `ref_dir`, saved to / reused from the .npz `cache` when given."""
    if cache is not None and Path(cache).is_file():
        return load_statistics(cache)
    files = list_images(ref_dir)
    images: Iterable[np.ndarray] = _readable(tqdm(files, desc="FID reference", disable=not progress))
    mu, sigma = feature_statistics(extract_features(model, images, batch_size=batch_size))
    if cache is not None:
        save_statistics(cache, mu, sigma, source=str(Path(ref_dir).resolve()), count=str(len(files)))
    return mu, sigma


def _readable(files: Iterable[Path]) -> Iterable[np.ndarray]:
    """The images among `files` that can be read; the others are logged by name and left out."""
    for p in files:
        try:
            yield read_image(p).rgb
        except ImageReadError as e:
            log.warning("warning: FID reference image left out: %s", e)


def format_table(result: EvalResult, names: list[str]) -> str:
    """A plain-text table: metric, mean, number of images scored, direction."""
    lines = [f"{'metric':10} {'mean':>12} {'n':>5}  better"]
    for n in names:
        if n in result.means:
            m = result.means[n]
            val = "inf" if math.isinf(m) else f"{m:.4f}"
            better = "higher" if METRICS[n].higher_is_better else "lower"
            lines.append(f"{n:10} {val:>12} {result.counts.get(n, 0):>5}  {better}")
    return "\n".join(lines)
