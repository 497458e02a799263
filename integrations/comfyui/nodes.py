"""The difface nodes of ComfyUI: load a model, restore the faces of an IMAGE batch, inpaint aligned faces.

ComfyUI's conventions, as these nodes take and give them: IMAGE is a float tensor (B, H, W, 3), RGB in [0, 1];
MASK is a float tensor (B, H, W) or (H, W) in [0, 1] (1 = the region to fill). Every option is checked by
difface's own option classes (difface.config): a bad value raises difface's OptionError, whose message names the
option ("eta: must lie in [0, 1], got 2"), before any work. The work itself is difface's in-memory pipelines
(difface.pipeline): the same code as `difface restore` and `difface inpaint`, so a node's result equals the
command's for the same options and seed, and each image draws its noise from its own generator (seeded from the
seed and the image's content), so a result does not depend on the batch it came in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from difface.config import (
    BACKEND_NAMES,
    BG_UPSAMPLERS,
    DEFAULT_BG_UPSAMPLER,
    DEFAULT_DETECTOR,
    DEFAULT_SEED,
    DEFAULT_STEPS,
    DETECTORS,
    MAX_UPSCALE,
    MODELS,
    OFFICIAL,
    SAMPLERS,
    SCHEDULES,
    InpaintOptions,
    ModelOptions,
    OptionError,
    PhotoOptions,
    RestoreOptions,
    SamplingOptions,
    ref,
)
from difface.core import DifFace
from difface.data.masks import load_mask
from difface.device import DTYPES, pick_device
from difface.images import LoadedImage
from difface.pipeline.inpaint import InpaintPipeline, black_hole_doubts, hole_size
from difface.pipeline.restoration import ImageResult, RestorePipeline

try:  # inside ComfyUI: its progress bar and its cancel button; outside it, neither (the nodes work without)
    from comfy.model_management import throw_exception_if_processing_interrupted
    from comfy.utils import ProgressBar
except ImportError:
    ProgressBar = throw_exception_if_processing_interrupted = None

log = logging.getLogger("difface")

CATEGORY = "difface"
CUSTOM = "custom (prior + estimator)"
# the named models of difface.config.MODELS (the bundled ones first: they work offline), then files or names of
# one's own
MODEL_CHOICES = (*sorted(MODELS, key=lambda name: not MODELS[name].bundled), CUSTOM)
DEFAULT_MODEL = "bundled-64"
MODEL_DEFAULT = "default"  # start_step: the model's default start (auto for the bundled model)
MODEL_ETA = -1.0  # eta: the model's default eta
MAX_SEED = 0xFFFFFFFFFFFFFFFF
PROGRESS_UNITS = 100  # progress bar units per image (whole photos advance by the share of their faces done)


@dataclass
class DifFaceModel:
    """What a DIFFACE_MODEL carries from the loader to the other nodes: the loaded networks, the model options
    they were loaded with (for the pipelines' option objects) and the device. `pipeline` keeps the last
    restoration pipeline, whose detector and background upsampler the next call reuses when it can."""

    model: DifFace
    options: ModelOptions
    device: torch.device
    pipeline: RestorePipeline | None = None

    @property
    def task(self) -> str:
        return self.model.task

    def restore_pipeline(self, options: RestoreOptions) -> RestorePipeline:
        """A restoration pipeline over these networks with `options` (OptionError as `RestorePipeline`)."""
        if self.pipeline is None:
            self.pipeline = RestorePipeline(self.model, options, self.device)
        else:  # the same networks: the detector and background upsampler are kept where their options are
            self.pipeline = self.pipeline.with_options(options)
        return self.pipeline

    def inpaint_pipeline(self, options: InpaintOptions) -> InpaintPipeline:
        """An inpainting pipeline over these networks with `options` (OptionError as `InpaintPipeline`)."""
        return InpaintPipeline(self.model, options, self.device)


# -- options: ComfyUI's widget values -> difface's option classes ----------------------------------------------
def start_step_value(text: str) -> int | str | None:
    """The start_step widget's text: "default" (or empty) -> None (the model's), "auto", or an integer; any other
    text is passed on as it is, for SamplingOptions to refuse with its message."""
    text = str(text).strip()
    if text in ("", MODEL_DEFAULT):
        return None
    try:
        return int(text)
    except ValueError:
        return text


def sampling_options(start_step: str, eta: float, sampler: str, nfe: int, seed: int,
                     schedule: str = "even") -> SamplingOptions:
    """SamplingOptions from the widgets: eta -1 = the model's, nfe 0 = the sampler's default (OptionError)."""
    return SamplingOptions(start_step=start_step_value(start_step), eta=None if eta == MODEL_ETA else eta,
                           sampler=sampler, nfe=None if nfe == 0 else nfe, seed=seed, schedule=schedule)


def _device(name: str) -> torch.device:
    try:
        return pick_device(name)
    except ValueError as e:
        raise OptionError("device", str(e).split(": ", 1)[-1]) from None


def model_options(model: str, prior: str, estimator: str, steps: str, device: str, dtype: str, backend: str,
                  fast: bool, compile: bool) -> tuple[str | None, ModelOptions]:
    """(a name of MODELS or None, ModelOptions) of the loader's widgets; OptionError for a bad value or
    combination."""
    prior, estimator = (prior or "").strip() or None, (estimator or "").strip() or None
    if model == CUSTOM:
        if prior is None and estimator is None:
            raise OptionError("prior", f"model {CUSTOM!r} loads the files (or registry names) given as "
                              f"{ref('prior')} and {ref('estimator')}: give both")
        return None, ModelOptions(prior, estimator, steps, device, dtype, fast, compile, backend)
    if model not in MODELS:
        raise OptionError("model", f"must be one of {', '.join(MODEL_CHOICES)}, got {model!r}")
    if prior is not None or estimator is not None:
        raise OptionError("prior", f"{ref('prior')} and {ref('estimator')} are read with model {CUSTOM!r} only; "
                          f"leave them empty with {model!r}")
    return model, ModelOptions(None, None, steps, device, dtype, fast, compile, backend, model=model)


# -- images: ComfyUI's tensors <-> difface's decoded images -------------------------------------------------------
def loaded_images(image: torch.Tensor) -> list[LoadedImage]:
    """An IMAGE batch (B, H, W, 3) in [0, 1] -> one LoadedImage per image (gray when R = G = B in every pixel, as
    difface reads a black-and-white file: its result is made gray too)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected an IMAGE batch of shape (B, H, W, 3), got {shape}")
    if image.shape[0] == 0:
        raise ValueError("the IMAGE batch is empty")
    out = []
    for rgb in image.detach().to("cpu", torch.float32).clamp(0, 1).numpy():
        gray = bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))
        out.append(LoadedImage(rgb=np.ascontiguousarray(rgb), alpha=None, bit_depth=8, gray=gray))
    return out


def image_batch(results: list[ImageResult]) -> torch.Tensor:
    """Results of one size -> an IMAGE batch (B, H, W, 3) float32 in [0, 1] on the CPU."""
    sizes = {r.image.shape for r in results}
    if len(sizes) > 1:
        raise ValueError(f"the results have different sizes ({', '.join(map(str, sorted(sizes)))}); an IMAGE batch "
                         "holds images of one size")
    return torch.from_numpy(np.stack([np.asarray(r.image, np.float32) for r in results])).clamp_(0, 1)


def _chunks(items: list, size: int) -> list[list]:
    return [items[k:k + size] for k in range(0, len(items), size)]


class Progress:
    """ComfyUI's progress bar over the images of one call (PROGRESS_UNITS per image; a batch advances by the share
    of its faces restored: the faces of a whole photo, the images of an aligned batch) and its cancel button
    (checked at every denoising step). Without ComfyUI, the events are still counted, and nothing is shown."""

    def __init__(self, images: int):
        self.total = images * PROGRESS_UNITS
        self.bar = ProgressBar(self.total) if ProgressBar is not None else None
        self.done, self.batch, self.faces, self.faces_done, self.value = 0, 0, 0, 0, 0

    def start(self, images: int) -> None:
        """A batch of `images` images begins."""
        self.batch, self.faces, self.faces_done = images, 0, 0

    def event(self, info: dict) -> None:
        """The `callback` of difface's in-memory pipelines (difface.pipeline.restoration: faces, face_start, step,
        face_end)."""
        kind = info.get("event")
        if kind == "step" and throw_exception_if_processing_interrupted is not None:
            throw_exception_if_processing_interrupted()
        elif kind == "faces":
            self.faces, self.faces_done = int(info.get("count", 0)), 0
        elif kind == "face_end" and self.faces:
            self.faces_done = min(self.faces_done + int(info.get("count", 0)), self.faces)
            self._show((self.done * self.faces + self.batch * self.faces_done) * PROGRESS_UNITS // self.faces)

    def finish(self) -> None:
        """The batch begun last is done."""
        self.done += self.batch
        self.start(0)
        self._show(self.done * PROGRESS_UNITS)

    def _show(self, value: int) -> None:
        value = min(value, self.total)
        if value > self.value:
            self.value = value
            if self.bar is not None:
                self.bar.update_absolute(value, self.total)


def _report(describe: str, results: list[ImageResult], aligned: bool, notes: list[str] | None = None) -> str:
    """The text output: the settings in force and, per image, its faces (whole photos), start steps and notes."""
    lines = [describe]
    for k, r in enumerate(results, 1):
        faces = "" if aligned else f"{r.faces} face(s) restored, {r.skipped} left as they were; "
        note = "".join(f"; {n}" for n in (r.message, notes[k - 1] if notes else "") if n)
        lines.append(f"image {k}: {faces}start step(s) {r.start_steps}{note}")
    return "\n".join(lines)


# -- the nodes ---------------------------------------------------------------------------------------------------
class DifFaceModelLoader:
    """Load a DifFace model once (a named model of difface, or a prior and an estimator of one's own) for the other
    nodes. The official models are downloaded into difface's weights cache on first use."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("DIFFACE_MODEL",)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    DESCRIPTION = ("Loads a DifFace model: the bundled 64 px model (offline), the official 512 px restoration or 256 "
                   "px inpainting models, or a prior and an estimator of your own.")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (list(MODEL_CHOICES), {"default": DEFAULT_MODEL}),
                "device": ("STRING", {"default": "auto", "tooltip": "auto, cpu, cuda, cuda:1, mps"}),
                "dtype": (list(DTYPES), {"default": "fp32"}),
            },
            "optional": {
                "prior": ("STRING", {"default": "", "tooltip": f"with model {CUSTOM}: a registry name or a file"}),
                "estimator": ("STRING", {"default": "", "tooltip": f"with model {CUSTOM}: a registry name or a file"}),
                "steps": ("STRING", {"default": DEFAULT_STEPS, "tooltip": "timestep respacing of the chain"}),
                "backend": (list(BACKEND_NAMES), {"default": "torch"}),
                "fast": ("BOOLEAN", {"default": False, "tooltip": "channels-last layout (torch)"}),
                "compile": ("BOOLEAN", {"default": False, "tooltip": "torch.compile (minutes the first time)"}),
            },
        }

    def load(self, model: str, device: str = "auto", dtype: str = "fp32", prior: str = "", estimator: str = "",
             steps: str = DEFAULT_STEPS, backend: str = "torch", fast: bool = False,
             compile: bool = False) -> tuple[DifFaceModel]:
        name, options = model_options(model, prior, estimator, steps, device, dtype, backend, fast, compile)
        dev = _device(options.device)
        kwargs = dict(device=dev, dtype=options.dtype, backend=options.backend, steps=options.steps,
                      channels_last=options.fast, compile=options.compile)
        if name is not None:  # the named model's weights and its own defaults
            loaded = DifFace.from_pretrained(name, **kwargs)
        else:  # the task follows the estimator's kind
            loaded = DifFace.from_pretrained(prior=options.prior, estimator=options.estimator, **kwargs)
        return (DifFaceModel(loaded, options, dev),)


def _sampling_inputs(auto: bool) -> dict:
    """The sampling widgets that restoration and inpainting share."""
    start = "default (the model's), auto (per image), or a respaced step (0: the estimator alone)" if auto else \
        "default (the model's) or a respaced step (0: the estimator alone)"
    return {
        "start_step": ("STRING", {"default": MODEL_DEFAULT, "tooltip": start}),
        "eta": ("FLOAT", {"default": MODEL_ETA, "min": MODEL_ETA, "max": 1.0, "step": 0.01,
                          "tooltip": "DDIM eta in [0, 1]; -1: the model's"}),
        "sampler": (list(SAMPLERS), {"default": OFFICIAL}),
        "nfe": ("INT", {"default": 0, "min": 0, "max": 1000,
                        "tooltip": "evaluations of a few-step sampler; 0: its default (official: leave 0)"}),
        "seed": ("INT", {"default": DEFAULT_SEED, "min": 0, "max": MAX_SEED}),
    }


class DifFaceRestore:
    """Restore the faces of an IMAGE batch: aligned face crops (FFHQ template), or whole photos (detect, align,
    restore, paste back, upscale), with the options of `difface restore`."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "report")
    FUNCTION = "restore"
    DESCRIPTION = ("Restores faces with DifFace: aligned face crops, or every face of whole photos (the photo is "
                   "kept, each face restored and pasted back).")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "image": ("IMAGE",),
                "model": ("DIFFACE_MODEL",),
                "aligned": ("BOOLEAN", {"default": False, "tooltip": "on: aligned face crops; off: whole photos"}),
                **_sampling_inputs(auto=True),
                "upscale": ("INT", {"default": 1, "min": 1, "max": MAX_UPSCALE, "tooltip": "whole photos"}),
                "detector": (list(DETECTORS), {"default": DEFAULT_DETECTOR}),
            },
            "optional": {
                "schedule": (list(SCHEDULES), {"default": "even"}),
                "bg_upsampler": (list(BG_UPSAMPLERS), {"default": DEFAULT_BG_UPSAMPLER}),
                "only_center_face": ("BOOLEAN", {"default": False}),
                "draw_boxes": ("BOOLEAN", {"default": False}),
                "max_face_size": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1e6, "step": 1.0,
                                            "tooltip": "faces larger than this (px) are left as they are; 0: none"}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "faces restored together"}),
            },
        }

    def restore(self, image: torch.Tensor, model: DifFaceModel, aligned: bool = False, start_step: str = MODEL_DEFAULT,
                eta: float = MODEL_ETA, sampler: str = OFFICIAL, nfe: int = 0, seed: int = DEFAULT_SEED,
                upscale: int = 1, detector: str = DEFAULT_DETECTOR, schedule: str = "even",
                bg_upsampler: str = DEFAULT_BG_UPSAMPLER, only_center_face: bool = False, draw_boxes: bool = False,
                max_face_size: float = 0.0, batch_size: int = 1) -> tuple[torch.Tensor, str]:
        _check_task(model, "restoration", "DifFaceRestore")
        sampling = sampling_options(start_step, eta, sampler, nfe, seed, schedule)
        photo = PhotoOptions(upscale, detector, only_center_face, bg_upsampler, draw_boxes, max_face_size)
        options = RestoreOptions(model=model.options, sampling=sampling, photo=photo, aligned=aligned,
                                 batch_size=batch_size)
        pipe = model.restore_pipeline(options)
        images = loaded_images(image)
        progress = Progress(len(images))
        results = _run_batches(images, options.batch_size if options.aligned else 1, progress,
                               lambda ims: pipe.restore_aligned(ims, progress.event) if options.aligned
                               else [pipe.restore_image(ims[0], progress.event)])
        return image_batch(results), _report(pipe.describe(), results, options.aligned)


class DifFaceInpaint:
    """Fill the missing region of aligned faces (an inpainting model: bundled-64-inpaint or official-256-inpaint),
    with the options of `difface inpaint`: a MASK (1 = missing), or without one the exactly black pixels."""

    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("image", "report")
    FUNCTION = "inpaint"
    DESCRIPTION = ("Inpaints aligned faces with DifFace: the masked region (or the exactly black pixels) is filled, "
                   "every pixel beyond the fill's soft edge kept.")

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {"image": ("IMAGE",), "model": ("DIFFACE_MODEL",), **_sampling_inputs(auto=False)},
            "optional": {
                "mask": ("MASK",),
                "schedule": (list(SCHEDULES), {"default": "even"}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "faces inpainted together"}),
            },
        }

    def inpaint(self, image: torch.Tensor, model: DifFaceModel, start_step: str = MODEL_DEFAULT,
                eta: float = MODEL_ETA, sampler: str = OFFICIAL, nfe: int = 0, seed: int = DEFAULT_SEED,
                mask: torch.Tensor | None = None, schedule: str = "even",
                batch_size: int = 1) -> tuple[torch.Tensor, str]:
        _check_task(model, "inpainting", "DifFaceInpaint")
        sampling = sampling_options(start_step, eta, sampler, nfe, seed, schedule)
        options = InpaintOptions(model=model.options, sampling=sampling, batch_size=batch_size)
        pipe = model.inpaint_pipeline(options)
        images = loaded_images(image)
        masks, holes = masks_for(images, mask)
        pairs = list(zip(images, masks))
        progress = Progress(len(images))
        results = _run_batches(pairs, options.batch_size, progress,
                               lambda ps: pipe.inpaint_images([p[0] for p in ps], [p[1] for p in ps], progress.event))
        return image_batch(results), _report(pipe.describe(), results, True, holes)


def _check_task(model: DifFaceModel, task: str, node: str) -> None:
    if not isinstance(getattr(model, "model", None), DifFace):  # not isinstance(DifFaceModel): a reloaded folder
        raise ValueError(f"{node} takes the DIFFACE_MODEL of a DifFace Model Loader, got {type(model).__name__}")
    if model.task != task:
        kind = "an inpainting model (bundled-64-inpaint, official-256-inpaint)" if task == "inpainting" else \
            "a restoration model (bundled-64, official-512)"
        raise OptionError("model", f"{model.model.name} is a {model.task} model; {node} needs {kind}")


def _run_batches(items: list, size: int, progress: Progress, run: Callable[[list], list[ImageResult]]
                 ) -> list[ImageResult]:
    """`run` over the items in batches of `size`, the progress bar advanced after each batch."""
    results: list[ImageResult] = []
    for chunk in _chunks(items, size):
        progress.start(len(chunk))
        results += run(chunk)
        progress.finish()
    return results


def masks_for(images: list[LoadedImage], mask: torch.Tensor | None) -> tuple[list[np.ndarray | None], list[str]]:
    """(one (H, W) {0, 1} mask per image, one note on its hole per image) from a MASK (B, H, W) or (H, W) (one mask
    for every image; any size, resized nearest to the image's), > 0.5 = missing; None: each image's exactly black
    pixels are its hole (black pixels that do not look like a drawn hole are warned of, as `difface inpaint` does).
    ValueError naming the image when it has no hole to fill, or nothing known."""
    if mask is None:
        notes = [_black_hole(k, im) for k, im in enumerate(images, 1)]
        return [None] * len(images), notes
    m = mask.detach().to("cpu", torch.float32)
    m = m[None] if m.ndim == 2 else m
    if m.ndim != 3 or m.shape[0] not in (1, len(images)):
        raise ValueError(f"expected a MASK of shape (B, H, W) with B = 1 or {len(images)} (the images), got "
                         f"{tuple(mask.shape)}")
    masks = [load_mask(m[k if len(m) > 1 else 0].numpy(), im.rgb.shape[:2], name=f"mask of image {k + 1}")
             for k, im in enumerate(images)]
    return masks, [f"hole: {hole_size(h > 0.5)}, from the MASK" for h in masks]


def _black_hole(k: int, image: LoadedImage) -> str:
    """The note on image k's hole of exactly black pixels; ValueError when it has none or is all black."""
    black = image.rgb.sum(axis=2) == 0
    if not black.any():
        raise ValueError(f"image {k} has no exactly black pixel, and no MASK was given: connect a MASK "
                         "(1 = missing) or black out the region to fill")
    if black.all():
        raise ValueError(f"image {k}: every pixel is missing (the image is black)")
    doubts = black_hole_doubts(black)
    if doubts:
        log.warning("warning: image %d: the hole (its exactly black pixels, as no MASK was given) is %s: %s. That "
                    "does not look like a drawn hole (black hair, clothes or background?): connect a MASK "
                    "(1 = missing) if these are not the pixels to fill", k, hole_size(black), "; ".join(doubts))
    return f"hole: {hole_size(black)}, the pixels exactly black in all channels"


NODE_CLASS_MAPPINGS = {
    "DifFaceModelLoader": DifFaceModelLoader,
    "DifFaceRestore": DifFaceRestore,
    "DifFaceInpaint": DifFaceInpaint,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DifFaceModelLoader": "DifFace Model Loader",
    "DifFaceRestore": "DifFace Restore Faces",
    "DifFaceInpaint": "DifFace Inpaint Faces",
}
