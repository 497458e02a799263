"""Files in and out of the pipelines: output planning, the one output-folder check, reading inputs, the file
loop and the one writer of a result. Plain functions over an in-memory pipeline (difface.pipeline.restoration,
difface.pipeline.inpaint); the commands and the app call these, no front end subclasses a pipeline.

    options = RestoreOptions(aligned=True)
    check_output(Path("out"), options)                          # before any model loads: OptionError("-o", ...)
    pipe = RestorePipeline.load(options)
    outcomes = run(pipe, [Path("faces/a.png")], Path("out"))    # never raises for a bad input

Rules: the result for IN/name.ext is OUT/name.png (OUT/name.jpg or .webp with `ext`; OUT/name.mp4 for a video,
difface.pipeline.video); a name taken by an earlier input gets the input's extension appended (`name_jpg.png`)
and the outcome says so; an output that would overwrite an input is refused; an input that cannot be read, is
too large (from its header), gives a non-finite result or cannot be written fails on its own with a reason, and
the others go on; every file is written atomically, the result last (after a photo's crops and comparison).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from difface.config import OptionError
from difface.data.masks import detect_mask
from difface.face.photo import MAX_OUTPUT_PIXELS
from difface.images import (
    DEFAULT_QUALITY,
    ImageReadError,
    ImageTooLarge,
    LoadedImage,
    check_pixels,
    image_to_tensor,
    read_image,
    write_image,
)
from difface.pipeline.inpaint import InpaintPipeline, MaskError, black_hole_doubts, hole_size
from difface.pipeline.outputs import Job, Outcome, failure_reason
from difface.pipeline.restoration import FacePipeline, ImageResult, _output_too_large
from difface.pipeline.video import restore_video_file
from difface.video.io import is_video_path

log = logging.getLogger("difface")


# -- planning and checking outputs -----------------------------------------------------------------------
def output_suffix(src: Path, ext: str = "png") -> str:
    """.mp4 for videos (difface.video), .`ext` for images (one of difface.images.OUTPUT_FORMATS)."""
    return ".mp4" if is_video_path(src) else f".{ext}"


def output_format(options) -> tuple[str, int]:
    """(ext, quality) of the images a run with `options` writes (RestoreOptions has them; others write PNG)."""
    return getattr(options, "ext", "png"), getattr(options, "quality", DEFAULT_QUALITY)


def plan_outputs(inputs: list[Path], outdir: Path, ext: str = "png") -> tuple[list[Job], list[Outcome]]:
    """Jobs for the inputs (images written as .`ext`), and failed outcomes for those whose output would overwrite
    an input."""
    jobs, refused, used = [], [], set()
    sources = {p.resolve() for p in inputs}
    for src in inputs:
        suffix = output_suffix(src, ext)
        name, note = f"{src.stem}{suffix}", ""
        if name in used:
            alt = f"{src.stem}_{src.suffix.lstrip('.').lower()}{suffix}"
            k = 2
            while alt in used:
                alt, k = f"{src.stem}_{src.suffix.lstrip('.').lower()}{k}{suffix}", k + 1
            note = f"written as {alt} because {name} is the output of another input"
            name = alt
        used.add(name)
        dst = outdir / name
        if dst.resolve() in sources:
            refused.append(Outcome(src, None, False, f"output {dst} would overwrite an input; choose another -o"))
            continue
        jobs.append(Job(src, dst, note))
    return jobs, refused


def keep_existing(jobs: list[Job]) -> tuple[list[Job], list[Outcome]]:
    """Split off the jobs whose output file exists (`--skip-existing`): outputs are written atomically and
    last (after a photo's crops and comparison), so an existing one is a complete result of an earlier
    run. Returns (jobs still to do, kept outcomes)."""
    todo, kept = [], []
    for job in jobs:
        if job.dst.is_file():
            kept.append(Outcome(job.src, job.dst, True, kept=True))
        else:
            todo.append(job)
    return todo, kept


def output_subdirs(options) -> tuple[str, ...]:
    """The sub-folders of the output folder a run with `options` (RestoreOptions or InpaintOptions) writes into."""
    photos = () if getattr(options, "aligned", True) else ("cropped_faces", "restored_faces")
    return photos + (("comparisons",) if options.save_comparison else ())


def check_output(outdir: Path, options=None) -> None:
    """The one output-folder check, before any model loads: OptionError("-o", ...) unless `outdir` (created if
    needed) and those of the sub-folders a run with `options` writes into that exist accept files (the others
    are made when first written to)."""
    subdirs = () if options is None else output_subdirs(options)
    for d in (outdir, *(outdir / s for s in subdirs)):
        if d.exists() and not d.is_dir():
            raise OptionError("-o", f"{d} exists and is not a folder")
        if d != outdir and not d.exists():
            continue
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".difface-write-test-", dir=d)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise OptionError("-o", f"cannot write into {d} ({e.strerror or e})") from None


# -- reading inputs ---------------------------------------------------------------------------------------
@dataclass
class _Loaded:
    """A decoded input of the loop; inpainting: its (H, W) mask (None: its exactly black pixels) and the note
    on its hole's size."""

    job: Job
    image: LoadedImage
    mask: np.ndarray | None = None
    hole: str = ""


def read_input(pipe: FacePipeline, path: Path) -> LoadedImage:
    """Decode an input of `pipe` after checking its size from the header (ImageReadError / ImageTooLarge).

    Whole photos are also refused, before decoding, when the upscaled output would be too large; an input of an
    InpaintPipeline without a usable hole is refused (MaskError)."""
    return _load(pipe, Job(path, path)).image


def _load(pipe: FacePipeline, job: Job) -> _Loaded:
    path = job.src
    size = check_pixels(path, pipe.options.max_pixels) if path.is_file() else None
    if size is not None and not pipe.aligned:
        w, h = size
        up = pipe.options.photo.upscale
        if w * h * up**2 > MAX_OUTPUT_PIXELS:
            raise ImageTooLarge(f"{path}: {_output_too_large(w, h, up)}")
    loaded = _Loaded(job, read_image(path))
    if isinstance(pipe, InpaintPipeline):
        loaded.mask, loaded.hole = _hole(pipe, path, loaded.image)
    return loaded


def _hole(pipe: InpaintPipeline, path: Path, image: LoadedImage) -> tuple[np.ndarray | None, str]:
    """The mask of an input to inpaint (None: its exactly black pixels) and the note on the hole's size;
    MaskError when there is no usable hole. Black pixels that do not look like a drawn hole are warned of."""
    mask = pipe.mask_for(path, image.rgb.shape[:2])
    if mask is not None:
        return mask, f"hole: {hole_size(mask > 0.5)}, from the mask"
    black = detect_mask(image_to_tensor(image.rgb))[0, 0].numpy()
    covered = float(black.mean())
    if covered == 0.0:
        why = f"no mask named {path.stem}.* in {pipe.options.mask}" if pipe.options.mask else "no `mask` given"
        raise MaskError(f"{path}: no missing pixels (none is exactly 0 in all channels) and {why}")
    if covered == 1.0:
        raise MaskError(f"{path}: every pixel is missing (the image is black)")
    doubts = black_hole_doubts(black)
    if doubts:  # said before the work: a black suit or background is not a hole someone drew
        log.warning("warning: %s: the hole (its exactly black pixels, as no mask was given) is %s: %s. "
                    "That does not look like a drawn hole (black hair, clothes or background?): give the "
                    "hole with `mask` FILE (white = missing) if these are not the pixels to fill",
                    path, hole_size(black), "; ".join(doubts))
    return None, f"hole: {hole_size(black)}, the pixels exactly black in all channels"


# -- the file loop ----------------------------------------------------------------------------------------
def run(pipe: FacePipeline, inputs: Sequence[Path], outdir: Path, *, rank: int = 0, world_size: int = 1,
        progress: bool = True, skip_existing: bool = False) -> list[Outcome]:
    """Restore (or inpaint) `inputs` into `outdir` with `pipe`; one Outcome per input, in the order of `inputs`
    (this process's shard under torchrun). Never raises for a bad input.

    skip_existing: an input whose output file exists is not restored again (its outcome is `kept`):
    how a killed batch is completed."""
    jobs, outcomes = plan_outputs(list(inputs), outdir, output_format(pipe.options)[0])
    pipe.new_run()
    if world_size > 1:  # results depend only on image and seed, so sharding changes nothing
        jobs, outcomes = jobs[rank::world_size], outcomes if rank == 0 else []
    if skip_existing:
        jobs, kept = keep_existing(jobs)
        outcomes += kept
    unit = "face" if pipe.aligned else "photo"
    verb = "inpainting" if pipe.task == "inpainting" else "restoring"
    bar = tqdm(total=len(jobs), unit=unit, desc=verb, dynamic_ncols=True,
               disable=not progress or (not pipe.aligned and len(jobs) < 2))
    batch = pipe.options.batch_size if pipe.aligned else 1
    pending = list(jobs)
    while pending:
        loaded: list[_Loaded] = []
        while pending and len(loaded) < batch:
            job = pending.pop(0)
            if job.dst.suffix == ".mp4":  # a video: a run of its own, with its own progress bar
                outcomes.append(restore_video_file(pipe, job, progress=progress))
                bar.update(1)
                continue
            try:
                loaded.append(_load(pipe, job))
            except ImageReadError as e:
                outcomes.append(Outcome(job.src, None, False, str(e).removeprefix(f"{job.src}: ")))
                bar.update(1)
        if not loaded:
            continue
        t0 = time.perf_counter()
        group = _restore_group(pipe, loaded)
        dt = (time.perf_counter() - t0) / len(loaded)
        for item, result in zip(loaded, group):
            outcomes.append(write_outputs(pipe, item.job, item.image, result, dt))
        bar.update(len(loaded))
        bar.set_postfix_str(f"{dt:.2f} s/{unit}")
    bar.close()
    order = {p: i for i, p in enumerate(inputs)}
    return sorted(outcomes, key=lambda o: order.get(o.src, len(order)))


def _restore_group(pipe: FacePipeline, loaded: list[_Loaded]) -> list[ImageResult | str]:
    """Results (or failure reasons) for a group of decoded inputs; a failing batch is retried per image."""
    try:
        return _process(pipe, loaded)
    except (RuntimeError, ValueError) as e:
        if len(loaded) > 1:  # find the culprit; the others still get their (identical) results
            return [r for item in loaded for r in _restore_group(pipe, [item])]
        return [failure_reason(e)]


def _process(pipe: FacePipeline, loaded: list[_Loaded]) -> list[ImageResult]:
    """The pipeline's in-memory work on a group of decoded inputs (a batch of aligned faces, or one photo)."""
    images = [item.image for item in loaded]
    if isinstance(pipe, InpaintPipeline):
        results = pipe.inpaint_images(images, [item.mask for item in loaded])
        for item, r in zip(loaded, results):  # each face's hole size goes with its outcome (as the app shows it)
            r.message = item.hole
        return results
    return pipe.restore_aligned(images) if pipe.aligned else [pipe.restore_image(images[0])]


# -- writing results --------------------------------------------------------------------------------------
def save_result(dst: Path, image: LoadedImage, result: ImageResult, quality: int = DEFAULT_QUALITY) -> None:
    """The one writer of a result file (the commands' output and the app's download): at the result's size, in
    the format of `dst`'s suffix (PNG; JPEG or WebP at `quality`), with the input's alpha when it has the result's
    size, 16-bit for a 16-bit input (PNG), one channel for a one-channel input; atomic. OSError / RuntimeError
    when it cannot be written."""
    alpha = result.alpha if result.alpha is not None and result.alpha.shape == result.image.shape[:2] else None
    write_image(dst, result.image, alpha, bit_depth=16 if image.bit_depth == 16 else 8, quality=quality,
                gray=image.channels == 1)


def write_outputs(pipe: FacePipeline, job: Job, image: LoadedImage, result: ImageResult | str,
                  seconds: float) -> Outcome:
    """Write what a run makes of one input (whole photos: the aligned crops and their restorations; the
    comparison when asked; the result last) and say what became of it; a reason string is a failure."""
    notes = (job.note,) if job.note else ()
    quality = output_format(pipe.options)[1]
    if isinstance(result, str):
        return Outcome(job.src, None, False, result, notes=notes, seconds=seconds)
    if pipe.start_step == "auto" and result.start_steps:
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
                write_image(outdir / "cropped_faces" / name, _face_view(result.face_crops, result.crops, k),
                            gray=image.channels == 1)
                write_image(outdir / "restored_faces" / name, _face_view(result.face_restored, result.restored, k),
                            gray=image.channels == 1)
        if pipe.options.save_comparison:
            write_image(outdir / "comparisons" / job.dst.name, comparison(image, result), quality=quality)
        save_result(job.dst, image, result, quality)
    except (OSError, RuntimeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        return Outcome(job.src, None, False, f"cannot write {job.dst}: {why}", notes=notes, seconds=seconds)
    return Outcome(job.src, job.dst, True, faces=result.faces, skipped=result.skipped, notes=notes,
                   seconds=seconds, start_steps=tuple(result.start_steps), changes=tuple(result.changes),
                   face_sides=tuple(result.face_sides))


def _face_view(views: list[np.ndarray] | None, crops: np.ndarray, k: int) -> np.ndarray:
    """Face k of a photo as written: at its own resolution when the result has it, else the model-size crop."""
    return crops[k] if views is None else views[k]


def comparison(image: LoadedImage, result: ImageResult) -> np.ndarray:
    """input | estimate | result (aligned) or input | result (photos, input upscaled to the output size)."""
    lq = image.rgb if result.shown_input is None else result.shown_input
    if lq.shape != result.image.shape:
        lq = cv2.resize(lq, (result.image.shape[1], result.image.shape[0]), interpolation=cv2.INTER_CUBIC)
    panels = [lq, result.image] if result.estimate is None else [lq, result.estimate, result.image]
    return np.concatenate(panels, axis=1)
