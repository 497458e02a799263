"""The inpainting pipeline: aligned faces with a missing region (and optional masks) -> filled faces.

    pipe = InpaintPipeline.load(InpaintOptions(mask="masks/"))
    result = pipe.inpaint_image(read_image("faces/a.png"), mask)       # in memory; mask (H, W), 1 = missing
    outcomes = files.run(pipe, [Path("faces/a.png")], Path("out"))    # files: difface.pipeline.files

Masks: the official convention (missing pixels exactly 0 in all three channels, found automatically)
or user masks (white = missing), one file for every input or a folder paired by file stem (an input
without a mask there follows the official convention). A mask that is unreadable, empty or covering
everything, or an input with neither a mask nor missing pixels, fails that input only.
The result keeps every known pixel of the input exactly; on a face larger than the model, the enlarged fill
is blended in over a soft edge two model pixels wide around the hole (difface.core.DifFace.inpaint), and
the known pixels beyond it are kept exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from difface.config import InpaintOptions
from difface.core import Restoration, image_seed
from difface.data.masks import load_mask
from difface.images import IMAGE_EXTENSIONS, ImageReadError, LoadedImage, image_to_tensor, tensor_to_image
from difface.pipeline.restoration import FacePipeline, ImageResult, NonFiniteResult, Progress, _steps, _tell, _to_gray

log = logging.getLogger("difface")

# When the hole is found from black pixels (no --mask), it is questioned (a warning; the run goes on) when
# it is tiny: under TINY_SHARE of the face (the training masks of difface.data.masks never cover less:
# 2.2 % at the least over 300 seeds of each kind at 64x64); scattered: its largest 8-connected piece holds
# under half of it, or it has more than MAX_PIECES pieces; or on the border: none of it in the middle half of
# the aligned face (where eyes, nose and mouth are), unless it is whole rows and columns along the sides
# (outpainting's holes).
TINY_SHARE, MAX_PIECES = 0.02, 20


def hole_size(hole: np.ndarray) -> str:
    """'N pixel(s) (P % of the face)' for an (H, W) hole mask (nonzero = missing)."""
    n = int(np.count_nonzero(hole))
    return f"{n} pixel(s) ({100.0 * n / hole.size:.1f} % of the face)"


def black_hole_doubts(hole: np.ndarray) -> list[str]:
    """Why black pixels taken as the hole (an (H, W) mask, nonzero = missing) may not be a drawn hole:
    tiny, scattered, on the border (module constants); [] when it looks like one."""
    import cv2

    m = (np.asarray(hole) > 0).astype(np.uint8)
    n, (h, w) = int(m.sum()), m.shape
    if n == 0:
        return []
    count, _, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    doubts = []
    if n < TINY_SHARE * m.size:
        doubts.append(f"tiny (under {100 * TINY_SHARE:g} % of the face)")
    if count - 1 > MAX_PIECES or areas.max() < 0.5 * n:
        doubts.append(f"scattered ({count - 1} separate pieces, the largest {int(areas.max())} pixel(s))")
    middle = m[h // 4: h - h // 4, w // 4: w - w // 4].any()
    sides = m.all(axis=1)[:, None] | m.all(axis=0)[None, :]  # pixels of whole black rows or columns
    if not middle and (m & ~sides).any():
        ys, xs = np.nonzero(m)
        doubts.append(f"on the border (rows {ys.min()}-{ys.max()}, columns {xs.min()}-{xs.max()}: none of it in "
                      "the middle of the face)")
    return doubts


def _mask_array(mask: np.ndarray | torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """An in-memory mask as (H, W) float32 {0, 1} (1 = missing: values above 0.5); ValueError unless its size
    is the image's `hw`."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    m = m.reshape(m.shape[-2:]) if m.ndim == 3 and m.shape[0] == 1 else m
    if m.shape != tuple(hw):
        raise ValueError(f"the mask is {'x'.join(map(str, m.shape))}, the image {hw[0]}x{hw[1]}: give an (H, W) "
                         "mask of the image's size")
    return np.ascontiguousarray(m.astype(np.float32) > 0.5, np.float32)


class MaskError(ImageReadError):
    """The mask of an input is missing, unreadable or unusable; the message names the files."""


class InpaintPipeline(FacePipeline):
    """Inpainting of aligned faces (options: InpaintOptions); see the module docstring."""

    task = "inpainting"
    aligned = True
    options: InpaintOptions

    def mask_for(self, src: Path, hw: tuple[int, int]) -> np.ndarray | None:
        """The (H, W) {0, 1} mask of input `src` (None: found from the input's zero pixels)."""
        m = self.options.mask
        if m is None:
            return None
        path = Path(m)
        if path.is_dir():
            found = [p for p in sorted(path.iterdir()) if p.stem == src.stem and p.suffix.lower() in IMAGE_EXTENSIONS]
            if not found:  # this input follows the official convention (exact zeros), if it has any
                return None
            path = found[0]
        try:
            return load_mask(path, hw)
        except ValueError as e:  # unreadable, all known or all missing: named by load_mask
            raise MaskError(f"{src}: mask {e}") from None

    def inpaint_faces(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                      callback: Progress | None = None) -> Restoration:
        """Inpaint aligned faces x (n, 3, H, W) in [0, 1]; mask (n, 1, H, W) or None (zeros convention).
        callback: the events of `RestorePipeline.restore_faces` (face_start, step, face_end)."""
        s = self.options.sampling
        seeds = [image_seed(s.seed, im) for im in x]
        _tell(callback, "face_start", count=len(x))
        out = self.model.inpaint(x, mask, self.plan, seeds=seeds, dtype=self.dtype, callback=_steps(callback))
        if not (torch.isfinite(out.result).all() and torch.isfinite(out.estimate).all()):
            raise NonFiniteResult("the networks produced non-finite values (NaN or inf); nothing was written")
        self._note_start_steps(x, out)
        _tell(callback, "face_end", count=len(x))
        return out

    def inpaint_image(self, image: LoadedImage, mask: np.ndarray | torch.Tensor | None = None,
                      callback: Progress | None = None) -> ImageResult:
        """One decoded image (any size) with an optional mask in memory: (H, W) (or (1, H, W)), a numpy array or
        a tensor, bool or float, nonzero above 0.5 = missing; None: the zeros convention."""
        return self.inpaint_images([image], [mask], callback)[0]

    def inpaint_images(self, images: list[LoadedImage], masks: list[np.ndarray | torch.Tensor | None],
                       callback: Progress | None = None) -> list[ImageResult]:
        """Decoded images with their masks in memory (as `inpaint_image`; None: zeros convention); images of one
        size and mask kind run as one batch (a result never depends on the batch). callback: {"event": "faces",
        "count": len(images)}, then the events of `inpaint_faces` per batch."""
        masks = [None if m is None else _mask_array(m, im.rgb.shape[:2]) for im, m in zip(images, masks)]
        _tell(callback, "faces", count=len(images))
        results: list[ImageResult | None] = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for k, (im, m) in enumerate(zip(images, masks)):
            groups.setdefault((im.rgb.shape, m is None), []).append(k)
        for (_, zeros), idx in groups.items():
            x = torch.cat([image_to_tensor(images[k].rgb) for k in idx])
            m = None if zeros else torch.stack([torch.from_numpy(np.ascontiguousarray(masks[k], np.float32))[None]
                                                for k in idx])
            out = self.inpaint_faces(x, m, callback)
            for j, k in enumerate(idx):
                res, est = tensor_to_image(out.result[j:j + 1]), tensor_to_image(out.estimate[j:j + 1])
                if images[k].gray:
                    res, est = _to_gray(res), _to_gray(est)
                shown = None if masks[k] is None else images[k].rgb * (1 - masks[k][:, :, None])
                results[k] = ImageResult(res, images[k].alpha, estimate=est, faces=1,
                                         start_steps=out.start_steps[j:j + 1], shown_input=shown)
        return results  # type: ignore[return-value]
