"""The restoration pipeline, in memory: options -> model -> images or faces restored -> results.

    pipe = RestorePipeline.load(RestoreOptions(aligned=True))      # validates, loads, checks vs. model
    result = pipe.restore_image(read_image("photo.jpg"))           # in memory (app, video, API)
    outcomes = files.run(pipe, [Path("faces/a.png")], Path("out"))  # files: difface.pipeline.files

What a user can count on: every option is checked before any work; a non-finite result raises
NonFiniteResult (nothing is written for it); a result depends only on the input, the options and the
seed (not on batching, order or sharding). Reading, writing and the file loop are
difface.pipeline.files; the video job is difface.pipeline.video.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from difface import fastplan
from difface.autostart import AutoStart, steps_for_error
from difface.config import OptionError, RestoreOptions
from difface.core import DifFace, Restoration, image_seed
from difface.device import DTYPES, cpu_has_native_bf16, pick_device
from difface.face import band
from difface.face.detect import get_detector
from difface.face.photo import MAX_OUTPUT_PIXELS, PhotoSettings, crop_sides, make_bg_upsampler, restore_photo
from difface.images import LoadedImage, image_to_tensor, tensor_to_image
from difface.plan import SamplingPlan

log = logging.getLogger("difface")

Progress = Callable[[dict], None]

# "Far above" auto (the one-time warning of FacePipeline._note_start_steps): a fixed start whose t is at
# least twice the t auto chooses for the run's most damaged face, plus 40 (10 steps of ddim250).
FAR_ABOVE_FACTOR, FAR_ABOVE_MARGIN_T = 2, 40


class NonFiniteResult(RuntimeError):
    """The networks produced NaN or infinite values; nothing is written for that input."""


@dataclass
class ImageResult:
    """The restoration of one image, in memory.

    image (H', W', 3) float32 RGB in [0, 1] at the output size; alpha (H', W') or None; estimate (the
    estimator's output, aligned faces only) or None; crops / restored (N, S, S, 3) for whole photos;
    faces restored; skipped (faces left as they were); message: a note for the user or "";
    start_steps: the start step used per face; changes: per face, the mean absolute change the model made, in
    gray levels of 255 (its output against its input, both at the model size); face_sides: per face, its side in
    input pixels (an aligned input: its shorter side; a photo: the side of its aligned crop).
    """

    image: np.ndarray
    alpha: np.ndarray | None = None
    estimate: np.ndarray | None = None
    crops: np.ndarray | None = None
    restored: np.ndarray | None = None
    faces: int = 0
    skipped: int = 0
    message: str = ""
    start_steps: list[int] = field(default_factory=list)
    shown_input: np.ndarray | None = None  # what comparisons show as the input (inpainting: with the hole)
    face_crops: list[np.ndarray] | None = None  # whole photos: crops at each face's own resolution ...
    face_restored: list[np.ndarray] | None = None  # ... and their restorations as pasted (face.photo.face_views)
    changes: list[float] = field(default_factory=list)
    face_sides: list[float] = field(default_factory=list)


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma replicated to 3 channels: gray inputs give gray outputs."""
    y = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(y[:, :, None], 3, axis=2)


def _tell(callback: Progress | None, event: str, **info) -> None:
    """Report one event to a `callback` of the in-memory methods (how a front end shows progress without
    subclassing a pipeline): a dict with "event": "faces" ({"count"}: the faces of an image, once known),
    "face_start" / "face_end" ({"count"}: a batch of faces begins / is done), or "step" (one denoising step:
    the sampler's dict, {"i", "x", "pred", "sample", ...})."""
    if callback is not None:
        callback({"event": event, **info})


def _steps(callback: Progress | None) -> Callable[[dict], None] | None:
    """The sampler's per-step callback that forwards each step to `callback` as a "step" event."""
    return None if callback is None else (lambda info: callback({"event": "step", **info}))


class FacePipeline:
    """What restoration and inpainting share: a loaded model and the sampling settings in force (the model's
    defaults filled in: `start_step`, `eta`), in memory; files are difface.pipeline.files.

    Subclasses set `task`; `options` has .model, .sampling, .batch_size, .save_comparison and .max_pixels.
    """

    task = "restoration"
    aligned = True

    def __init__(self, model: DifFace, options, device: torch.device | None = None):
        if model.task != self.task:
            raise OptionError("estimator", f"this is a {model.task} model ({model.name}); "
                              f"{type(self).__name__} needs a {self.task} estimator")
        self.model, self.options = model, options
        self.device = device or model.device
        self.dtype = DTYPES[options.model.dtype]
        self.plan = SamplingPlan.from_options(model, options.sampling)  # settled once: start, eta, sampler, nfe
        self.eta, self.start_step = self.plan.eta, self.plan.start
        self._said: set[str] = set()  # the run's one-time notices already logged (_note_start_steps)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def load(cls, options, device: torch.device | None = None):
        """Pick the device, load the networks and check the options against them.

        Raises OptionError (bad option for this model or machine) or ValueError/FileNotFoundError
        naming the weights file that cannot be used."""
        m = options.model
        dev = device if device is not None else _device(m.device)
        if m.dtype == "fp16" and dev.type == "cpu":
            log.warning("warning: `dtype` fp16 on a CPU is emulated and about 90x slower than fp32; use fp32 or "
                        "bf16 on a CPU (fp16 is for GPUs)")
        if m.dtype == "bf16" and dev.type == "cpu" and cpu_has_native_bf16() is False:
            log.warning("warning: `dtype` bf16: this CPU has no bf16 instructions (AVX512_BF16 / AMX), so bf16 is "
                        "emulated and about 10x slower than fp32 here; use fp32 (and `fast`) on this machine")
        model = DifFace.from_pretrained(m.model, prior=m.prior, estimator=m.estimator, task=cls.task, device=dev,
                                        dtype=m.dtype, backend=m.backend, steps=m.steps, channels_last=m.fast,
                                        compile=m.compile)
        pipe = cls(model, options, dev)
        if pipe._measured():  # the fast preset's choice needs the model: said once it is loaded
            log.info("preset fast: %s", fastplan.describe(model, pipe.start_step, pipe.eta, fixed=pipe.plan.fixed))
        return pipe

    def _measured(self) -> bool:
        """Whether the few-step setting follows difface.fastplan (the fast preset without explicit sampling)."""
        return self.plan.sampler != "official" and self.plan.schedule == "fast"

    def describe(self) -> str:
        """One line for the log: model, size, precision, device and the sampling settings in force."""
        m, p = self.model, self.plan
        if self.start_step == "auto":
            start = "start step auto (per image)"
        else:
            t = int(m.diffusion.timestep_map[self.start_step]) if self.start_step else 0
            start = f"start step {self.start_step} of {self.options.model.steps} (t = {t} of 1000)"
        if isinstance(p.strength, (int, float)):
            start = f"strength {p.strength:g}: {start}"
        sampler = "" if p.sampler == "official" else f", sampler {p.sampler} with {p.nfe} evaluations"
        if sampler and self._measured():
            sampler = ", " + fastplan.describe(m, self.start_step, self.eta, with_eta=False, fixed=p.fixed)
        elif sampler and p.schedule in ("fitted", "fitted-or-official"):
            sampler += " (fitted schedule where stored for the start; otherwise the official loop)"
        backend = getattr(self.options.model, "backend", "torch")
        on = f" on {self.device}" if backend == "torch" else f" through {m.prior.extra_repr()}"
        return (f"model: {m.name} at {m.image_size}x{m.image_size}, {self.options.model.dtype}{on}, "
                f"{start}, eta {self.eta:g}{sampler}")

    def new_run(self) -> None:
        """Start a run (difface.pipeline.files.run): its one-time notices are said again, once."""
        self._said = set()

    # -- restoring tensors and images ------------------------------------------------------------------
    def restore_faces(self, x: torch.Tensor, callback: Progress | None = None) -> Restoration:
        """Restore aligned faces x (n, 3, S, S) in [0, 1] (S: the model size); each face draws its noise
        from image_seed(seed, face). Raises NonFiniteResult when the output is not finite.

        callback (see `Progress`): {"event": "face_start", "count": n}, one {"event": "step", ...} per denoising
        step, {"event": "face_end", "count": n}."""
        s = self.options.sampling
        seeds = [image_seed(s.seed, im) for im in x]
        _tell(callback, "face_start", count=len(x))
        out = self.model.restore(x, self.plan, seeds=seeds, dtype=self.dtype, callback=_steps(callback))
        if not (torch.isfinite(out.result).all() and torch.isfinite(out.estimate).all()):
            raise NonFiniteResult("the networks produced non-finite values (NaN or inf); nothing was written")
        self._note_start_steps(x, out)
        _tell(callback, "face_end", count=len(x))
        return out

    def _note_start_steps(self, x: torch.Tensor, out: Restoration) -> None:
        """Say once per run (not per face) when the sampling settings do not do what they seem to:
        --sampler/--nfe on a face whose start step is 0, or a fixed --start-step far above what the
        model's calibrated auto rule chooses. x: the faces (n, 3, S, S) in [0, 1] at the model size."""
        s, steps = self.options.sampling, out.start_steps or []
        if s.sampler != "official" and "sampler" not in self._said and 0 in steps:
            self._said.add("sampler")
            given = f"`sampler` {s.sampler}" + (f" `nfe` {s.nfe}" if s.nfe is not None else "")
            if self.start_step == "auto":
                log.warning("warning: %s does nothing for a face whose start step is 0: its result is the "
                            "estimator's output, with no diffusion to sample (start step auto chose 0 for %d of "
                            "these %d face(s); said once per run, the notes give every face's step)", given,
                            steps.count(0), len(steps))
            else:
                log.warning("warning: %s does nothing with `start_step` 0: every result is the estimator's "
                            "output, with no diffusion to sample", given)
        if self.start_step == "auto" or not self.start_step or "far" in self._said or self.task != "restoration":
            return
        if getattr(s, "strength", None) is not None:  # a strength asks for change knowingly; the summary says how much
            return
        m = self.model
        if m.autostart == AutoStart() or tuple(x.shape[2:]) != (m.image_size, m.image_size):
            return  # no calibrated rule to compare with
        chosen = max(m.auto_start_steps(x.to(out.estimate.device), out.estimate))
        top = steps_for_error(m.diffusion, np.array([np.inf]), m.autostart, m.t_max)[0]  # the rule's ceiling
        t_of = m.diffusion.timestep_map
        n = int(self.start_step)
        if int(t_of[n]) >= FAR_ABOVE_FACTOR * int(t_of[chosen]) + FAR_ABOVE_MARGIN_T or n > top:
            self._said.add("far")
            log.warning("warning: `start_step` %d (t = %d) is far above what this model's auto rule chooses: %d "
                        "(t = %d) for the most damaged of these %d face(s), and at most %d (t = %d) for any face; "
                        "diffusing from this high replaces more of a face than its damage calls for. "
                        "`start_step` auto chooses per face (said once per run)", n, int(t_of[n]), chosen,
                        int(t_of[chosen]), len(x), top, int(t_of[top]))


class RestorePipeline(FacePipeline):
    """Restoration of aligned faces or whole photos (options: RestoreOptions); see the module docstring.

    max_face_size: the face-size limit of whole photos and videos in force (0: none, the default).
    """

    task = "restoration"

    def __init__(self, model: DifFace, options: RestoreOptions, device: torch.device | None = None, *,
                 detector=None, bg_upsampler=None):
        super().__init__(model, options, device)
        self.aligned = options.aligned
        mfs = options.photo.max_face_size
        # Photos and videos: no limit by default (the band merge keeps a large face's own detail)
        self.max_face_size = 0.0 if mfs is None else mfs
        self._detector, self._bg = detector, bg_upsampler

    def with_options(self, options: RestoreOptions) -> RestorePipeline:
        """The same loaded networks (and detector / background upsampler, when those options are unchanged)
        with other options: how an app serves many requests with one model. OptionError as `load`."""
        a, b = options.model, self.options.model
        for name in ("model", "prior", "estimator", "steps", "device", "fast", "compile"):
            if getattr(a, name) != getattr(b, name):
                raise OptionError(f"--{name}", "another model or device needs a new pipeline (RestorePipeline.load)")
        same = options.photo.detector == self.options.photo.detector and \
            options.photo.bg_upsampler == self.options.photo.bg_upsampler
        return RestorePipeline(self.model, options, self.device, detector=self._detector if same else None,
                               bg_upsampler=self._bg if same else None)

    @classmethod
    def load(cls, options: RestoreOptions, device: torch.device | None = None) -> RestorePipeline:
        pipe = super().load(options, device)
        if not options.aligned:
            pipe._photo_parts()
        return pipe

    def _photo_parts(self):
        """Detector and background upsampler of whole photos, built once."""
        if self._detector is None:
            p = self.options.photo
            try:
                self._detector = get_detector(p.detector, device=str(self.device))
            except (ImportError, FileNotFoundError, ValueError, RuntimeError) as e:
                raise OptionError("detector", str(e)) from None
            try:
                self._bg = make_bg_upsampler(p.bg_upsampler, self.device, self.dtype, upscale=p.upscale,
                                             backend=self.options.model.backend)
            except (FileNotFoundError, ValueError, RuntimeError) as e:
                raise OptionError("bg_upsampler", str(e)) from None
        return self._detector, self._bg

    def restore_image(self, image: LoadedImage, callback: Progress | None = None) -> ImageResult:
        """Restore one decoded image: an aligned face, or a whole photo (detect, restore, paste back).

        callback (see `Progress`): {"event": "faces", "count": n} once the faces are known, then the events
        of `restore_faces` for each batch of faces."""
        if self.options.aligned:
            return self.restore_aligned([image], callback)[0]
        return self._restore_photo(image, callback)

    def restore_aligned(self, images: Sequence[LoadedImage], callback: Progress | None = None) -> list[ImageResult]:
        """Aligned faces of any size, restored together (each resized to the model size on its own)."""
        s = self.model.image_size
        x = torch.cat([_resize(image_to_tensor(im.rgb), (s, s)) for im in images])
        _tell(callback, "faces", count=len(images))
        out = self.restore_faces(x, callback)
        changes = (out.result.detach().float().cpu().clamp(0, 1) - x.float()).abs().mean(dim=(1, 2, 3)) * 255.0
        results = []
        for k, im in enumerate(images):
            h, w = im.rgb.shape[:2]
            if band.applies((h, w), s):  # larger than the model: keep the input's detail above its band
                full, seen = image_to_tensor(im.rgb), x[k: k + 1]
                res = tensor_to_image(band.merge_band(full, out.result[k: k + 1], seen))
                est = tensor_to_image(band.merge_band(full, out.estimate[k: k + 1], seen))
                self._note_band(f"{w}x{h}" if w != h else h)
            else:
                res = tensor_to_image(_resize(out.result[k: k + 1], (h, w), clamp=True))
                est = tensor_to_image(_resize(out.estimate[k: k + 1], (h, w), clamp=True))
            if im.gray:
                res, est = _to_gray(res), _to_gray(est)
            results.append(ImageResult(res, im.alpha, estimate=est, faces=1, start_steps=out.start_steps[k:k + 1],
                                       changes=[float(changes[k])], face_sides=[float(min(h, w))]))
        return results

    def _note_band(self, face_px: int | str) -> None:
        """Log the band merge once per face size and pipeline (not once per face)."""
        seen = self.__dict__.setdefault("_band_sizes", set())
        if face_px not in seen:
            seen.add(face_px)
            log.info("%s", band.note(face_px, self.model.image_size))

    def _restore_photo(self, image: LoadedImage, callback: Progress | None = None) -> ImageResult:
        detector, bg = self._photo_parts()
        p = self.options.photo
        h, w = image.rgb.shape[:2]
        if h * w * p.upscale**2 > MAX_OUTPUT_PIXELS:
            raise ValueError(_output_too_large(w, h, p.upscale))
        steps: list[int] = []

        def restorer(x: torch.Tensor) -> torch.Tensor:
            out = self.restore_faces(x, callback)
            steps.extend(out.start_steps)
            return out.result

        res = restore_photo(image.rgb, restorer, detector=detector, face_size=self.model.image_size,
                            settings=PhotoSettings(upscale=p.upscale, only_center_face=p.only_center_face,
                                                   draw_boxes=p.draw_boxes, batch_size=self.options.batch_size,
                                                   max_face_side=self.max_face_size),
                            bg_upsampler=bg, alpha=image.alpha, callback=callback)
        out = _to_gray(res.image) if image.gray else res.image
        restored = res.restored
        if image.gray and len(restored):
            restored = np.stack([_to_gray(r) for r in restored])
        changes = [float(np.abs(r - c).mean() * 255.0) for r, c in zip(res.restored, res.crops)]
        return ImageResult(out, res.alpha, crops=res.crops, restored=restored, faces=res.num_faces,
                           skipped=res.skipped_large, message=res.message, start_steps=steps, changes=changes,
                           face_sides=[float(v) for v in crop_sides(res.matrices, self.model.image_size)],
                           face_crops=res.face_crops, face_restored=res.face_restored)


def _resize(x: torch.Tensor, hw: tuple[int, int], clamp: bool = False) -> torch.Tensor:
    """(1, 3, H, W) -> (1, 3, h, w) bicubic with antialiasing (as the official sampler); no-op at size."""
    if tuple(x.shape[2:]) == tuple(hw):
        return x
    y = torch.nn.functional.interpolate(x, size=hw, mode="bicubic", antialias=True)
    return y.clamp(0, 1) if clamp else y


def _output_too_large(w: int, h: int, upscale: int) -> str:
    return (f"the output would be {w * upscale}x{h * upscale} = {w * h * upscale**2 / 1e6:.0f} megapixels, over the "
            f"{MAX_OUTPUT_PIXELS / 1e6:.0f} MP the whole-photo path allows (about 60 bytes of memory per output "
            f"pixel); use a smaller `upscale` (e.g. `upscale` 1) or a smaller photo")


def _device(name: str) -> torch.device:
    try:
        return pick_device(name)
    except ValueError as e:
        raise OptionError("device", str(e).split(": ", 1)[-1]) from None
