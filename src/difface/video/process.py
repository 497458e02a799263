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

from difface.face.align import estimate_alignment, select_faces, warp_faces
from difface.face.background import Upsampler, lanczos_upsampler, resize_to, target_size
from difface.face.detect import Detections, FaceDetector, detect_faces
from difface.face.paste import MaskFn
from difface.face.photo import paste_corrections
from difface.images import atomic_write_bytes
from difface.video.io import (
    DEFAULT_MAX_SECONDS,
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
from difface.video.track import FaceTracker, frame_seed, smooth_landmarks

log = logging.getLogger(__name__)

RestoreFaces = Callable[[torch.Tensor, list[int]], torch.Tensor]
MANIFEST_VERSION = 1


@dataclass
class VideoOptions:
    """Options of `restore_video`; the first four switch the temporal-consistency parts off for comparison.

    tracking: follow faces across frames (off: every frame on its own); track_seeds: one noise seed
    per track (off: a new seed for every face in every frame); smoothing: temporal landmark smoothing
    over +-smooth_radius frames (needs tracking; also fills frames where the detector missed a
    tracked face); batch_frames: frames whose faces go to the restorer together (1: frame by frame),
    at most batch_size faces per call. robust_alignment: LMedS alignment (the photo default) or
    least squares; None picks least squares with smoothing (LMedS can switch inlier sets between
    frames, a jump) and LMedS without. Encoding: crf, preset (libx264). segment_seconds: length of
    the resumable segments; resume: reuse the segments of an interrupted run. refuse_vfr: raise on a
    variable frame rate instead of keeping every frame's timestamp.
    """

    tracking: bool = True
    track_seeds: bool = True
    smoothing: bool = True
    smooth_radius: int = 4
    batch_frames: int = 8
    batch_size: int = 16
    seed: int = 12345
    min_eye_dist: float = 5.0
    max_face_side: float | None = None
    max_missing: int = 5
    det_min_side: int = 640
    det_max_side: int = 2048
    robust_alignment: bool | None = None
    crf: int = 18
    preset: str = "medium"
    segment_seconds: float = 10.0
    resume: bool = True
    refuse_vfr: bool = False
    max_seconds: float | None = DEFAULT_MAX_SECONDS  # clips longer than this are refused (None or 0: no limit)
    max_pixels: int | None = None  # frames with more pixels are refused from the header (None: no limit)

    @classmethod
    def independent(cls, **kw) -> VideoOptions:
        """Per-frame independent restoration: no tracking, no smoothing, per-frame seeds, no batching."""
        return cls(tracking=False, track_seeds=False, smoothing=False, batch_frames=1, **kw)


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
    (e.g. `difface.restore.DifFace`)."""

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


class _State:
    """Tracker + landmark history, serialisable (exact floats) for the resume manifest."""

    def __init__(self, opts: VideoOptions) -> None:
        self.tracker = FaceTracker(opts.seed, max_missing=opts.max_missing)
        self.history: dict[int, dict[int, np.ndarray]] = {}  # track id -> frame -> raw landmarks

    def to_json(self, frames_from: int, frames_to: int) -> dict:
        t = self.tracker
        return {
            "next_id": t.next_id,
            "tracks": [{"id": k.id, "seed": k.seed, "box": k.box.tolist(), "landmarks": k.landmarks.tolist(),
                        "first": k.first_frame, "last": k.last_frame, "velocity": k.velocity.tolist(),
                        "hits": k.hits} for k in t.tracks],
            "history": {str(tid): {str(f): lm.tolist() for f, lm in h.items() if frames_from <= f < frames_to}
                        for tid, h in self.history.items()},
        }

    def load(self, d: dict) -> None:
        from difface.video.track import Track

        self.tracker.next_id = d["next_id"]
        self.tracker.tracks = [Track(k["id"], k["seed"], np.array(k["box"]), np.array(k["landmarks"]), k["first"],
                                     k["last"], np.array(k["velocity"]), k["hits"]) for k in d["tracks"]]
        self.history = {int(tid): {int(f): np.array(lm) for f, lm in h.items()} for tid, h in d["history"].items()}
        self.history = {k: v for k, v in self.history.items() if v}


def _source_id(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class _Lock:
    """An exclusive lock on the work folder (POSIX), so two runs never write the same output."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, None

    def __enter__(self) -> _Lock:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return self
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(self.fd)
            raise RuntimeError(f"{self.path.parent}: another run is writing this output") from e
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def restore_video(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    restore_faces: RestoreFaces,
    detector: FaceDetector,
    face_size: int,
    upscale: float = 2,
    bg_upsampler: Upsampler | None = None,
    options: VideoOptions | None = None,
    mask_fn: MaskFn | None = None,
    key: str = "",
    progress: bool = True,
    on_frame: Callable[[FrameFaces], None] | None = None,
) -> VideoResult:
    """Restore every face of the clip `src` and write `dst` (H.264 MP4, audio carried over).

    Args: restore_faces(crops (n, 3, S, S) float32 [0, 1], seeds list[int]) -> (n, 3, S, S) with
    S = face_size; detector a FaceDetector (`difface.face.get_detector`); upscale: output / input
    size (the background goes through `bg_upsampler(rgb, scale)`, Lanczos when None); options:
    VideoOptions; mask_fn: optional face-parsing hook of `paste.paste_faces`; key: a string naming
    everything else that changes the result (model, sampler, ...): an interrupted run is resumed
    only when source, options and key are the same; on_frame: called with each frame's FrameFaces.
    Output size: round(upscale * H) x round(upscale * W) of the displayed (rotation-applied) input,
    padded by one repeated row/column when odd. Returns a VideoResult.
    Raises difface.video.io.VideoError subclasses naming the file for unusable inputs.
    """
    opts = options or VideoOptions()
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: the output would overwrite the input")
    t0 = time.perf_counter()
    info = probe_video(src, max_pixels=opts.max_pixels, max_seconds=opts.max_seconds)
    check_frame_rate(info, refuse=opts.refuse_vfr)
    log.info("%s: %s", src, info.describe())
    out_hw = target_size(info.height, info.width, upscale)
    enc_h, enc_w = even_size(*out_hw)
    smoothing = opts.smoothing and opts.tracking
    radius = max(0, int(opts.smooth_radius)) if smoothing else 0
    robust = (not smoothing) if opts.robust_alignment is None else opts.robust_alignment
    seg_len = max(1, int(round(opts.segment_seconds * float(info.fps))))
    bg_up = bg_upsampler or lanczos_upsampler
    settings = EncoderSettings(opts.crf, opts.preset)

    work = dst.parent / f".{dst.name}.parts"
    work.mkdir(parents=True, exist_ok=True)
    limits = ("resume", "max_seconds", "max_pixels")  # change no pixel: not in the resume config
    config = {"options": {k: v for k, v in asdict(opts).items() if k not in limits}, "face_size": face_size,
              "upscale": float(upscale), "key": key, "output": [enc_w, enc_h]}
    with _Lock(work / "lock"):
        manifest = _load_manifest(work, src, config) if opts.resume else None
        if manifest is None:
            for p in work.glob("seg_*.mp4"):
                p.unlink()
            manifest = {"version": MANIFEST_VERSION, "source": _source_id(src), "config": config, "segments": [],
                        "state": None}
        state = _State(opts)
        start = manifest["segments"][-1]["end"] if manifest["segments"] else 0
        if start and manifest.get("state"):
            state.load(manifest["state"])
        if start:
            log.info("%s: resuming after frame %d (%d segment(s) done)", dst, start, len(manifest["segments"]))

        stats = {"faces": 0, "frames": 0}
        bar = tqdm(total=info.frames, initial=start, unit="frame", desc=src.name, disable=not progress,
                   dynamic_ncols=True)
        snapshots: dict[int, dict] = {}
        encoder: SegmentEncoder | None = None

        def close_segment(end: int) -> None:
            nonlocal encoder
            encoder.close()
            final = encoder.path.with_name(encoder.path.name.replace(".tmp", ""))
            os.replace(encoder.path, final)
            encoder = None
            manifest["segments"].append({"file": final.name, "end": end})
            manifest["state"] = snapshots.pop(end, None)
            atomic_write_bytes(work / "manifest.json", json.dumps(manifest).encode())

        def write(fr: Frame, rgb: np.ndarray) -> None:
            nonlocal encoder
            if encoder is None:
                encoder = SegmentEncoder(work / f"seg_{fr.index // seg_len:06d}.tmp.mp4", enc_w, enc_h, info.fps,
                                         info.time_base, settings)
            pts = fr.pts if fr.pts is not None else fr.index * fr.duration
            encoder.write(pad_even(rgb), pts, fr.duration)
            stats["frames"] += 1
            if (fr.index + 1) % seg_len == 0:
                close_segment(fr.index + 1)
            bar.update(1)
            bar.set_postfix_str(f"{stats['faces'] / max(time.perf_counter() - t0, 1e-9):.2f} faces/s",
                                refresh=False)

        ready: deque[_Ready] = deque()

        def flush() -> None:
            if not ready:
                return
            crops = np.concatenate([r.crops for r in ready]) if any(len(r.crops) for r in ready) else None
            seeds = [s for r in ready for s in r.faces.seeds]
            restored = _run(restore_faces, crops, seeds, opts.batch_size) if crops is not None else None
            k = 0
            while ready:
                r = ready.popleft()
                n = len(r.crops)
                rgb = r.frame.rgb.astype(np.float32) / 255.0
                bg = resize_to(bg_up(rgb, upscale), out_hw)
                # the band merge of whole photos: each face's correction added, its own finer detail kept
                out = paste_corrections(bg, r.crops, restored[k:k + n], r.faces.matrices, face_size, upscale,
                                        mask_fn, False) if n else bg
                if n and _is_gray(r.frame.rgb):  # gray in, gray out (as for photos): no tinted faces
                    out = np.repeat((out @ np.array([0.299, 0.587, 0.114], np.float32))[:, :, None], 3, axis=2)
                k += n
                stats["faces"] += n
                write(r.frame, np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8))

        def emit(p: _Pending) -> None:
            faces = _faces_of(p, state, opts, smoothing, radius, face_size, robust)
            if on_frame is not None:
                on_frame(faces)
            crops = warp_faces(p.frame.rgb.astype(np.float32) / 255.0, faces.matrices, face_size) if len(
                faces.seeds) else np.zeros((0, face_size, face_size, 3), np.float32)
            ready.append(_Ready(p.frame, faces, crops))
            n_faces = sum(len(r.crops) for r in ready)
            if len(ready) >= max(1, opts.batch_frames) or n_faces >= max(1, opts.batch_size):
                flush()
            for h in state.history.values():  # frames before index - radius are no longer needed
                for f in [f for f in h if f < p.frame.index - radius]:
                    del h[f]
            state.history = {t: h for t, h in state.history.items() if h}

        pending: deque[_Pending] = deque()
        # While no face has been found since the start, faces are looked for every `probe` frames (half a
        # second) only: the frames in between stay pending, and when a probe finds a face they are searched
        # first, in order, so detections, tracks and output are those of searching every frame (unless a
        # face shows only between two probes). `first` frames without a face are said early.
        probe = max(radius + 1, int(round(0.5 * float(info.fps))))
        first = min(info.frames or seg_len, max(1, int(round(2 * float(info.fps)))))
        unseen = start == 0  # no face found yet in this run
        skipped: list[_Pending] = []

        def find(fr: Frame) -> Detections:
            rgb = fr.rgb.astype(np.float32) / 255.0
            dets = detect_faces(rgb, detector, min_side=opts.det_min_side, max_side=opts.det_max_side)
            return dets.subset(select_faces(dets.boxes, dets.landmarks, rgb.shape[:2], min_eye_dist=opts.min_eye_dist))

        def observe(p: _Pending, dets: Detections) -> None:
            """Track the faces `dets` of a pending frame (frames in order)."""
            nonlocal unseen
            fr = p.frame
            ids = state.tracker.update(fr.index, dets) if opts.tracking else [-1] * len(dets)
            for tid, lm in zip(ids, dets.landmarks):
                if tid >= 0:
                    state.history.setdefault(tid, {})[fr.index] = lm.astype(np.float64)
            if opts.tracking and (fr.index + 1) % seg_len == 0:
                snapshots[fr.index + 1] = state.to_json(fr.index + 1 - radius, fr.index + 1)
            p.dets, p.ids, p.observed = dets, ids, True
            if len(dets):
                unseen = False
            elif unseen and fr.index + 1 == first:
                log.warning("%s: 0 faces in the first %d frames (%.1f s)%s", src, first, first / float(info.fps),
                            f"; looking for faces in every {probe}th frame until one is found" if probe > 1 else "")

        try:
            for fr in read_frames(src, info, start=start):
                p = _Pending(fr, Detections(), [])
                pending.append(p)
                if unseen and probe > 1 and fr.index >= first and len(skipped) < probe - 1:
                    p.observed = False
                    skipped.append(p)  # searched later, when the next probe finds a face
                else:
                    dets = find(fr)
                    for q in skipped:  # the frames since the last probe: searched when it found a face
                        observe(q, find(q.frame) if len(dets) else Detections())
                    skipped = []
                    observe(p, dets)
                while pending and pending[0].observed and pending[0].frame.index + radius <= fr.index:
                    emit(pending.popleft())
            for q in skipped:  # the clip ended between two probes
                observe(q, find(q.frame))
            while pending:
                emit(pending.popleft())
            flush()
            if encoder is not None:
                close_segment(start + stats["frames"])
            bar.close()
            parts = [work / s["file"] for s in manifest["segments"]]
            tmp = work / "assembled.mp4"
            audio = assemble(parts, tmp, src if info.audio else None)
            os.replace(tmp, dst)
        except BaseException:
            bar.close()
            if encoder is not None:
                encoder.abort()
            raise
    shutil.rmtree(work, ignore_errors=True)
    tracks = state.tracker.next_id if opts.tracking else 0
    return VideoResult(dst, info.frames, stats["faces"], tracks, time.perf_counter() - t0, start, info, audio)


def _load_manifest(work: Path, src: Path, config: dict) -> dict | None:
    path = work / "manifest.json"
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    same = (m.get("version") == MANIFEST_VERSION and m.get("source") == _source_id(src)
            and m.get("config") == json.loads(json.dumps(config)))
    if not same:
        log.info("%s: an unfinished run with another source or options was found; starting over", work)
        return None
    if not all((work / s["file"]).is_file() for s in m.get("segments", [])):
        log.info("%s: segments of the unfinished run are missing; starting over", work)
        return None
    return m


def _faces_of(p: _Pending, state: _State, opts: VideoOptions, smoothing: bool, radius: int, face_size: int,
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
