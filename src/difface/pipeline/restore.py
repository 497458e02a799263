"""The restoration pipeline: options -> model -> inputs read, restored, written -> one Outcome per input.

    pipe = RestorePipeline.load(RestoreOptions(aligned=True))      # validates, loads, checks vs. model
    outcomes = pipe.run([Path("faces/a.png")], Path("out"))        # never raises for a bad input
    result = pipe.restore_image(read_image("photo.jpg"))           # in memory (app, video, API)

What a user can count on: every option is checked before any work; an input that cannot be read,
is too large (from its header), gives a non-finite result or cannot be written fails on its own
with a reason, and the others go on; inputs are never overwritten; outputs are written atomically;
a result depends only on the input, the options and the seed (not on batching, order or sharding).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from difface.autostart import AutoStart, steps_for_error
from difface.config import OptionError, RestoreOptions
from difface.device import DTYPES, cpu_has_native_bf16, pick_device
from difface.face import band
from difface.face.detect import get_detector
from difface.face.photo import MAX_OUTPUT_PIXELS, make_bg_upsampler, restore_photo
from difface.images import (
    ImageReadError,
    ImageTooLarge,
    LoadedImage,
    check_pixels,
    image_to_tensor,
    read_image,
    tensor_to_image,
    write_image,
)
from difface.pipeline.outputs import Job, Outcome, check_writable, keep_existing, plan_outputs
from difface.restore import DifFace, Restoration, image_seed
from difface.video import VideoDependencyError, VideoError, VideoOptions, restore_video

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
    start_steps: the start step used per face.
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
    """What restoration and inpainting share: a loaded model, the sampling settings in force (the model's
    defaults filled in: `start_step`, `eta`), reading inputs, batching, writing, outcomes.

    Subclasses set `task` and implement `_restore_group`; `options` has .model, .sampling,
    .batch_size, .save_comparison and .max_pixels.
    """

    task = "restoration"
    aligned = True

    def __init__(self, model: DifFace, options, device: torch.device | None = None):
        if model.task != self.task:
            raise OptionError("--estimator", f"this is a {model.task} model ({model.name}); "
                              f"{type(self).__name__} needs a {self.task} estimator")
        self.model, self.options = model, options
        self.device = device or model.device
        self.dtype = DTYPES[options.model.dtype]
        s = options.sampling
        self.eta = model.default_eta if s.eta is None else float(s.eta)
        self.start_step: int | str = model.default_start if s.start_step is None else s.start_step
        self._check_against_model()
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
            log.warning("warning: --dtype fp16 on a CPU is emulated and about 90x slower than fp32; use fp32 or "
                        "bf16 on a CPU (fp16 is for GPUs)")
        if m.dtype == "bf16" and dev.type == "cpu" and cpu_has_native_bf16() is False:
            log.warning("warning: --dtype bf16: this CPU has no bf16 instructions (AVX512_BF16 / AMX), so bf16 is "
                        "emulated and about 10x slower than fp32 here; use fp32 (and --fast) on this machine")
        model = DifFace.from_pretrained(prior=m.prior, estimator=m.estimator, task=cls.task, device=dev,
                                        dtype=m.dtype, backend=m.backend, steps=m.steps, channels_last=m.fast,
                                        compile=m.compile)
        s = options.sampling
        if s.schedule != "even":
            model = replace(model, schedule=s.schedule, schedule_fallback=s.schedule_fallback)
        return cls(model, options, dev)

    def _check_against_model(self) -> None:
        m, s = self.model, self.options.sampling
        if self.start_step != "auto":
            try:
                m.check_start_step(self.start_step)
            except ValueError as e:
                raise OptionError("--start-step", str(e).removeprefix("start_step ")) from None
            if s.sampler != "official" and self.start_step > 0:
                t0 = int(m.diffusion.timestep_map[self.start_step])
                nfe = 10 if s.nfe is None else s.nfe
                if nfe > t0 + 1:
                    raise OptionError("--nfe", f"{nfe} evaluations do not fit between t = {t0} (start step "
                                      f"{self.start_step}) and 0; use at most {t0 + 1}")
                if m.schedule == "fitted":
                    try:
                        m.fitted_schedule(self.start_step, s.sampler, nfe, self.eta)
                    except ValueError as e:
                        raise OptionError("--schedule", str(e)) from None

    def describe(self) -> str:
        """One line for the log: model, size, precision, device and the sampling settings in force."""
        m, s = self.model, self.options.sampling
        if self.start_step == "auto":
            start = "start step auto (per image)"
        else:
            t = int(m.diffusion.timestep_map[self.start_step]) if self.start_step else 0
            start = f"start step {self.start_step} of {self.options.model.steps} (t = {t} of 1000)"
        sampler = "" if s.sampler == "official" else f", sampler {s.sampler} with {s.nfe or 10} evaluations"
        if sampler and m.schedule == "fitted":
            sampler += " (fitted schedule where stored for the start)"
        backend = getattr(self.options.model, "backend", "torch")
        on = f" on {self.device}" if backend == "torch" else f" through {m.prior.extra_repr()}"
        return (f"model: {m.name} at {m.image_size}x{m.image_size}, {self.options.model.dtype}{on}, "
                f"{start}, eta {self.eta:g}{sampler}")

    # -- restoring tensors and images ------------------------------------------------------------------
    def restore_faces(self, x: torch.Tensor, callback: Progress | None = None) -> Restoration:
        """Restore aligned faces x (n, 3, S, S) in [0, 1] (S: the model size); each face draws its noise
        from image_seed(seed, face). Raises NonFiniteResult when the output is not finite.

        callback (see `Progress`): {"event": "face_start", "count": n}, one {"event": "step", ...} per denoising
        step, {"event": "face_end", "count": n}."""
        s = self.options.sampling
        seeds = [image_seed(s.seed, im) for im in x]
        _tell(callback, "face_start", count=len(x))
        out = self.model.restore(x, start_step=self.start_step, eta=self.eta, seeds=seeds, dtype=self.dtype,
                                 sampler=s.sampler, nfe=s.nfe, callback=_steps(callback))
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
            given = f"--sampler {s.sampler}" + (f" --nfe {s.nfe}" if s.nfe is not None else "")
            if self.start_step == "auto":
                log.warning("warning: %s does nothing for a face whose start step is 0: its result is the "
                            "estimator's output, with no diffusion to sample (start step auto chose 0 for %d of "
                            "these %d face(s); said once per run, the notes give every face's step)", given,
                            steps.count(0), len(steps))
            else:
                log.warning("warning: %s does nothing with --start-step 0: every result is the estimator's "
                            "output, with no diffusion to sample", given)
        if self.start_step == "auto" or not self.start_step or "far" in self._said or self.task != "restoration":
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
            log.warning("warning: --start-step %d (t = %d) is far above what this model's auto rule chooses: %d "
                        "(t = %d) for the most damaged of these %d face(s), and at most %d (t = %d) for any face; "
                        "diffusing from this high replaces more of a face than its damage calls for. "
                        "--start-step auto chooses per face (said once per run)", n, int(t_of[n]), chosen,
                        int(t_of[chosen]), len(x), top, int(t_of[top]))

    # -- files -------------------------------------------------------------------------------------
    def read(self, path: Path) -> LoadedImage:
        """Decode an input after checking its size from the header (ImageReadError / ImageTooLarge).

        Whole photos are also refused, before decoding, when the upscaled output would be too large."""
        size = check_pixels(path, self.options.max_pixels) if path.is_file() else None
        if size is not None and not self.aligned:
            w, h = size
            up = self.options.photo.upscale
            if w * h * up**2 > MAX_OUTPUT_PIXELS:
                raise ImageTooLarge(f"{path}: {_output_too_large(w, h, up)}")
        return read_image(path)

    def check_output(self, outdir: Path) -> None:
        """OptionError unless `outdir` and the sub-folders this run writes accept files (before any work)."""
        subdirs = () if self.aligned else ("cropped_faces", "restored_faces")
        check_writable(outdir, subdirs + (("comparisons",) if self.options.save_comparison else ()))

    def run(self, inputs: Sequence[Path], outdir: Path, *, rank: int = 0, world_size: int = 1,
            progress: bool = True, skip_existing: bool = False) -> list[Outcome]:
        """Restore `inputs` into `outdir`; one Outcome per input (this process's shard under torchrun).

        skip_existing: an input whose output file exists is not restored again (its outcome is `kept`):
        how a killed batch is completed."""
        from tqdm import tqdm

        jobs, outcomes = plan_outputs(list(inputs), outdir)
        self._said = set()  # one-time notices: once per run
        if world_size > 1:  # results depend only on image and seed, so sharding changes nothing
            jobs, outcomes = jobs[rank::world_size], outcomes if rank == 0 else []
        if skip_existing:
            jobs, kept = keep_existing(jobs)
            outcomes += kept
        unit = "face" if self.aligned else "photo"
        verb = "inpainting" if self.task == "inpainting" else "restoring"
        bar = tqdm(total=len(jobs), unit=unit, desc=verb, dynamic_ncols=True,
                   disable=not progress or (not self.aligned and len(jobs) < 2))
        batch = self.options.batch_size if self.aligned else 1
        pending = list(jobs)
        while pending:
            group, loaded = [], []
            while pending and len(loaded) < batch:
                job = pending.pop(0)
                if job.dst.suffix == ".mp4":  # a video: a run of its own, with its own progress bar
                    outcomes.append(self.restore_video_file(job, progress=progress))
                    bar.update(1)
                    continue
                try:
                    loaded.append((job, self.read(job.src)))
                except ImageReadError as e:
                    outcomes.append(Outcome(job.src, None, False, str(e).removeprefix(f"{job.src}: ")))
                    bar.update(1)
            if not loaded:
                continue
            t0 = time.perf_counter()
            group = self._restore_group(loaded)
            dt = (time.perf_counter() - t0) / len(loaded)
            for (job, image), result in zip(loaded, group):
                outcomes.append(self._write(job, image, result, dt))
            bar.update(len(loaded))
            bar.set_postfix_str(f"{dt:.2f} s/{unit}")
        bar.close()
        order = {p: i for i, p in enumerate(inputs)}
        return sorted(outcomes, key=lambda o: order.get(o.src, len(order)))

    def _restore_group(self, loaded: list[tuple[Job, LoadedImage]]) -> list[ImageResult | str]:
        """Results (or failure reasons) for a group of decoded inputs; a failing batch is retried per image."""
        try:
            return self._process([job for job, _ in loaded], [im for _, im in loaded])
        except (RuntimeError, ValueError) as e:
            if len(loaded) > 1:  # find the culprit; the others still get their (identical) results
                return [r for pair in loaded for r in self._restore_group([pair])]
            return [_failure_reason(e)]

    def _process(self, jobs: list[Job], images: list[LoadedImage]) -> list[ImageResult]:
        """The task's work on a group of decoded inputs (a batch of aligned faces, or one photo)."""
        raise NotImplementedError

    def restore_video_file(self, job: Job, progress: bool = True) -> Outcome:
        return Outcome(job.src, None, False, f"{self.task} of videos is not supported")

    def _write(self, job: Job, image: LoadedImage, result: ImageResult | str, seconds: float) -> Outcome:
        notes = (job.note,) if job.note else ()
        if isinstance(result, str):
            return Outcome(job.src, None, False, result, notes=notes, seconds=seconds)
        if self.start_step == "auto" and result.start_steps:
            notes += ("start step auto: " + ", ".join(str(k) for k in result.start_steps),)
        if result.crops is not None:  # whole photos: how many faces, and why not more
            notes += (f"{result.faces} face(s) restored" + (f"; {result.message}" if result.message else ""),)
        elif result.message:
            notes += (result.message,)
        try:
            outdir = job.dst.parent
            if result.crops is not None:
                for k in range(result.faces):  # the aligned crops and their restorations, for inspection
                    name = f"{job.dst.stem}_{k:02d}.png"
                    write_image(outdir / "cropped_faces" / name, result.crops[k])
                    write_image(outdir / "restored_faces" / name, result.restored[k])
            if self.options.save_comparison:
                write_image(outdir / "comparisons" / job.dst.name, _comparison(image, result))
            alpha = result.alpha if result.alpha is not None and result.alpha.shape == result.image.shape[:2] else None
            write_image(job.dst, result.image, alpha, bit_depth=16 if image.bit_depth == 16 else 8)
        except (OSError, RuntimeError) as e:
            why = getattr(e, "strerror", None) or str(e)
            return Outcome(job.src, None, False, f"cannot write {job.dst}: {why}", notes=notes, seconds=seconds)
        return Outcome(job.src, job.dst, True, faces=result.faces, skipped=result.skipped, notes=notes,
                       seconds=seconds)


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
        # Photos and videos: no limit by default (the band merge keeps a large face's own detail, issue 21)
        self.max_face_size = 0.0 if mfs is None else mfs
        self._detector, self._bg = detector, bg_upsampler

    def with_options(self, options: RestoreOptions) -> RestorePipeline:
        """The same loaded networks (and detector / background upsampler, when those options are unchanged)
        with other options: how an app serves many requests with one model. OptionError as `load`."""
        a, b = options.model, self.options.model
        for name in ("prior", "estimator", "steps", "device", "fast", "compile"):
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
                raise OptionError("--detector", str(e)) from None
            try:
                self._bg = make_bg_upsampler(p.bg_upsampler, self.device, self.dtype, upscale=p.upscale)
            except (FileNotFoundError, ValueError, RuntimeError) as e:
                raise OptionError("--bg-upsampler", str(e)) from None
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
            results.append(ImageResult(res, im.alpha, estimate=est, faces=1, start_steps=out.start_steps[k:k + 1]))
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
                            upscale=p.upscale, only_center_face=p.only_center_face, bg_upsampler=bg,
                            draw_boxes=p.draw_boxes, batch_size=self.options.batch_size, alpha=image.alpha,
                            max_face_side=self.max_face_size, callback=callback)
        out = _to_gray(res.image) if image.gray else res.image
        restored = res.restored
        if image.gray and len(restored):
            restored = np.stack([_to_gray(r) for r in restored])
        return ImageResult(out, res.alpha, crops=res.crops, restored=restored, faces=res.num_faces,
                           skipped=res.skipped_large, message=res.message, start_steps=steps)

    def _process(self, jobs: list[Job], images: list[LoadedImage]) -> list[ImageResult]:
        return self.restore_aligned(images) if self.aligned else [self._restore_photo(images[0])]

    def restore_video_file(self, job: Job, progress: bool = True) -> Outcome:
        """Restore the faces of a clip into job.dst (MP4; difface.video): tracked, smoothed, one seed per
        track, audio kept; an interrupted run resumes. Never raises for a bad clip: the Outcome says why."""
        if self.aligned:
            return Outcome(job.src, None, False, "a video is restored in whole-photo mode: leave out --aligned")
        v, s = self.options.video, self.options.sampling
        detector, bg = self._photo_parts()
        opts = VideoOptions(tracking=v.tracking, track_seeds=v.track_seeds, smoothing=v.smoothing,
                            batch_frames=v.batch_frames, batch_size=max(self.options.batch_size, 16), seed=s.seed,
                            max_face_side=self.max_face_size or None, crf=v.crf, resume=v.resume,
                            refuse_vfr=v.refuse_vfr, max_seconds=v.max_seconds or None,
                            max_pixels=self.options.max_pixels)

        def restore_faces(x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
            out = self.model.restore(x, start_step=self.start_step, eta=self.eta, seeds=seeds, dtype=self.dtype,
                                     sampler=s.sampler, nfe=s.nfe)
            if not torch.isfinite(out.result).all():
                raise NonFiniteResult("the networks produced non-finite values (NaN or inf); nothing was written")
            self._note_start_steps(x, out)
            return out.result

        key = video_resume_key(self.options, self.model.name, self.start_step, self.eta, str(self.model.device))
        t0 = time.perf_counter()
        try:
            res = restore_video(job.src, job.dst, restore_faces=restore_faces, detector=detector,
                                face_size=self.model.image_size, upscale=self.options.photo.upscale, bg_upsampler=bg,
                                options=opts, key=key, progress=progress)
        except VideoDependencyError as e:
            return Outcome(job.src, None, False, str(e))
        except VideoError as e:
            return Outcome(job.src, None, False, str(e).removeprefix(f"{job.src}: "))
        except (OSError, RuntimeError, ValueError) as e:
            return Outcome(job.src, None, False, _failure_reason(e))
        notes = (job.note,) if job.note else ()
        resumed = f", {res.resumed_frames} resumed from an interrupted run" if res.resumed_frames else ""
        notes += (f"{res.frames} frames, {res.faces} faces in {res.tracks} track(s), "
                  f"{res.frames_per_second:.2f} frames/s{resumed}",)
        if not res.faces:
            notes += ("no face found in any frame: the output is the clip itself, upscaled",)
        return Outcome(job.src, job.dst, True, faces=res.faces, notes=notes, seconds=time.perf_counter() - t0)


# Options that never change a pixel of a restored video; every other option of RestoreOptions (the detector
# included) is in the resume key, so that a run is resumed only with the options that made its segments.
NOT_PIXEL_OPTIONS = frozenset({"video.resume", "video.refuse_vfr", "video.max_seconds", "save_comparison",
                               "max_pixels", "model.device"})


def video_resume_key(options: RestoreOptions, model_name: str, start_step, eta, device: str) -> str:
    """The resume key of a video job: every option of `options` that changes pixels (derived from the whole options
    object, so that a new option is in it without a change here), plus the model and the resolved start step, eta
    and device."""
    import dataclasses
    import json

    def flat(obj, prefix=""):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                yield from flat(v, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", v

    key = {k: v for k, v in flat(options) if k not in NOT_PIXEL_OPTIONS}
    key.update({"resolved.model": model_name, "resolved.start": start_step, "resolved.eta": eta,
                "resolved.device": device})
    return json.dumps(key, sort_keys=True, default=str)


def _comparison(image: LoadedImage, result: ImageResult) -> np.ndarray:
    """input | estimate | result (aligned) or input | result (photos, input upscaled to the output size)."""
    lq = image.rgb if result.shown_input is None else result.shown_input
    if lq.shape != result.image.shape:
        import cv2

        lq = cv2.resize(lq, (result.image.shape[1], result.image.shape[0]), interpolation=cv2.INTER_CUBIC)
    panels = [lq, result.image] if result.estimate is None else [lq, result.estimate, result.image]
    return np.concatenate(panels, axis=1)


def _resize(x: torch.Tensor, hw: tuple[int, int], clamp: bool = False) -> torch.Tensor:
    """(1, 3, H, W) -> (1, 3, h, w) bicubic with antialiasing (as the official sampler); no-op at size."""
    if tuple(x.shape[2:]) == tuple(hw):
        return x
    y = torch.nn.functional.interpolate(x, size=hw, mode="bicubic", antialias=True)
    return y.clamp(0, 1) if clamp else y


def _failure_reason(e: Exception) -> str:
    if isinstance(e, NonFiniteResult):
        return str(e)
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "out of memory" in text.lower() or "can't allocate memory" in text.lower():
        return f"out of memory ({text}); try a smaller --batch-size, --dtype bf16, or a smaller image"
    return f"restoration failed: {text}"


def _output_too_large(w: int, h: int, upscale: int) -> str:
    return (f"the output would be {w * upscale}x{h * upscale} = {w * h * upscale**2 / 1e6:.0f} megapixels, over the "
            f"{MAX_OUTPUT_PIXELS / 1e6:.0f} MP the whole-photo path allows (about 60 bytes of memory per output "
            f"pixel); use a smaller --upscale (e.g. --upscale 1) or a smaller photo")


def _device(name: str) -> torch.device:
    try:
        return pick_device(name)
    except ValueError as e:
        raise OptionError("--device", str(e).split(": ", 1)[-1]) from None
