"""Restore the faces of a video clip: `restore_video`.

    decode (streaming) -> detect -> track -> smooth landmarks (look-ahead window) -> align -> restore
    the crops of several frames in one batch (one seed per track) -> upscale the background -> paste
    -> encode H.264 segments -> remux segments + the source's audio into OUT -> rename

The face restorer, the detector and the background upsampler are injected, so this module knows
nothing about diffusion: `restore_faces(crops, seeds)` takes (n, 3, S, S) float32 in [0, 1] and one
int seed per crop, and returns the same shape.

Memory is bounded whatever the clip's length: at most `smooth_radius + batch_frames` decoded frames
(half a second's more while no face has been found) are held, and the encoder writes as it goes.
Output is atomic and resumable: frames are encoded into closed segments of `segment_seconds` under
`OUT/.NAME.parts/`, each recorded in a manifest with the tracker state at its end; the final file is
assembled there and renamed into place. A run that stops (crash, Ctrl-C, power loss) leaves no file
under the final name; rerunning the same command with the same options resumes after the last
complete segment (same output as an uninterrupted run), and a different source or option starts over.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from difface.atomic import atomic_write_bytes
from difface.config import VideoSettings
from difface.face.align import estimate_alignment, select_faces, warp_faces
from difface.face.background import Upsampler, lanczos_upsampler, resize_to, target_size
from difface.face.detect import Detections, FaceDetector, detect_faces
from difface.face.paste import MaskFn
from difface.face.photo import paste_corrections
from difface.video.io import (
    EncoderSettings,
    Frame,
    SegmentEncoder,
    VideoInfo,
    assemble,
    check_frame_rate,
    even_size,
    pad_even,
    probe_video,
    read_frames,
)
from difface.video.resume import MANIFEST_VERSION, _load_manifest, _Lock, _source_id, _State  # noqa: F401
from difface.video.track import frame_seed, smooth_landmarks

log = logging.getLogger(__name__)

RestoreFaces = Callable[[torch.Tensor, list[int]], torch.Tensor]


VideoOptions = VideoSettings  # the options of `restore_video`: difface.config's one video options class


@dataclass(frozen=True)
class FaceParts:
    """The injected parts of `restore_video`.

    restore_faces(crops (n, 3, S, S) float32 in [0, 1], seeds list[int]) -> (n, 3, S, S) with S = face_size;
    detector: a FaceDetector (`difface.face.get_detector`); bg_upsampler(rgb, scale): the background (None:
    Lanczos); mask_fn: optional face-parsing hook of `paste.paste_faces`.
    """

    restore_faces: RestoreFaces
    detector: FaceDetector
    face_size: int
    bg_upsampler: Upsampler | None = None
    mask_fn: MaskFn | None = None


@dataclass
class FrameFaces:
    """What was restored in one frame (passed to `on_frame`): frame index; per face the track id
    (-1 without tracking), seed, landmarks that drove the alignment (N, 5, 2) in input pixels,
    whether they were filled in for a missed detection, and the (N, 2, 3) input -> crop matrices."""

    index: int
    track_ids: list[int]
    seeds: list[int]
    landmarks: np.ndarray
    filled: list[bool]
    matrices: np.ndarray


@dataclass
class VideoResult:
    """frames written, faces restored (over all frames), tracks started, wall seconds, frames that
    came from an earlier interrupted run (resumed), the input's VideoInfo, and the audio report."""

    output: Path
    frames: int
    faces: int
    tracks: int
    seconds: float
    resumed_frames: int = 0
    info: VideoInfo | None = None
    audio: dict = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return (self.frames - self.resumed_frames) / max(self.seconds, 1e-9)

    @property
    def faces_per_second(self) -> float:
        return self.faces / max(self.seconds, 1e-9)


def model_restorer(model, **restore_kwargs) -> RestoreFaces:
    """A `restore_faces` callable from any object with `restore(lq, seeds=..., **kw).result`
    (e.g. `difface.core.DifFace`)."""

    def restore_faces(x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
        return model.restore(x, seeds=list(seeds), **restore_kwargs).result

    return restore_faces


@dataclass
class _Pending:
    frame: Frame
    dets: Detections
    ids: list[int]
    observed: bool = True  # False while its faces are still to be searched (see `probe` in restore_video)


@dataclass
class _Ready:
    frame: Frame
    faces: FrameFaces
    crops: np.ndarray


def restore_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    parts: FaceParts,
    *,
    upscale: float = 2,
    options: VideoSettings | None = None,
    key: str = "",
    progress: bool = True,
    on_frame: Callable[[FrameFaces], None] | None = None,
) -> VideoResult:
    """Restore every face of the clip `src` and write `dst` (H.264 MP4, audio carried over).

    Args: parts: the face restorer, detector and background upsampler (FaceParts); upscale: output / input
    size (the background goes through `parts.bg_upsampler(rgb, scale)`, Lanczos when None); options:
    VideoSettings (difface.config); key: a string naming everything else that changes the result (model,
    sampler, ...): an interrupted run is resumed only when source, options and key are the same; on_frame:
    called with each frame's FrameFaces.
    Output size: round(upscale * H) x round(upscale * W) of the displayed (rotation-applied) input,
    padded by one repeated row/column when odd. Returns a VideoResult.
    Raises difface.video.io.VideoError subclasses naming the file for unusable inputs.
    """
    job = _VideoJob(src, dst, parts, upscale, options or VideoSettings(), progress, on_frame)
    return job.run(key)


class _VideoJob:
    """One run of `restore_video`: the clip's settings, the open segment and the frames in flight."""

    def __init__(self, src, dst, parts: FaceParts, upscale: float, opts: VideoSettings, progress: bool,
                 on_frame: Callable[[FrameFaces], None] | None) -> None:
        src, dst = Path(src), Path(dst)
        if dst.exists() and src.exists() and dst.resolve() == src.resolve():
            raise ValueError(f"{dst}: the output would overwrite the input")
        self.t0 = time.perf_counter()
        self.src, self.dst, self.opts = src, dst, opts
        self.restore_faces, self.detector, self.face_size = parts.restore_faces, parts.detector, parts.face_size
        self.upscale, self.mask_fn, self.progress, self.on_frame = upscale, parts.mask_fn, progress, on_frame
        info = probe_video(src, max_pixels=opts.max_pixels, max_seconds=opts.max_seconds)
        check_frame_rate(info, refuse=opts.refuse_vfr)
        log.info("%s: %s", src, info.describe())
        self.info = info
        self.out_hw = target_size(info.height, info.width, upscale)
        self.enc_h, self.enc_w = even_size(*self.out_hw)
        self.smoothing = opts.smoothing and opts.tracking
        self.radius = max(0, int(opts.smooth_radius)) if self.smoothing else 0
        self.robust = (not self.smoothing) if opts.robust_alignment is None else opts.robust_alignment
        self.seg_len = max(1, int(round(opts.segment_seconds * float(info.fps))))
        self.bg_up = parts.bg_upsampler or lanczos_upsampler
        self.settings = EncoderSettings(opts.crf, opts.preset)
        self.work = dst.parent / f".{dst.name}.parts"
        self.stats = {"faces": 0, "frames": 0}
        self.snapshots: dict[int, dict] = {}
        self.encoder: SegmentEncoder | None = None
        self.ready: deque[_Ready] = deque()
        # While no face has been found since the start, faces are looked for every `probe` frames (half a
        # second) only: the frames in between stay pending, and when a probe finds a face they are searched
        # first, in order, so detections, tracks and output are those of searching every frame (unless a
        # face shows only between two probes). `first` frames without a face are said early.
        self.probe = max(self.radius + 1, int(round(0.5 * float(info.fps))))
        self.first = min(info.frames or self.seg_len, max(1, int(round(2 * float(info.fps)))))

    def _start(self, key: str) -> None:
        """Load the manifest of an unfinished run with the same source and options, or start a new one."""
        opts = self.opts
        limits = ("resume", "max_seconds", "max_pixels")  # change no pixel: not in the resume config
        config = {"options": {k: v for k, v in asdict(opts).items() if k not in limits}, "face_size": self.face_size,
                  "upscale": float(self.upscale), "key": key, "output": [self.enc_w, self.enc_h]}
        manifest = _load_manifest(self.work, self.src, config) if opts.resume else None
        if manifest is None:
            for p in self.work.glob("seg_*.mp4"):
                p.unlink()
            manifest = {"version": MANIFEST_VERSION, "source": _source_id(self.src), "config": config, "segments": [],
                        "state": None}
        self.manifest = manifest
        self.state = _State(opts)
        self.start = manifest["segments"][-1]["end"] if manifest["segments"] else 0
        if self.start and manifest.get("state"):
            self.state.load(manifest["state"])
        if self.start:
            log.info("%s: resuming after frame %d (%d segment(s) done)", self.dst, self.start,
                     len(manifest["segments"]))
        self.unseen = self.start == 0  # no face found yet in this run

    def run(self, key: str) -> VideoResult:
        self.work.mkdir(parents=True, exist_ok=True)
        with _Lock(self.work / "lock"):
            self._start(key)
            info = self.info
            self.bar = tqdm(total=info.frames, initial=self.start, unit="frame", desc=self.src.name,
                            disable=not self.progress, dynamic_ncols=True)
            try:
                self._frames()
                if self.encoder is not None:
                    self._close_segment(self.start + self.stats["frames"])
                self.bar.close()
                parts = [self.work / s["file"] for s in self.manifest["segments"]]
                tmp = self.work / "assembled.mp4"
                audio = assemble(parts, tmp, self.src if info.audio else None)
                os.replace(tmp, self.dst)
            except BaseException:
                self.bar.close()
                if self.encoder is not None:
                    self.encoder.abort()
                raise
        shutil.rmtree(self.work, ignore_errors=True)
        tracks = self.state.tracker.next_id if self.opts.tracking else 0
        return VideoResult(self.dst, info.frames, self.stats["faces"], tracks, time.perf_counter() - self.t0,
                           self.start, info, audio)

    def _frames(self) -> None:
        """Decode, detect, track and emit every frame from `start` on, then flush the last batch."""
        pending: deque[_Pending] = deque()
        skipped: list[_Pending] = []
        for fr in read_frames(self.src, self.info, start=self.start):
            p = _Pending(fr, Detections(), [])
            pending.append(p)
            if self.unseen and self.probe > 1 and fr.index >= self.first and len(skipped) < self.probe - 1:
                p.observed = False
                skipped.append(p)  # searched later, when the next probe finds a face
            else:
                dets = self._find(fr)
                for q in skipped:  # the frames since the last probe: searched when it found a face
                    self._observe(q, self._find(q.frame) if len(dets) else Detections())
                skipped = []
                self._observe(p, dets)
            while pending and pending[0].observed and pending[0].frame.index + self.radius <= fr.index:
                self._emit(pending.popleft())
        for q in skipped:  # the clip ended between two probes
            self._observe(q, self._find(q.frame))
        while pending:
            self._emit(pending.popleft())
        self._flush()

    def _close_segment(self, end: int) -> None:
        encoder = self.encoder
        encoder.close()
        final = encoder.path.with_name(encoder.path.name.replace(".tmp", ""))
        os.replace(encoder.path, final)
        self.encoder = None
        self.manifest["segments"].append({"file": final.name, "end": end})
        self.manifest["state"] = self.snapshots.pop(end, None)
        atomic_write_bytes(self.work / "manifest.json", json.dumps(self.manifest).encode())

    def _write(self, fr: Frame, rgb: np.ndarray) -> None:
        if self.encoder is None:
            self.encoder = SegmentEncoder(self.work / f"seg_{fr.index // self.seg_len:06d}.tmp.mp4", self.enc_w,
                                          self.enc_h, self.info.fps, self.info.time_base, self.settings)
        pts = fr.pts if fr.pts is not None else fr.index * fr.duration
        self.encoder.write(pad_even(rgb), pts, fr.duration)
        self.stats["frames"] += 1
        if (fr.index + 1) % self.seg_len == 0:
            self._close_segment(fr.index + 1)
        self.bar.update(1)
        self.bar.set_postfix_str(f"{self.stats['faces'] / max(time.perf_counter() - self.t0, 1e-9):.2f} faces/s",
                                 refresh=False)

    def _flush(self) -> None:
        ready = self.ready
        if not ready:
            return
        crops = np.concatenate([r.crops for r in ready]) if any(len(r.crops) for r in ready) else None
        seeds = [s for r in ready for s in r.faces.seeds]
        restored = _run(self.restore_faces, crops, seeds, self.opts.batch_size) if crops is not None else None
        k = 0
        while ready:
            r = ready.popleft()
            n = len(r.crops)
            rgb = r.frame.rgb.astype(np.float32) / 255.0
            bg = resize_to(self.bg_up(rgb, self.upscale), self.out_hw)
            # the band merge of whole photos: each face's correction added, its own finer detail kept
            out = paste_corrections(bg, r.crops, restored[k:k + n], r.faces.matrices, self.face_size, self.upscale,
                                    self.mask_fn, False) if n else bg
            if n and _is_gray(r.frame.rgb):  # gray in, gray out (as for photos): no tinted faces
                out = np.repeat((out @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None], 3, axis=2)
            k += n
            self.stats["faces"] += n
            self._write(r.frame, np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8))

    def _emit(self, p: _Pending) -> None:
        opts, state, face_size = self.opts, self.state, self.face_size
        faces = _faces_of(p, state, opts, self.smoothing, self.radius, face_size, self.robust)
        if self.on_frame is not None:
            self.on_frame(faces)
        crops = warp_faces(p.frame.rgb.astype(np.float32) / 255.0, faces.matrices, face_size) if len(
            faces.seeds) else np.zeros((0, face_size, face_size, 3), np.float32)
        self.ready.append(_Ready(p.frame, faces, crops))
        n_faces = sum(len(r.crops) for r in self.ready)
        if len(self.ready) >= max(1, opts.batch_frames) or n_faces >= max(1, opts.batch_size):
            self._flush()
        for h in state.history.values():  # frames before index - radius are no longer needed
            for f in [f for f in h if f < p.frame.index - self.radius]:
                del h[f]
        state.history = {t: h for t, h in state.history.items() if h}

    def _find(self, fr: Frame) -> Detections:
        opts = self.opts
        rgb = fr.rgb.astype(np.float32) / 255.0
        dets = detect_faces(rgb, self.detector, min_side=opts.det_min_side, max_side=opts.det_max_side)
        return dets.subset(select_faces(dets.boxes, dets.landmarks, rgb.shape[:2], min_eye_dist=opts.min_eye_dist))

    def _observe(self, p: _Pending, dets: Detections) -> None:
        """Track the faces `dets` of a pending frame (frames in order)."""
        opts, state, fr = self.opts, self.state, p.frame
        ids = state.tracker.update(fr.index, dets) if opts.tracking else [-1] * len(dets)
        for tid, lm in zip(ids, dets.landmarks):
            if tid >= 0:
                state.history.setdefault(tid, {})[fr.index] = lm.astype(np.float64)
        if opts.tracking and (fr.index + 1) % self.seg_len == 0:
            self.snapshots[fr.index + 1] = state.to_json(fr.index + 1 - self.radius, fr.index + 1)
        p.dets, p.ids, p.observed = dets, ids, True
        if len(dets):
            self.unseen = False
        elif self.unseen and fr.index + 1 == self.first:
            log.warning("%s: 0 faces in the first %d frames (%.1f s)%s", self.src, self.first,
                        self.first / float(self.info.fps),
                        f"; looking for faces in every {self.probe}th frame until one is found" if self.probe > 1
                        else "")


def _faces_of(p: _Pending, state: _State, opts: VideoSettings, smoothing: bool, radius: int, face_size: int,
              robust: bool) -> FrameFaces:
    """The faces to restore in one frame: ids, seeds, landmarks (smoothed / filled) and matrices."""
    t = p.frame.index
    ids, lms, filled = [], [], []
    if smoothing:
        detected = set(p.ids)
        for tid in sorted(state.history):
            lm = smooth_landmarks(state.history[tid], t, radius)
            if lm is not None:
                ids.append(tid)
                lms.append(lm)
                filled.append(tid not in detected)
    else:
        ids = list(p.ids)
        lms = [lm.astype(np.float64) for lm in p.dets.landmarks]
        filled = [False] * len(ids)
    lm_arr = np.asarray(lms, np.float64).reshape(-1, 5, 2)
    mats = estimate_alignment(lm_arr, face_size, robust=robust)
    if opts.max_face_side and len(mats):
        keep = face_size / np.sqrt(np.abs(np.linalg.det(mats[:, :, :2]))) <= opts.max_face_side
        idx = np.flatnonzero(keep)
        ids, filled = [ids[i] for i in idx], [filled[i] for i in idx]
        lm_arr, mats = lm_arr[idx], mats[idx]
    if opts.tracking and opts.track_seeds:
        seeds = [state.tracker.seed_of(tid) for tid in ids]
    else:
        seeds = [frame_seed(opts.seed, t, k) for k in range(len(ids))]
    return FrameFaces(t, ids, seeds, lm_arr, filled, mats)


def _is_gray(rgb: np.ndarray) -> bool:
    """An (H, W, 3) frame whose three channels are equal (a gray clip decodes so)."""
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2]))


def _run(restore_faces: RestoreFaces, crops: np.ndarray, seeds: list[int], batch_size: int) -> np.ndarray:
    """Restore (N, S, S, 3) crops in calls of at most batch_size; returns (N, S, S, 3) float32."""
    out = np.empty_like(crops, dtype=np.float32)
    step = max(1, batch_size)
    for i in range(0, len(crops), step):
        x = torch.from_numpy(np.ascontiguousarray(crops[i:i + step].transpose(0, 3, 1, 2)))
        y = restore_faces(x, seeds[i:i + step])
        if tuple(y.shape) != tuple(x.shape):
            raise ValueError(f"the face restorer returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
        out[i:i + len(x)] = y.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return out
