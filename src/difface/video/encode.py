"""Writing video through PyAV: H.264 segments (`SegmentEncoder`) and their assembly with the source's audio
into one MP4 (`assemble`); see difface.video.io for why writing is split in two."""

from __future__ import annotations

import heapq
import logging
import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from difface.config import DEFAULT_CRF, DEFAULT_X264_PRESET
from difface.video.errors import require_av

log = logging.getLogger(__name__)


def even_size(height: int, width: int) -> tuple[int, int]:
    """(H, W) rounded up to even numbers (yuv420p needs them)."""
    return height + height % 2, width + width % 2


def pad_even(rgb: np.ndarray) -> np.ndarray:
    """Pad (H, W, 3) to even sides by repeating the last row/column (geometry unchanged)."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


@dataclass
class EncoderSettings:
    """H.264 (libx264) settings: crf 0-51 (lower is better; 18 is visually near-lossless), x264 preset."""

    crf: int = DEFAULT_CRF
    preset: str = DEFAULT_X264_PRESET

    def options(self) -> dict[str, str]:
        if not 0 <= int(self.crf) <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")
        return {"crf": str(int(self.crf)), "preset": self.preset}


class SegmentEncoder:
    """Encode frames into one closed H.264/MP4 segment (video only, yuv420p, no B-frames).

    Frames carry their source pts in `time_base`; frames without pts get index-based ones.
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps: Fraction, time_base: Fraction,
                 settings: EncoderSettings | None = None) -> None:
        av = require_av()
        if width % 2 or height % 2:
            raise ValueError(f"H.264 yuv420p needs even sides, got {width}x{height}")
        self.path, self.time_base = Path(path), Fraction(time_base)
        self._out = av.open(str(self.path), "w", format="mp4")
        s = self._out.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.time_base = self.time_base
        s.codec_context.time_base = self.time_base
        s.codec_context.max_b_frames = 0  # segments must concatenate with monotonic dts
        s.options = (settings or EncoderSettings()).options()
        self._stream, self._durations = s, deque()
        self.frames = 0

    def _mux(self, packets) -> None:
        for p in packets:
            if not p.duration and self._durations:
                p.duration = self._durations.popleft()
            elif self._durations:
                self._durations.popleft()
            self._out.mux(p)

    def write(self, rgb: np.ndarray, pts: int, duration: int) -> None:
        """Encode one (H, W, 3) uint8 RGB frame shown at `pts` for `duration` (time-base ticks)."""
        av = require_av()
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, np.uint8), format="rgb24")
        f.pts, f.time_base = int(pts), self.time_base
        self._durations.append(int(duration))
        self._mux(self._stream.encode(f))
        self.frames += 1

    def close(self) -> None:
        self._mux(self._stream.encode(None))
        self._out.close()

    def abort(self) -> None:
        try:
            self._out.close()
        except Exception:  # noqa: BLE001 - the half-written segment is deleted anyway
            pass
        self.path.unlink(missing_ok=True)


def _packets(path: Path, kind: str) -> Iterator:
    """(time in seconds, packet) of every non-empty packet of the streams of `kind`, in file order."""
    av = require_av()
    with av.open(str(path), metadata_errors="replace") as c:
        streams = list(getattr(c.streams, kind))
        if not streams:
            return
        for p in c.demux(*streams):
            if p.size == 0:
                continue
            t = p.dts if p.dts is not None else p.pts
            yield (float(t * p.time_base) if t is not None else -math.inf), p


def _encoded(path: Path, index: int, stream) -> Iterator:
    """(time, packet, stream) of audio stream `index` of `path` decoded and re-encoded with `stream`."""
    av = require_av()
    with av.open(str(path), metadata_errors="replace") as c:
        s = next(x for x in c.streams.audio if x.index == index)
        frames = c.decode(s)
        for fr in _with_flush(frames):
            for p in stream.encode(fr):
                t = p.dts if p.dts is not None else p.pts
                yield (float(t * p.time_base) if t is not None else -math.inf), p, stream


def _with_flush(frames: Iterator) -> Iterator:
    yield from frames
    yield None


def assemble(segments: list[Path], dst: str | os.PathLike, audio_source: str | os.PathLike | None = None) -> dict:
    """Concatenate H.264 segments (their packets, unchanged) and the source's audio into one MP4.

    Audio packets are copied unchanged (same bytes and timestamps) when MP4 can hold the codec;
    otherwise that stream is decoded and re-encoded to AAC (96 kb/s per channel). Returns
    {"video_packets", "audio_copied": [codec...], "audio_reencoded": [codec...]}.
    """
    av = require_av()
    dst = Path(dst)
    first = av.open(str(segments[0]))
    # The edit list gives start offsets in the movie timescale (1 ms by default): use the video
    # stream's own time base, so that the first frame keeps its exact timestamp.
    den = Fraction(first.streams.video[0].time_base).denominator
    out = av.open(str(dst), "w", format="mp4", options={"movie_timescale": str(den)} if den < 2**31 else {})
    report = {"video_packets": 0, "audio_copied": [], "audio_reencoded": []}
    try:
        vout = out.add_stream_from_template(first.streams.video[0])
        first.close()
        copy, enc = {}, {}
        if audio_source is not None:
            with av.open(str(audio_source), metadata_errors="replace") as src:
                for a in src.streams.audio:
                    name = a.codec_context.name
                    if name in out.supported_codecs:
                        copy[a.index] = out.add_stream_from_template(a)
                        report["audio_copied"].append(name)
                    else:
                        channels = max(1, a.codec_context.channels or 2)
                        # an unordered layout ("1 channels") is not a layout name the encoder takes
                        layout = {1: "mono", 2: "stereo"}.get(channels) or a.codec_context.layout.name
                        rate = a.codec_context.sample_rate or 48000
                        s = out.add_stream("aac", rate=rate, layout=layout)
                        s.bit_rate = channels * min(96_000, int(5 * rate))  # AAC allows < 6 bits per sample
                        enc[a.index] = s
                        report["audio_reencoded"].append(name)
                        log.warning("%s: %s audio cannot go into MP4 unchanged; re-encoded to AAC %d kb/s",
                                    audio_source, name, s.bit_rate // 1000)

        def video() -> Iterator:
            for seg in segments:
                for t, p in _packets(seg, "video"):
                    yield t, p, vout

        gens = [video()]
        if copy:
            gens.append((t, p, copy[p.stream.index]) for t, p in _packets(Path(audio_source), "audio")
                        if p.stream.index in copy)
        gens += [_encoded(Path(audio_source), i, s) for i, s in enc.items()]
        for _, p, ostream in heapq.merge(*gens, key=lambda x: x[0]):
            p.stream = ostream
            out.mux(p)
            report["video_packets"] += ostream is vout
    finally:
        out.close()
    return report
