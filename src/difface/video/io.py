"""Video input/output through PyAV (FFmpeg): streaming decode, H.264 encode, audio remux.

Only this module imports `av`. Frames are (H, W, 3) uint8 RGB arrays in display orientation
(the stream's rotation is applied to the pixels, so the output carries no rotation).

Timestamps: every output frame keeps its source frame's pts in the source stream's time base, so
the frame rate, frame count, duration and audio/video sync are those of the source, including
variable-frame-rate clips (which are reported in `VideoInfo.variable_frame_rate`, not refused).

Writing (`SegmentEncoder`, `assemble`) is split in two so that output can be atomic and resumable:
frames are encoded into closed H.264 segments (no B-frames, so decode order = presentation order and
segments concatenate with monotonic timestamps), and `assemble` remuxes the segments' packets and
the source's audio packets, unchanged, into one MP4 under a temporary name before the caller
renames it. Audio that MP4 cannot hold (e.g. ADPCM, mu-law, WMA) is re-encoded to AAC (logged);
subtitle and data streams are dropped.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from difface.config import DEFAULT_MAX_VIDEO_SECONDS

# re-exported: difface.video.io keeps every name it had before the split
from difface.video.encode import EncoderSettings, SegmentEncoder, assemble, even_size, pad_even  # noqa: F401
from difface.video.errors import (  # noqa: F401 (re-exported)
    CorruptVideoError,
    EmptyVideoError,
    NotAVideoError,
    NoVideoStreamError,
    VariableFrameRateError,
    VideoDependencyError,
    VideoError,
    VideoTooLargeError,
    require_av,
)

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts", ".m2ts",
                    ".wmv", ".flv", ".3gp", ".ogv", ".gif")
# FFmpeg reads text files as ANSI art ("tty") and single pictures as one-frame videos: neither is a clip.
_NOT_VIDEO_FORMATS = {"tty": "text, not a video", "image2": "a still image, not a video"}
_REORDER = 64  # packets kept to sort presentation timestamps while probing (B-frame depth is far less)
# Limits checked from the container header before any frame is decoded (and the duration again after the packet
# scan, as headers can lie): frames over the pixel limit of images (50 MP), clips over 5 minutes (7,500 frames at
# 25 frames/s: hours of work on a CPU) are refused unless asked for (--max-pixels, --max-video-seconds; 0: none).




def is_video_path(path: str | os.PathLike) -> bool:
    """True when the file name has a common video extension (routing only; nothing is read)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


@dataclass
class VideoInfo:
    """What `probe_video` learns about a clip.

    width, height: display size (after rotation); coded_width/height: as stored; rotation: the
    counter-clockwise display rotation in degrees (0, 90, 180, 270) applied to the pixels;
    fps: nominal frame rate; frames: counted packets of the video stream; duration: seconds from
    the first frame's start to the last frame's end; time_base and start_pts: of the video stream;
    variable_frame_rate: frame intervals differ by more than 10 % (min/max_interval in seconds);
    audio: (stream index, codec name) of each audio stream.
    """

    path: Path
    format: str
    codec: str
    width: int
    height: int
    coded_width: int
    coded_height: int
    rotation: int
    fps: Fraction
    frames: int
    duration: float
    time_base: Fraction
    start_pts: int
    variable_frame_rate: bool
    min_interval: float
    max_interval: float
    audio: list[tuple[int, str]] = field(default_factory=list)
    has_timestamps: bool = True
    end_pts: int | None = None

    def describe(self) -> str:
        vfr = (f", variable frame rate ({1 / self.max_interval:.2f}-{1 / self.min_interval:.2f} fps)"
               if self.variable_frame_rate else "")
        rot = f", rotated {self.rotation} deg" if self.rotation else ""
        aud = ", ".join(c for _, c in self.audio) or "no audio"
        return (f"{self.width}x{self.height} {self.codec}{rot}, {float(self.fps):.3f} fps, {self.frames} frames, "
                f"{self.duration:.3f} s{vfr}, {aud}")


@dataclass
class Frame:
    """One decoded frame: index in presentation order, pts and duration in the stream's time base
    (pts None when the file has no timestamps), and rgb (H, W, 3) uint8 in display orientation."""

    index: int
    pts: int | None
    duration: int
    rgb: np.ndarray


def _open_input(path: Path):
    av = require_av()
    if not path.is_file():
        raise NotAVideoError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    if path.stat().st_size == 0:
        raise NotAVideoError(f"{path}: file is empty (0 bytes)")
    try:
        container = av.open(str(path), metadata_errors="replace")
    except av.FFmpegError as e:
        raise NotAVideoError(f"{path}: not a readable video (corrupt, truncated or not a media file: "
                             f"{e.strerror or e})") from e
    fmt = container.format.name
    why = _NOT_VIDEO_FORMATS.get(fmt) or ("a still image, not a video" if fmt.endswith("_pipe") else None)
    if why:
        container.close()
        raise NotAVideoError(f"{path}: {why} (read as {fmt!r})")
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        container.close()
        raise NoVideoStreamError(f"{path}: no video stream (streams: {kinds})")
    return container


def _rotation(frame, stream) -> int:
    """Counter-clockwise display rotation (multiple of 90) from the display matrix or the rotate tag."""
    r = getattr(frame, "rotation", 0) or 0  # display matrix side data (PyAV >= 14), ccw degrees
    if not r:
        tag = stream.metadata.get("rotate")  # legacy tag: clockwise degrees
        try:
            r = -float(tag) if tag else 0
        except ValueError:
            r = 0
    k = int(round(float(r) / 90.0)) % 4
    if abs(float(r) - 90 * round(float(r) / 90.0)) > 1:
        log.warning("display rotation %.1f deg is not a multiple of 90; using %d", float(r), 90 * k)
    return 90 * k


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply a counter-clockwise display rotation (degrees, multiple of 90) to (H, W, C) pixels."""
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def _check_limits(path: Path, c, v, max_pixels: int | None, max_seconds: float | None) -> None:
    """VideoTooLargeError from the header: frame pixels over max_pixels, duration over max_seconds (None or 0:
    no limit). Also says when the container holds more than one video stream (the first is restored)."""
    w, h = v.codec_context.width or 0, v.codec_context.height or 0
    if max_pixels and w * h > max_pixels:
        raise VideoTooLargeError(f"{path}: frames are {w}x{h} = {w * h / 1e6:.1f} megapixels, over the limit of "
                                 f"{max_pixels / 1e6:g} MP (raise it with --max-pixels); nothing was decoded")
    if max_seconds:
        claimed = []
        if c.duration:
            claimed.append(c.duration / 1e6)  # AV_TIME_BASE
        if v.duration and v.time_base:
            claimed.append(float(v.duration * v.time_base))
        if claimed and max(claimed) > max_seconds:
            raise VideoTooLargeError(f"{path}: the clip lasts {max(claimed):.0f} s (from its header), over the "
                                     f"limit of {max_seconds:g} s; raise it with --max-video-seconds (0: no limit)")
    others = [s for s in c.streams.video[1:] if not (s.disposition & 0x400)]  # 0x400: attached picture (cover)
    if others:
        log.warning("%s: %d video streams; the first (stream #%d) is restored, the others are not in the output",
                    path, 1 + len(others), v.index)


@dataclass
class _PacketScan:
    """What one pass over a video stream's packets finds (timestamps in time-base ticks)."""

    frames: int = 0
    lo: float = math.inf  # smallest and largest interval between consecutive presentation timestamps
    hi: int = 0
    first: int | None = None
    prev: int | None = None  # the last presentation timestamp
    end: int | None = None  # the largest pts + duration
    no_pts: bool = False

    def take(self, p: int) -> None:
        if self.prev is None:
            self.first = p
        else:
            self.lo, self.hi = min(self.lo, p - self.prev), max(self.hi, p - self.prev)
        self.prev = p


def _scan_packets(path: Path, c, v) -> _PacketScan:
    """Count the packets of stream v of container c, sorting their timestamps in a small reorder window."""
    av = require_av()
    scan, heap = _PacketScan(), []
    try:
        for pkt in c.demux(v):
            if pkt.size == 0:
                continue
            if pkt.is_corrupt:
                raise CorruptVideoError(f"{path}: corrupt or truncated video data at frame {scan.frames}")
            scan.frames += 1
            if pkt.pts is None:
                scan.no_pts = True
                continue
            scan.end = max(scan.end if scan.end is not None else pkt.pts, pkt.pts + (pkt.duration or 0))
            heapq.heappush(heap, pkt.pts)
            if len(heap) > _REORDER:
                scan.take(heapq.heappop(heap))
    except av.FFmpegError as e:
        raise CorruptVideoError(f"{path}: unreadable video data after {scan.frames} frames ({e.strerror or e})") from e
    while heap:
        scan.take(heapq.heappop(heap))
    if scan.frames == 0:
        raise EmptyVideoError(f"{path}: the video stream has no frames")
    return scan


def _first_frame_rotation(path: Path, c, v) -> int:
    """The display rotation of the first frame (FFmpeg attaches the display matrix to frames)."""
    av = require_av()
    c.seek(0)
    try:
        for fr in c.decode(v):
            return _rotation(fr, v)
    except av.FFmpegError as e:
        raise CorruptVideoError(f"{path}: the first frame cannot be decoded ({e.strerror or e})") from e
    return 0


def probe_video(path: str | os.PathLike, *, max_pixels: int | None = None,
                max_seconds: float | None = DEFAULT_MAX_VIDEO_SECONDS) -> VideoInfo:
    """Read a clip's stream parameters and scan its packets (no decoding except the first frame).

    Counts the frames, measures the frame intervals (variable frame rate), and finds corrupt or
    truncated packets. Memory is bounded: timestamps are sorted in a small reorder window.
    max_pixels / max_seconds: limits checked from the header before anything is decoded (None or 0: none).
    Raises NotAVideoError, NoVideoStreamError, EmptyVideoError, CorruptVideoError or VideoTooLargeError naming
    the file.
    """
    path = Path(path)
    c = _open_input(path)
    try:
        v = c.streams.video[0]
        _check_limits(path, c, v, max_pixels, max_seconds)
        tb = Fraction(v.time_base) if v.time_base else Fraction(1, 90000)
        scan = _scan_packets(path, c, v)
        n, lo, hi, first, end, prev = scan.frames, scan.lo, scan.hi, scan.first, scan.end, scan.prev
        no_pts = scan.no_pts
        rate = v.average_rate or v.guessed_rate or v.base_rate
        if not rate and lo < math.inf and lo > 0:
            rate = 1 / (Fraction((lo + hi), 2) * tb)
        fps = Fraction(rate).limit_denominator(1_000_000) if rate else Fraction(25)
        nominal = 1 / (fps * tb)  # ticks per frame
        if n > 1 and lo < math.inf and not no_pts:
            vfr = (hi - lo) > max(2.0, 0.1 * float(nominal))
        else:
            vfr = False
        if first is not None and end is not None and not no_pts:
            if end <= prev:  # packets without durations: the last frame lasts one nominal interval
                end = prev + (hi if hi > 0 else nominal)
            duration = float((end - first) * tb)
        else:
            duration = float(n / fps)
        if max_seconds and duration > max_seconds:  # a header that understated the length
            raise VideoTooLargeError(f"{path}: the clip lasts {duration:.0f} s, over the limit of {max_seconds:g} s; "
                                     "raise it with --max-video-seconds (0: no limit)")
        rotation = _first_frame_rotation(path, c, v)
        cw, ch = v.codec_context.width, v.codec_context.height
        w, h = (ch, cw) if rotation in (90, 270) else (cw, ch)
        audio = [(s.index, s.codec_context.name) for s in c.streams.audio]
        ticks = float(tb)
        return VideoInfo(path, c.format.name, v.codec_context.name, w, h, cw, ch, rotation, fps, n, duration,
                         tb, int(first or 0), bool(vfr), (lo if lo < math.inf else 0) * ticks, hi * ticks, audio,
                         not no_pts, None if no_pts or end is None else int(end))
    finally:
        c.close()


def check_frame_rate(info: VideoInfo, refuse: bool = False) -> None:
    """Log (or, with refuse, raise VariableFrameRateError) for a variable-frame-rate clip."""
    if not info.variable_frame_rate:
        return
    msg = (f"{info.path}: variable frame rate (frame intervals {info.min_interval * 1000:.1f} to "
           f"{info.max_interval * 1000:.1f} ms)")
    if refuse:
        raise VariableFrameRateError(msg + "; refused (convert it to a constant rate first)")
    log.warning("%s; every frame keeps its own timestamp, so the output has the same timing", msg)


def read_frames(path: str | os.PathLike, info: VideoInfo | None = None, *, start: int = 0) -> Iterator[Frame]:
    """Decode a clip frame by frame (streaming), in display orientation, from frame `start` on.

    A frame's duration is the interval to the next frame's pts (the last one lasts until the
    stream's end), so that re-encoded frames keep the source's timing exactly. Frames before
    `start` are decoded and dropped (exact, unlike seeking). When the file yields fewer frames than
    `info.frames`, or the decoder fails, raises CorruptVideoError naming the file.
    """
    av = require_av()
    path = Path(path)
    info = info or probe_video(path, max_seconds=None)
    c = _open_input(path)
    try:
        v = c.streams.video[0]
        v.thread_type = "AUTO"
        i = 0
        nominal = max(1, round(1 / (info.fps * info.time_base)))
        held: Frame | None = None  # one frame of look-ahead, for its duration
        try:
            for fr in c.decode(v):
                pts = fr.pts if info.has_timestamps else None
                if held is not None:
                    gap = pts - held.pts if pts is not None and held.pts is not None else 0
                    held.duration = gap if gap > 0 else nominal
                    yield held
                    held = None
                if i >= start:
                    held = Frame(i, pts, nominal, upright(fr.to_ndarray(format="rgb24"), info.rotation))
                i += 1
        except av.FFmpegError as e:
            raise CorruptVideoError(f"{path}: cannot decode frame {i} ({e.strerror or e}); "
                                    "the file is corrupt or truncated") from e
        if held is not None:
            if held.pts is not None and info.end_pts is not None and info.end_pts > held.pts:
                held.duration = info.end_pts - held.pts
            yield held
        if i < info.frames:
            raise CorruptVideoError(f"{path}: only {i} of {info.frames} frames could be decoded; "
                                    "the file is corrupt or truncated")
    finally:
        c.close()
