"""The video job of `difface restore`: one clip restored into an MP4 (difface.video), and its resume key.

    outcome = restore_video_file(pipe, Job(Path("clip.mov"), Path("out/clip.mp4")))   # never raises

The resume key is derived from the whole options object, so that an interrupted clip is resumed only with
the options that made its finished segments (another detector, seed or upscale gives a fresh run).
"""

from __future__ import annotations

import dataclasses
import json
import time

import torch

from difface.config import RestoreOptions
from difface.pipeline.outputs import Job, Outcome, failure_reason
from difface.pipeline.restoration import FacePipeline, NonFiniteResult, RestorePipeline
from difface.video import FaceParts, VideoDependencyError, VideoError, restore_video

# Options that never change a pixel of a restored video; every other option of RestoreOptions (the detector
# included) is in the resume key, so that a run is resumed only with the options that made its segments.
NOT_PIXEL_OPTIONS = frozenset({"video.resume", "video.refuse_vfr", "video.max_seconds", "save_comparison",
                               "max_pixels", "model.device", "ext", "quality"})
# Video settings the job sets from the other options (restore_video_file): in the key through those.
SET_FROM_OTHER_OPTIONS = frozenset({"video.seed", "video.batch_size", "video.max_face_side", "video.max_pixels"})


def video_resume_key(options: RestoreOptions, model_name: str, start_step, eta, device: str) -> str:
    """The resume key of a video job: every option of `options` that changes pixels (derived from the whole options
    object, so that a new option is in it without a change here), plus the model and the resolved start step, eta
    and device."""

    def flat(obj, prefix=""):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if dataclasses.is_dataclass(v):
                yield from flat(v, f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", v

    key = {k: v for k, v in flat(options) if k not in NOT_PIXEL_OPTIONS | SET_FROM_OTHER_OPTIONS}
    key.update({"resolved.model": model_name, "resolved.start": start_step, "resolved.eta": eta,
                "resolved.device": device})
    return json.dumps(key, sort_keys=True, default=str)


def restore_video_file(pipe: FacePipeline, job: Job, progress: bool = True) -> Outcome:
    """Restore the faces of a clip into job.dst (MP4; difface.video) with a whole-photo RestorePipeline: tracked,
    smoothed, one seed per track, audio kept; an interrupted run resumes. Never raises for a bad clip: the
    Outcome says why."""
    if not isinstance(pipe, RestorePipeline):
        return Outcome(job.src, None, False, f"{pipe.task} of videos is not supported")
    if pipe.aligned:
        return Outcome(job.src, None, False, "a video is restored in whole-photo mode: leave out `aligned`")
    v, s = pipe.options.video, pipe.options.sampling
    detector, bg = pipe._photo_parts()
    opts = dataclasses.replace(v, batch_size=max(pipe.options.batch_size, 16), seed=s.seed,
                               max_face_side=pipe.max_face_size or None, max_seconds=v.max_seconds or None,
                               max_pixels=pipe.options.max_pixels)

    def restore_faces(x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        out = pipe.model.restore(x, pipe.plan, seeds=seeds, dtype=pipe.dtype)
        if not torch.isfinite(out.result).all():
            raise NonFiniteResult("the networks produced non-finite values (NaN or inf); nothing was written")
        pipe._note_start_steps(x, out)
        return out.result

    key = video_resume_key(pipe.options, pipe.model.name, pipe.start_step, pipe.eta, str(pipe.model.device))
    t0 = time.perf_counter()
    try:
        res = restore_video(job.src, job.dst, FaceParts(restore_faces, detector, pipe.model.image_size, bg),
                            upscale=pipe.options.photo.upscale, options=opts, key=key, progress=progress)
    except VideoDependencyError as e:
        return Outcome(job.src, None, False, str(e))
    except VideoError as e:
        return Outcome(job.src, None, False, str(e).removeprefix(f"{job.src}: "))
    except (OSError, RuntimeError, ValueError) as e:
        return Outcome(job.src, None, False, failure_reason(e))
    notes = (job.note,) if job.note else ()
    resumed = f", {res.resumed_frames} resumed from an interrupted run" if res.resumed_frames else ""
    notes += (f"{res.frames} frames, {res.faces} faces in {res.tracks} track(s), "
              f"{res.frames_per_second:.2f} frames/s{resumed}",)
    if not res.faces:
        notes += ("no face found in any frame: the output is the clip itself, upscaled",)
    return Outcome(job.src, job.dst, True, faces=res.faces, notes=notes, seconds=time.perf_counter() - t0)
