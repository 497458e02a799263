"""Whole-photo restoration: detect, align, restore the crops, upscale the background, paste back
(the official `sample_func_ir_unaligned`). The face restorer is injected, so this module knows nothing about diffusion.

Decisions (see docs/whole-photos.md): `upscale` is relative to the input as given (the official
code first enlarges inputs whose short side is < 512 and scales the output from there; we only
enlarge the detector's copy, which is what makes small faces detectable); faces are warped from
the original pixels; the output is float (rounded when written, not truncated); gray inputs give
gray outputs; very large photos are detected on a copy shrunk to `det_max_side` and refused when
the output would exceed `MAX_OUTPUT_PIXELS`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from difface.face.align import estimate_alignment, select_faces, warp_faces
from difface.face.background import (
    RealESRGANUpsampler,
    Upsampler,
    lanczos_upsampler,
    note_lanczos_fallback,
    resize_to,
    target_size,
)
from difface.face.band import coarse_correction, merge_band, resize
from difface.face.band import note as band_note
from difface.face.detect import Detections, FaceDetector, detect_faces, get_detector
from difface.face.paste import MaskFn, add_corrections, draw_crop_outlines, paste_faces
from difface.weights import local_path, resolve

log = logging.getLogger(__name__)

# Output size limit. Peak memory is about 60 bytes per output pixel (float32 canvas, background,
# blend accumulators): a 5000 x 4000 input at x2 (80 MP out) measured 4.6 GB, so 100 MP ~ 6 GB.
MAX_OUTPUT_PIXELS = 100_000_000

RestoreFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class PhotoResult:
    """Result of `restore_photo`.

    image (Hu, Wu, 3) float32 RGB in [0, 1]; alpha (Hu, Wu) float32 or None; crops and restored
    (N, S, S, 3) float32 in [0, 1]; boxes (N, 4), scores (N,), landmarks (N, 5, 2) in input pixels;
    matrices (N, 2, 3) input -> crop; bit_depth/gray describe the input; message is a
    human-readable note ("no face found", ...) or ""; skipped_large counts the detected faces left
    as they were because they exceed `max_face_side` (they are not in crops/boxes/...);
    face_crops / face_restored: each face's crop and its restoration at the face's own resolution
    (`face_views`: lists of (n_i, n_i, 3) float32 in [0, 1]), what is written to cropped_faces/ and
    restored_faces/.
    """

    image: np.ndarray
    alpha: np.ndarray | None
    crops: np.ndarray
    restored: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    matrices: np.ndarray
    upscale: float
    bit_depth: int = 8
    gray: bool = False
    message: str = ""
    skipped_large: int = 0
    face_crops: list[np.ndarray] | None = None
    face_restored: list[np.ndarray] | None = None

    @property
    def num_faces(self) -> int:
        return len(self.crops)


def as_float_image(img: np.ndarray, alpha: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None, int, bool]:
    """Normalise an input array to (rgb (H, W, 3) float32 [0, 1], alpha, bit depth, gray).

    Accepts (H, W), (H, W, 1|2|3|4) arrays of uint8, uint16 or float in [0, 1]; a 2nd/4th channel is
    alpha (an explicit `alpha` argument wins). Colour order is RGB.
    """
    a = np.asarray(img)
    depth = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(a.dtype, 32)
    x = a.astype(np.float32) / {8: 255.0, 16: 65535.0, 32: 1.0}[depth]
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4) or min(x.shape[:2]) < 1:
        raise ValueError(f"expected an (H, W), (H, W, 1..4) image, got shape {a.shape}")
    gray = x.shape[2] in (1, 2)
    if x.shape[2] in (2, 4):
        alpha = x[:, :, -1] if alpha is None else alpha
        x = x[:, :, :-1]
    rgb = np.repeat(x, 3, axis=2) if gray else x
    if alpha is not None:
        alpha = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)
        if alpha.shape != rgb.shape[:2]:
            raise ValueError(f"alpha shape {alpha.shape} does not match the image {rgb.shape[:2]}")
    return np.ascontiguousarray(np.clip(rgb, 0.0, 1.0)), alpha, depth, gray


def run_restorer(restore_faces: RestoreFn, crops: np.ndarray, batch_size: int = 16,
                 progress: bool = False) -> np.ndarray:
    """Apply the restorer to (N, S, S, 3) crops in batches; returns (N, S, S, 3) float32 in [0, 1].

    The restorer gets CPU float32 tensors (n, 3, S, S) in [0, 1] and must return the same shape.
    """
    out = np.empty_like(crops, dtype=np.float32)
    starts = range(0, len(crops), max(1, batch_size))
    for i in tqdm(starts, desc="faces", disable=not progress or len(starts) < 2, leave=False):
        x = torch.from_numpy(np.ascontiguousarray(crops[i:i + batch_size].transpose(0, 3, 1, 2)))
        y = restore_faces(x)
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(f"the face restorer returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
        out[i:i + len(x)] = y.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return out


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma replicated to 3 channels."""
    y = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(y[:, :, None], 3, axis=2)


def find_faces(rgb: np.ndarray, detector: FaceDetector | str, *, only_center_face: bool = False,
               largest_face: bool = False, min_eye_dist: float = 5.0, det_min_side: int = 640,
               det_max_side: int = 2048) -> Detections:
    """Detect faces (on a resized copy, see `detect.detection_scale`) and apply `select_faces`.

    Args: rgb (H, W, 3) float32 in [0, 1]. Returns the kept Detections in input pixels.
    """
    det = get_detector(detector) if isinstance(detector, str) else detector
    dets = detect_faces(rgb, det, min_side=det_min_side, max_side=det_max_side)
    keep = select_faces(dets.boxes, dets.landmarks, rgb.shape[:2], only_center_face=only_center_face,
                        largest_face=largest_face, min_eye_dist=min_eye_dist)
    return dets.subset(keep)


@dataclass(frozen=True)
class PhotoSettings:
    """How `restore_photo` restores a whole photo (the face layer's settings; difface.config.PhotoOptions are
    the user's, which the pipeline maps onto these).

    upscale: output / input size; only_center_face: restore only the face nearest the centre; min_eye_dist:
    faces with a smaller eye distance (input pixels) are skipped; max_face_side: so are faces whose aligned
    crop spans more input pixels (None or 0: no limit): they keep the upscaled background; draw_boxes: draw
    the faces' crop outlines; batch_size: crops per restorer call; det_max_side: photos are detected on a copy
    at most this large; progress: a progress bar over the batches.
    keep_detail (the band merge of `difface.face.band`, in photo coordinates): each face gets the
    restorer's correction of its crop, up(restored - crop) at about the face's canvas size, added to the
    upscaled background (`paste.add_corrections`) instead of the restored crop pasted whole. A face
    larger than `face_size` keeps its own detail above the restorer's band, and no face loses detail to
    the warp into the crop and back (two bilinear resamplings: with a restorer that changes nothing, a
    whole paste keeps about a third of a photo's Laplacian energy at upscale 1, the merge all of it).
    keep_detail=False: the restored crops pasted whole.
    """

    upscale: float = 2
    only_center_face: bool = False
    min_eye_dist: float = 5
    max_face_side: float | None = None
    draw_boxes: bool = False
    batch_size: int = 16
    det_max_side: int = 2048
    progress: bool = False
    keep_detail: bool = True


def restore_photo(
    rgb: np.ndarray,
    restore_faces: RestoreFn,
    *,
    detector: FaceDetector | str,
    face_size: int,
    settings: PhotoSettings | None = None,
    bg_upsampler: Upsampler | None = None,
    alpha: np.ndarray | None = None,
    mask_fn: MaskFn | None = None,
    callback: Callable[[dict], None] | None = None,
) -> PhotoResult:
    """Restore every face of a whole photo and return the photo upscaled by `settings.upscale`.

    Args: rgb (H, W), (H, W, 1..4) uint8/uint16/float [0, 1] RGB(A) image; restore_faces maps
    (n, 3, S, S) float32 [0, 1] -> same (S = face_size); detector a FaceDetector or backend name;
    settings: PhotoSettings (None: the defaults); bg_upsampler `(rgb, scale) -> rgb` (None: Lanczos); alpha:
    (H, W) float in [0, 1] (None: the image's own, if any); mask_fn optional face-parsing hook of
    `paste.paste_faces`. `message` names the faces larger than the model.
    callback: given {"event": "faces", "count": faces to restore, "skipped": faces left} before any is restored.
    Returns a PhotoResult; with no face the image is just the upscaled background and
    `message` says so.
    """
    st = settings or PhotoSettings()
    upscale, max_face_side, keep_detail, draw_boxes = st.upscale, st.max_face_side, st.keep_detail, st.draw_boxes
    img, alpha, depth, gray = as_float_image(rgb, alpha)
    h, w = img.shape[:2]
    out_hw = target_size(h, w, upscale)
    if out_hw[0] * out_hw[1] > MAX_OUTPUT_PIXELS:
        raise ValueError(f"output {out_hw[1]}x{out_hw[0]} exceeds {MAX_OUTPUT_PIXELS / 1e6:.0f} MP; "
                         "lower the upscale factor or split the photo")
    dets = find_faces(img, detector, only_center_face=st.only_center_face, min_eye_dist=st.min_eye_dist,
                      det_max_side=st.det_max_side)
    mats = estimate_alignment(np.asarray(dets.landmarks, np.float64).reshape(-1, 5, 2), face_size)
    skipped = 0
    if max_face_side and len(dets):  # decide before warping: skipped faces are never cropped
        keep = crop_sides(mats, face_size) <= max_face_side
        skipped = int((~keep).sum())
        if skipped:
            mats, dets = mats[keep], dets.subset(np.flatnonzero(keep))
    if callback is not None:
        callback({"event": "faces", "count": len(dets), "skipped": skipped})
    crops = warp_faces(img, mats, face_size)
    restored = run_restorer(restore_faces, crops, st.batch_size, st.progress)
    bg = resize_to((bg_upsampler or lanczos_upsampler)(img, upscale), out_hw)
    notes = []
    if skipped:
        notes.append(f"{skipped} face(s) larger than {max_face_side:g} px left as they were")
    if not len(dets):
        notes.append(("no face restored" if skipped else "no face found") + "; the image was only upscaled")
    sides = crop_sides(mats, face_size) if len(mats) else np.zeros(0)
    if keep_detail and len(sides):
        image = paste_corrections(bg, crops, restored, mats, face_size, upscale, mask_fn, draw_boxes)
        big = sides > face_size
        if big.any():  # say it for the faces with detail above the model's band
            px = np.round(sides[big]).astype(int)
            size = f"{px.min()}" if px.min() == px.max() else f"{px.min()}-{px.max()}"
            notes.append(band_note(size, face_size, int(big.sum())))
    else:
        image = paste_faces(bg, restored, mats, upscale, mask_fn=mask_fn, draw_boxes=draw_boxes)
    message = "; ".join(notes)
    if gray:
        image = _to_gray(image)
    views = face_views(img, crops, restored, mats, face_size, keep_detail, gray=gray)
    return PhotoResult(image, None if alpha is None else resize_to(alpha, out_hw), crops, restored, dets.boxes,
                       dets.scores, dets.landmarks, mats, float(upscale), depth, gray, message, skipped, *views)


# Largest side of a face's crop at its own resolution (`face_views`): FFHQ's own resolution. A larger face's
# crop is made at this size (about 25 MB of float32 for a crop and its restoration).
MAX_VIEW_SIDE = 1024


def view_sides(mats: np.ndarray, face_size: int, max_side: int = MAX_VIEW_SIDE) -> np.ndarray:
    """Side of each face's crop at its own resolution: the side its aligned crop spans in input pixels
    (`crop_sides`), rounded, at least `face_size` and at most max(max_side, face_size). (N, 2, 3) -> (N,) int."""
    sides = np.round(crop_sides(mats, face_size)) if len(mats) else np.zeros(0)
    return np.clip(sides, face_size, max(max_side, face_size)).astype(int)


def face_views(img: np.ndarray, crops: np.ndarray, restored: np.ndarray, mats: np.ndarray, face_size: int,
               keep_detail: bool = True, max_side: int = MAX_VIEW_SIDE, gray: bool = False
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each face's aligned crop at its own resolution (`view_sides`) and its restoration as it is pasted back.

    A face whose crop spans n > face_size input pixels is warped again at n x n (the same template, scaled),
    and its restoration is the band merge at that size, clamp(crop_n + up(restored - crop), 0, 1)
    (`band.merge_band`: the restorer's coarse band, the face's own detail above it; keep_detail=False: the
    restored crop enlarged, as it is then pasted). A face of face_size pixels or less keeps the model-size
    crop and restoration as they are. Args: img (H, W, 3) float32 in [0, 1]; crops, restored (N, S, S, 3)
    float32 in [0, 1]; mats (N, 2, 3) image -> crop of size S; gray: both as BT.601 luma (a gray photo's).
    Returns two lists of (n_i, n_i, 3) float32.
    """
    out_crops, out_restored = [], []
    for k, n in enumerate(view_sides(mats, face_size, max_side)):
        if n == face_size:
            out_crops.append(crops[k])
            out_restored.append(restored[k])
            continue
        big = warp_faces(img, scale_alignment(mats[k], n / face_size)[None], int(n))[0]
        y, x, big_t = (torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]
                       for a in (restored[k], crops[k], big))
        merged = merge_band(big_t, y, x) if keep_detail else resize(y, (int(n), int(n))).clamp(0, 1)
        out_crops.append(big)
        out_restored.append(merged[0].permute(1, 2, 0).numpy())
    if gray:
        return [_to_gray(v) for v in out_crops], [_to_gray(v) for v in out_restored]
    return out_crops, out_restored


# Largest side (canvas pixels) at which a face's coarse-band correction is enlarged before it is pasted.
MAX_CORRECTION_SIDE = 4096


def paste_corrections(bg: np.ndarray, crops: np.ndarray, restored: np.ndarray, mats: np.ndarray, face_size: int,
                       upscale: float, mask_fn: MaskFn | None, draw_boxes: bool) -> np.ndarray:
    """Add each face's coarse-band correction to the background: up(restored - crop), enlarged to about
    the face's canvas size (at least `face_size`; `band.resize`) and pasted with the matrix of that size
    (`paste.add_corrections`). Returns (Hu, Wu, 3) float32 in [0, 1]."""
    corrections, big_mats = [], []
    for k in range(len(crops)):
        side = face_size / np.sqrt(abs(np.linalg.det(mats[k][:, :2])))  # crop side in input pixels
        n = int(np.clip(round(side * upscale), face_size, MAX_CORRECTION_SIDE))
        x = [torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None] for a in (restored[k], crops[k])]
        corrections.append(coarse_correction(x[0], x[1], (n, n))[0].permute(1, 2, 0).numpy())
        big_mats.append(scale_alignment(mats[k], n / face_size))
    out = add_corrections(bg, corrections, np.stack(big_mats), upscale, mask_fn=mask_fn, mask_faces=restored)
    if draw_boxes:
        draw_crop_outlines(out, mats, face_size, upscale)
        out = np.clip(out, 0.0, 1.0)
    return out


def scale_alignment(matrix: np.ndarray, r: float) -> np.ndarray:
    """An image -> crop (2, 3) matrix for a crop r times as large (pixel centres: q' = (q + 0.5) r - 0.5)."""
    m = np.asarray(matrix, np.float64)
    return np.concatenate([m[:, :2] * r, (m[:, 2] * r + 0.5 * r - 0.5)[:, None]], axis=1)


def crop_sides(mats: np.ndarray, face_size: int) -> np.ndarray:
    """Side in input pixels of each aligned crop: (N, 2, 3) image -> crop matrices -> (N,)."""
    m = np.asarray(mats, np.float64).reshape(-1, 2, 3)
    return face_size / np.sqrt(np.abs(np.linalg.det(m[:, :, :2])))


def make_bg_upsampler(choice: str = "auto", device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32, upscale: float | None = None,
                      backend: str = "torch") -> Upsampler:
    """Background upsampler by name: "lanczos"; "realesrgan" (cached RealESRGAN_x2plus.pth, else
    WeightsUnavailable with instructions); "auto" (Real-ESRGAN when cached, else Lanczos); or a path.
    upscale: the run's scale, when known (the Real-ESRGAN suggestion is only made where it can help);
    backend: where Real-ESRGAN's network runs (torch, onnxruntime, openvino: the faces' backend)."""
    if choice == "lanczos":
        return lanczos_upsampler
    if choice == "auto":
        path = local_path("realesrgan-x2")
        if not path.is_file():
            note_lanczos_fallback(upscale)
            return lanczos_upsampler
    else:
        path = resolve("realesrgan-x2" if choice == "realesrgan" else choice, allow_download=False)
    half = dtype == torch.float16 and torch.device(device).type == "cuda"
    return RealESRGANUpsampler(path, device=device, dtype=torch.float16 if half else torch.float32, backend=backend)
