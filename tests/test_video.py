"""Video: PyAV decode/encode, audio remux, rotation, atomic/resumable output, bad clips, tracking,
smoothing, per-track seeds, bounded memory. Clips are made by `difface.video.synth` (the code path of
scripts/maintainer/make_test_clip.py) from scikit-image's public-domain astronaut, so no shared data is needed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

av = pytest.importorskip("av", reason="PyAV is the optional 'video' extra: pip install 'difface[video]'")

from difface.face import get_detector  # noqa: E402
from difface.face.detect import Detections  # noqa: E402
from difface.video import (  # noqa: E402
    CorruptVideoError,
    EmptyVideoError,
    FaceParts,
    FaceTracker,
    NotAVideoError,
    NoVideoStreamError,
    VariableFrameRateError,
    VideoOptions,
    probe_video,
    read_frames,
    restore_video,
    smooth_landmarks,
)
from difface.video.synth import CameraPath, ClipSpec, Degradation, group_photo_from, make_clip  # noqa: E402

SIZE = (256, 144)
OPTS = dict(det_min_side=144, segment_seconds=0.4, preset="ultrafast")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small networks on tiny frames: threads only add overhead
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    from skimage import data

    return group_photo_from(data.astronaut(), 3, 240)


@pytest.fixture(scope="module")
def detector():
    return get_detector("mtcnn")


@pytest.fixture(scope="module")
def clip(tmp_path_factory, photo) -> Path:
    path = tmp_path_factory.mktemp("clips") / "pan.mp4"
    make_clip(photo, path, ClipSpec(size=SIZE, fps=25, seconds=1.2, seed=3))
    return path


def invert(x: torch.Tensor, seeds: list[int]) -> torch.Tensor:
    """A stand-in face restorer: a fixed colour transform of the crop."""
    assert len(seeds) == len(x)
    return 1.0 - x


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        return [(float(p.pts * p.time_base), bytes(p)) for p in c.demux(s) if p.size]


def video_times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return sorted(p.pts * v.time_base for p in c.demux(v) if p.size)


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


def test_restore_keeps_frames_rate_duration_and_audio(clip, detector, tmp_path):
    src = probe_video(clip)
    assert (src.width, src.height, src.frames, src.fps) == (*SIZE, 30, 25) and src.audio
    log: list = []
    res = restore_video(clip, tmp_path / "out.mp4", FaceParts(invert, detector, 64),
                        upscale=2, options=VideoOptions(**OPTS), progress=False, on_frame=log.append)
    out = probe_video(tmp_path / "out.mp4")
    assert (out.width, out.height) == (2 * SIZE[0], 2 * SIZE[1])
    assert out.frames == src.frames == res.frames and out.fps == src.fps
    assert out.duration == pytest.approx(src.duration, abs=1e-6)
    assert video_times(tmp_path / "out.mp4") == video_times(clip)
    assert audio_packets(tmp_path / "out.mp4") == audio_packets(clip)  # same bytes at the same times
    assert res.audio["audio_copied"] == ["aac"] and res.faces >= 30 and res.tracks >= 2
    assert not list(tmp_path.glob(".*"))  # the work folder is gone
    # The restorer's effect is where the faces are: at a nose landmark the output is the inverted input.
    frames_in = [f.rgb for f in read_frames(clip)]
    frames_out = [f.rgb for f in read_frames(tmp_path / "out.mp4")]
    diffs = []
    for ff in log[::5]:
        for x, y in ff.landmarks[:, 2]:
            xi, yi = int(round(x)), int(round(y))
            a = frames_in[ff.index][yi, xi].astype(float)
            b = frames_out[ff.index][2 * yi, 2 * xi].astype(float)
            diffs.append(np.abs(255 - a - b).mean())
    assert diffs and np.median(diffs) < 20


@pytest.mark.skipif(not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
                    reason="writing a display matrix needs PyAV >= 17 (reading it works from 16)")
def test_rotation_is_applied_to_the_pixels(photo, detector, tmp_path):
    kw = dict(size=(96, 64), fps=10, seconds=0.5, degradation=None, audio=False, crf=0)
    make_clip(photo, tmp_path / "plain.mp4", ClipSpec(**kw))
    make_clip(photo, tmp_path / "rot.mp4", ClipSpec(rotation=90, **kw))
    info = probe_video(tmp_path / "rot.mp4")
    assert info.rotation == 90 and (info.coded_width, info.coded_height) == (64, 96)
    assert (info.width, info.height) == (96, 64)
    plain = [f.rgb for f in read_frames(tmp_path / "plain.mp4")]
    rot = [f.rgb for f in read_frames(tmp_path / "rot.mp4", info)]
    assert rot[0].shape == (64, 96, 3)
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(plain, rot)) < 2.0
    restore_video(tmp_path / "rot.mp4", tmp_path / "out.mp4", FaceParts(invert, detector, 64),
                  upscale=1, options=VideoOptions(det_min_side=64), progress=False)
    out = probe_video(tmp_path / "out.mp4")
    assert (out.width, out.height, out.rotation) == (96, 64, 0)


class _Fails:
    """A restorer that raises on its n-th call (a crash mid-way), counting calls."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, x, seeds):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("simulated crash")
        return 1.0 - x


def test_interrupted_run_leaves_no_output_and_resumes(clip, detector, tmp_path):
    opts = VideoOptions(**OPTS, batch_frames=2)
    dst = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="simulated crash"):
        restore_video(clip, dst, FaceParts(_Fails(fail_at=12), detector, 64), upscale=1,
                      options=opts, progress=False)
    assert not dst.exists()
    manifest = json.loads((tmp_path / ".out.mp4.parts" / "manifest.json").read_text())
    assert manifest["segments"]  # complete segments were kept for the rerun
    second = _Fails()
    res = restore_video(clip, dst, FaceParts(second, detector, 64), upscale=1,
                        options=opts, progress=False)
    assert res.resumed_frames == manifest["segments"][-1]["end"] > 0
    fresh = _Fails()
    restore_video(clip, tmp_path / "fresh.mp4", FaceParts(fresh, detector, 64), upscale=1,
                  options=opts, progress=False)
    assert second.calls < fresh.calls
    # Resuming gives the same video as an uninterrupted run (tracker state restored at the segment).
    assert video_packets(dst) == video_packets(tmp_path / "fresh.mp4")
    assert audio_packets(dst) == audio_packets(clip)
    assert not (tmp_path / ".out.mp4.parts").exists()


def test_changed_options_start_over(clip, detector, tmp_path):
    dst = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        restore_video(clip, dst, FaceParts(_Fails(fail_at=12), detector, 64), upscale=1,
                      options=VideoOptions(**OPTS, batch_frames=2), progress=False)
    res = restore_video(clip, dst, FaceParts(_Fails(), detector, 64), upscale=1,
                        options=VideoOptions(**OPTS, batch_frames=2, seed=7), progress=False)
    assert res.resumed_frames == 0 and probe_video(dst).frames == 30


def _write(path: Path, fmt: str, codec: str, pts: list[int] | None = None, tb=Fraction(1, 1000)) -> Path:
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        if pts is None:
            out.start_encoding()
            return path
        s.time_base = s.codec_context.time_base = tb
        for i, p in enumerate(pts):
            f = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = p, tb
            out.mux(s.encode(f))
        out.mux(s.encode(None))
    return path


def test_bad_clips_get_clear_errors(clip, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 50)
    with pytest.raises(NotAVideoError, match="notes.mp4"):
        probe_video(text)
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(NotAVideoError, match="empty.mp4: file is empty"):
        probe_video(tmp_path / "empty.mp4")
    with pytest.raises(NotAVideoError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")
    import cv2

    cv2.imwrite(str(tmp_path / "still.png"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(NotAVideoError, match="still image"):
        probe_video(tmp_path / "still.png")
    data = clip.read_bytes()  # make_clip writes the index last: cutting the end loses it
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(NotAVideoError, match="cut.mp4: .*truncated"):
        probe_video(tmp_path / "cut.mp4")
    # index first (faststart), then the data cut short: found by the packet scan or the decoder
    fast = tmp_path / "fast.mp4"
    with av.open(str(clip)) as c, av.open(str(fast), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        s = out.add_stream_from_template(c.streams.video[0])
        for p in c.demux(c.streams.video[0]):
            if p.size:
                p.stream = s
                out.mux(p)
    data = fast.read_bytes()
    (tmp_path / "fastcut.mp4").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(CorruptVideoError, match="fastcut.mp4: .*(corrupt|truncated)"):
        info = probe_video(tmp_path / "fastcut.mp4")
        for _ in read_frames(tmp_path / "fastcut.mp4", info):
            pass
    audio_only = tmp_path / "sound.m4a"
    with av.open(str(audio_only), "w", format="mp4") as out:
        s = out.add_stream("aac", rate=8000, layout="mono")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 8000, 0
        out.mux(s.encode(f))
        out.mux(s.encode(None))
    with pytest.raises(NoVideoStreamError, match="sound.m4a: no video stream"):
        probe_video(audio_only)
    with pytest.raises(EmptyVideoError, match="zero.avi: the video stream has no frames"):
        probe_video(_write(tmp_path / "zero.avi", "avi", "mpeg4"))


def test_other_containers_and_audio_mp4_cannot_hold(photo, detector, tmp_path):
    """MKV (H.264 + AAC): audio copied. AVI (MPEG-4 part 2 + MS ADPCM): ADPCM cannot go into MP4,
    so it is re-encoded to AAC of the same length."""
    mp4 = tmp_path / "a.mp4"
    make_clip(photo, mp4, ClipSpec(size=(96, 64), fps=10, seconds=0.6, degradation=None))
    mkv = tmp_path / "a.mkv"
    with av.open(str(mp4)) as c, av.open(str(mkv), "w", format="matroska") as out:
        ins = [c.streams.video[0], c.streams.audio[0]]
        outs = {s.index: out.add_stream_from_template(s) for s in ins}
        for p in c.demux(*ins):
            if p.size:
                p.stream = outs[p.stream.index]
                out.mux(p)
    res = restore_video(mkv, tmp_path / "mkv.mp4", FaceParts(invert, detector, 64), upscale=1,
                        options=VideoOptions(det_min_side=64), progress=False)
    assert res.audio["audio_copied"] == ["aac"] and probe_video(tmp_path / "mkv.mp4").frames == 6
    assert [b for _, b in audio_packets(tmp_path / "mkv.mp4")] == [b for _, b in audio_packets(mkv)]
    avi = tmp_path / "b.avi"
    with av.open(str(avi), "w") as out:
        v = out.add_stream("mpeg4", rate=10)
        v.width, v.height, v.pix_fmt = 96, 64, "yuv420p"
        a = out.add_stream("adpcm_ms", rate=22050, layout="mono")
        for f in read_frames(mp4):
            vf = av.VideoFrame.from_ndarray(f.rgb, format="rgb24")
            vf.pts = f.index
            out.mux(v.encode(vf))
        out.mux(v.encode(None))
        pcm = (8000 * np.sin(np.arange(13230) * 0.1)).astype(np.int16)[None]
        af = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        af.sample_rate, af.pts = 22050, 0
        out.mux(a.encode(af))
        out.mux(a.encode(None))
    res = restore_video(avi, tmp_path / "avi.mp4", FaceParts(invert, detector, 64), upscale=1,
                        options=VideoOptions(det_min_side=64), progress=False)
    assert res.audio["audio_reencoded"] == ["adpcm_ms"]
    with av.open(str(tmp_path / "avi.mp4")) as c:
        s = c.streams.audio[0]
        assert s.codec_context.name == "aac" and float(s.duration * s.time_base) == pytest.approx(0.6, abs=0.05)
    assert probe_video(tmp_path / "avi.mp4").frames == 6


def test_variable_frame_rate_keeps_timestamps_or_is_refused(detector, tmp_path):
    src = _write(tmp_path / "vfr.mp4", "mp4", "libx264", [0, 40, 80, 200, 240, 400, 440, 480])
    info = probe_video(src)
    assert info.variable_frame_rate and info.frames == 8
    with pytest.raises(VariableFrameRateError, match="vfr.mp4: variable frame rate"):
        restore_video(src, tmp_path / "a.mp4", FaceParts(invert, detector, 64), upscale=1,
                      options=VideoOptions(refuse_vfr=True), progress=False)
    restore_video(src, tmp_path / "b.mp4", FaceParts(invert, detector, 64), upscale=1,
                  options=VideoOptions(det_min_side=48), progress=False)
    assert video_times(tmp_path / "b.mp4") == video_times(src)
    assert probe_video(tmp_path / "b.mp4").duration == pytest.approx(info.duration, abs=1e-6)
    assert not probe_video(_write(tmp_path / "cfr.mp4", "mp4", "libx264", [40 * i for i in range(8)])
                           ).variable_frame_rate


def test_one_seed_per_track_and_fresh_seeds_without(clip, detector, tmp_path):
    seeds_of: dict[int, set[int]] = {}
    log: list = []

    def on_frame(ff):
        log.append(ff)
        for tid, s in zip(ff.track_ids, ff.seeds):
            seeds_of.setdefault(tid, set()).add(s)

    restore_video(clip, tmp_path / "a.mp4", FaceParts(invert, detector, 64), upscale=1,
                  options=VideoOptions(**OPTS), progress=False, on_frame=on_frame)
    assert seeds_of and all(len(s) == 1 for s in seeds_of.values())
    assert len({next(iter(s)) for s in seeds_of.values()}) == len(seeds_of)  # tracks differ
    assert max(sum(ff.index in range(30) for ff in log if tid in ff.track_ids) for tid in seeds_of) >= 20
    indep: list = []
    restore_video(clip, tmp_path / "b.mp4", FaceParts(invert, detector, 64), upscale=1,
                  options=VideoOptions.independent(**OPTS), progress=False, on_frame=indep.append)
    seeds = [s for ff in indep for s in ff.seeds]
    assert len(seeds) > 20 and len(set(seeds)) == len(seeds)
    assert all(t == -1 for ff in indep for t in ff.track_ids)


def test_batching_groups_faces_of_several_frames(clip, detector, tmp_path):
    sizes: list[int] = []

    def restorer(x, seeds):
        sizes.append(len(x))
        return 1.0 - x

    restore_video(clip, tmp_path / "a.mp4", FaceParts(restorer, detector, 64), upscale=1,
                  options=VideoOptions(**OPTS, batch_frames=8, batch_size=64), progress=False)
    per_frame: list[int] = []
    restore_video(clip, tmp_path / "b.mp4", FaceParts(lambda x, s: per_frame.append(len(x)) or 1.0 - x, detector, 64),
                  upscale=1, options=VideoOptions(**OPTS, batch_frames=1), progress=False)
    assert sum(sizes) == sum(per_frame) and max(sizes) > max(per_frame) and len(sizes) < len(per_frame)


def test_smoothing_removes_jitter_without_lag():
    rng = np.random.default_rng(0)
    base = np.array([[40, 50], [60, 50], [50, 60], [43, 70], [57, 70]], np.float64)
    frames = 60
    truth = {t: base + np.array([1.5 * t, 0.3 * t]) * (1 + 0.002 * t) for t in range(frames)}
    noisy = {t: v + rng.normal(0, 1.5, v.shape) for t, v in truth.items()}
    del noisy[30]  # a missed detection
    err_raw = np.sqrt(np.mean([(noisy[t] - truth[t]) ** 2 for t in noisy]))
    sm = {t: smooth_landmarks(noisy, t, radius=4) for t in range(frames)}
    assert sm[30] is not None  # filled from both sides
    err_s = np.sqrt(np.mean([(sm[t] - truth[t]) ** 2 for t in range(4, frames - 4)]))
    assert err_s < 0.5 * err_raw
    jitter = lambda d: np.mean([np.abs(np.diff([d[t][0, 0] for t in range(5, 55) if t in d], 2))])  # noqa: E731
    assert jitter(sm) < 0.3 * jitter(noisy)
    exact = {t: smooth_landmarks({k: v for k, v in truth.items()}, t, radius=4) for t in range(frames)}
    assert max(np.abs(exact[t] - truth[t]).max() for t in range(frames)) < 0.05  # a steady pan: no lag
    assert smooth_landmarks({0: base, 1: base}, 5, radius=4) is None  # no extrapolation past the track


def test_tracker_births_deaths_and_identity():
    tr = FaceTracker(seed=1, max_missing=2)
    lm = np.array([[10, 10], [20, 10], [15, 15], [11, 20], [19, 20]], np.float32)

    def det(*offsets):
        boxes = [[5 + dx, 5, 25 + dx, 25] for dx in offsets]
        return Detections(boxes, [0.99] * len(offsets), [lm + [dx, 0] for dx in offsets])

    assert tr.update(0, det(0, 100)) == [0, 1]
    assert tr.update(1, det(103, 2)) == [1, 0]  # order-independent matching, moving faces
    assert tr.update(2, det(4)) == [0]
    assert tr.update(6, det(106)) == [2]  # track 1 died after 2 missed frames; a new one is born
    assert tr.seed_of(0) != tr.seed_of(1)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads VmRSS and VmHWM from /proc/self/status (Linux)")
def test_bounded_memory_on_a_long_clip(photo, tmp_path):
    """Peak RSS of a subprocess restoring a 500-frame clip hardly grows after its first 100 frames:
    far less than the 400 decoded frames that full-clip buffering would add."""
    size, frames = (320, 180), 500
    # VmHWM, not ru_maxrss: after fork + exec, ru_maxrss still counts the (large) pytest parent.
    script = textwrap.dedent("""
        import re, sys, torch
        torch.set_num_threads(1)
        from difface.face import get_detector
        from difface.video import FaceParts, VideoOptions, restore_video
        def mib(field):
            return int(re.search(field + r":\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
        rss = {}
        def on_frame(ff):
            if ff.index == 100:
                rss["warm"] = mib("VmRSS")
        restore_video(sys.argv[1], sys.argv[2], FaceParts(lambda x, s: 1.0 - x, get_detector("mtcnn"), 64),
                      upscale=1, progress=False, on_frame=on_frame,
                      options=VideoOptions(det_max_side=160, segment_seconds=2, preset="ultrafast"))
        print(rss["warm"], mib("VmHWM"))
    """)
    src, dst = tmp_path / "long.mp4", tmp_path / "out.mp4"
    make_clip(photo, src, ClipSpec(size=size, fps=25, seconds=frames / 25, camera=CameraPath(zoom0=1.0, zoom1=1.1),
              degradation=Degradation(noise=2), crf=30))
    r = subprocess.run([sys.executable, "-c", script, str(src), str(dst)], capture_output=True, text=True, check=True)
    warm, peak = (float(v) for v in r.stdout.split()[-2:])
    assert probe_video(dst).frames == frames
    buffered = (frames - 100) * size[0] * size[1] * 3 / 2**20  # MiB that buffering the rest as uint8 would add
    assert peak - warm < 0.25 * buffered, (warm, peak, buffered)


@pytest.mark.slow  # 4-6 s: with the slow checks (the default run stays under 4 minutes)
def test_real_model_same_noise_per_track_steadies_a_still_shot(photo, detector, tmp_path):
    """The bundled DifFace model on a clip of a still shot (identical frames): with one seed per
    track the restored frames are identical; with per-frame seeds they differ."""
    from difface.core import DifFace
    from difface.video import model_restorer

    still = CameraPath(center0=(0.5, 0.3), center1=(0.5, 0.3), zoom0=2.2, zoom1=2.2)
    src = tmp_path / "still.mp4"
    make_clip(photo, src, ClipSpec(size=(128, 96), fps=10, seconds=0.4, camera=still, degradation=None, audio=False,
                                   crf=0))
    model = DifFace.from_pretrained(device="cpu")
    rf = model_restorer(model, start_step=5)
    outs = {}
    for name, opts in {"track": VideoOptions(det_min_side=96, crf=0),
                       "indep": VideoOptions.independent(det_min_side=96, crf=0)}.items():
        res = restore_video(src, tmp_path / f"{name}.mp4", FaceParts(rf, detector, model.image_size),
                            upscale=1, options=opts, progress=False)
        assert res.faces >= 4
        fr = [f.rgb.astype(float) for f in read_frames(tmp_path / f"{name}.mp4")]
        outs[name] = np.mean([np.abs(a - b).mean() for a, b in zip(fr, fr[1:])])
    assert outs["track"] < 0.05 and outs["indep"] > 10 * max(outs["track"], 0.01), outs


@pytest.mark.slow
def test_make_test_clip_script_on_a_shared_group_photo(tmp_path):
    """scripts/maintainer/make_test_clip.py on the Solvay photo (research-only, read from ../shared/data)."""
    from conftest import shared_data

    photo = shared_data("real-world", "difface-testdata", "Solvay_conference_1927.png")
    out = tmp_path / "solvay.mp4"
    script = Path(__file__).resolve().parents[1] / "scripts" / "maintainer" / "make_test_clip.py"
    r = subprocess.run([sys.executable, str(script), "--photo", str(photo), "-o", str(out), "--size", "320x180",
                        "--fps", "12.5", "--seconds", "0.8"], capture_output=True, text=True, check=True)
    assert "10 frames at 12.5 fps" in r.stdout
    info = probe_video(out)
    assert (info.width, info.height, info.frames, info.fps) == (320, 180, 10, Fraction(25, 2)) and info.audio
    meta = json.loads(out.with_suffix(".json").read_text())
    assert len(meta["matrices"]) == 10 and len(meta["faces"]) >= 20  # the 1927 photo has 29 detectable faces
