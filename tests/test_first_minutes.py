"""What a new user meets in the first minutes: usage errors, one-time notices about
sampling settings, the hole that inpainting fills, the background-upsampler suggestion, gray and face-less
clips. Every test runs the real command (difface.cli.main) or the real video path on small data."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import run_cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"  # public-domain astronaut
FACE, PHOTO = EXAMPLES / "astronaut_face.png", EXAMPLES / "astronaut_lq.png"


@pytest.fixture
def faces(tmp_path) -> Path:
    """Two aligned 64 px faces (the astronaut and its mirror image)."""
    d = tmp_path / "faces"
    d.mkdir()
    im = cv2.imread(str(FACE))
    cv2.imwrite(str(d / "a.png"), im)
    cv2.imwrite(str(d / "b.png"), im[:, ::-1])
    return d


def test_unknown_option_is_said_in_one_line_by_the_command(tmp_path, capsys):
    status, err = run_cli(["restore", PHOTO, "-o", tmp_path, "--bogus", "2"], capsys)
    assert status == 2
    assert err == "difface restore: unknown option --bogus; `difface restore --help` lists the options\n"
    status, err = run_cli(["weights", "list", "--bogus"], capsys)
    assert status == 2 and err.startswith("difface weights list: unknown option --bogus")
    status, err = run_cli(["restore", PHOTO, "-o", tmp_path, "extra"], capsys)  # not an option: argparse says it
    assert status == 2 and "usage: difface restore" in err


def test_evaluate_without_ground_truth_counts_images_not_pairs(tmp_path, capsys):
    d = tmp_path / "pred"
    d.mkdir()
    for k in range(2):
        im = cv2.resize(cv2.imread(str(PHOTO)), (256, 256))
        cv2.imwrite(str(d / f"{k}.png"), im if k == 0 else im[:, ::-1])
    status, out = run_cli(["evaluate", "--pred", d, "--no-progress"], capsys)
    assert status == 0, out
    assert f"2 of 2 image(s) scored from {d}" in out and "pair" not in out


def test_sampler_with_start_step_zero_is_said_once(faces, tmp_path, capsys):
    status, err = run_cli(["restore", faces, "-o", tmp_path / "out", "--aligned", "--sampler", "ddim",
                        "--start-step", "0"], capsys)
    assert status == 0, err
    assert err.count("warning: --sampler ddim does nothing with --start-step 0") == 1


def test_fixed_start_far_above_auto_is_said_once(faces, tmp_path, capsys):
    common = ["restore", faces, "-o", tmp_path / "out", "--aligned", "--sampler", "ddim", "--nfe", "1"]
    status, err = run_cli([*common, "--start-step", "100"], capsys)
    assert status == 0, err
    assert err.count("is far above what this model's auto rule chooses") == 1, err
    # the bundled rule's ceiling is its t_cap (400), step 100 of ddim250: derived from the rule, not the test
    assert "and at most 100 (t = 400) for any face" in err
    status, err = run_cli([*common, "--start-step", "2"], capsys)  # auto chooses 0 for these faces: 2 is not far
    assert status == 0 and "far above" not in err and "does nothing" not in err


def test_inpaint_reports_the_hole_and_doubts_black_cloth(tmp_path, capsys):
    # the astronaut's aligned face has 47 exactly black pixels: its suit, at the bottom edge
    status, err = run_cli(["inpaint", FACE, "-o", tmp_path / "a", "--start-step", "0"], capsys)
    assert status == 0, err
    assert f"{FACE}: hole: 47 pixel(s) (1.1 % of the face)" in err
    assert err.count("does not look like a drawn hole") == 1
    assert "tiny (under 2 % of the face)" in err and "on the border" in err
    drawn = cv2.imread(str(FACE))
    drawn[20:30, 18:44] = 0  # a box across the eyes, as someone draws a hole
    drawn[40:] = np.maximum(drawn[40:], 1)  # and no black suit
    cv2.imwrite(str(tmp_path / "drawn.png"), drawn)
    status, err = run_cli(["inpaint", tmp_path / "drawn.png", "-o", tmp_path / "b", "--start-step", "0"], capsys)
    assert status == 0, err
    assert "hole: 260 pixel(s) (6.3 % of the face)" in err and "does not look like" not in err


def test_black_hole_doubts_on_made_masks():
    from difface.pipeline.inpaint import black_hole_doubts

    box = np.zeros((64, 64), bool)
    box[20:40, 16:48] = True
    assert black_hole_doubts(box) == []
    frame = np.zeros((64, 64), bool)
    frame[:, :10] = frame[:8, :] = True  # outpainting: whole columns and rows along two sides
    assert black_hole_doubts(frame) == []
    dots = np.random.default_rng(0).random((64, 64)) < 0.05
    assert [d.split(" (")[0] for d in black_hole_doubts(dots)] == ["scattered"]


@pytest.mark.slow  # kept out of the default run for its time; .ci/run runs it
def test_realesrgan_is_suggested_once_and_not_where_it_cannot_help(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "home"))  # an empty weights cache
    args = ["restore", PHOTO, "-o", tmp_path / "out", "--start-step", "0"]
    status, first = run_cli(args, capsys)
    assert status == 0, first
    assert first.count("difface weights download realesrgan-x2") == 1
    assert str(tmp_path / "home" / "weights" / "RealESRGAN_x2plus.pth") in first  # where to put it offline
    status, second = run_cli(args, capsys)
    assert status == 0 and "weights download" not in second
    assert "background: Lanczos (Real-ESRGAN x2 weights not cached)" in second
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "home2"))
    status, one = run_cli([*args, "--upscale", "1"], capsys)  # no enlargement: nothing to suggest
    assert status == 0 and "Real-ESRGAN" not in one and "weights download" not in one


def _small_nets(d: Path) -> list[str]:
    from difface.models import build, fill_deterministic
    from difface.weights import save_network

    save_network(fill_deterministic(build("unet_small")), d / "prior.safetensors")
    save_network(fill_deterministic(build("swinir_small")), d / "est.safetensors")
    return ["--prior", d / "prior.safetensors", "--estimator", d / "est.safetensors", "--start-step", "2",
            "--bg-upsampler", "lanczos", "--upscale", "1"]


def test_gray_clip_stays_exactly_gray(tmp_path, capsys):
    pytest.importorskip("av", reason="PyAV (the [video] extra) is not installed")
    from skimage import data

    from difface.video.io import probe_video, read_frames
    from difface.video.synth import ClipSpec, group_photo_from, make_clip

    gray = cv2.cvtColor(group_photo_from(data.astronaut(), 3, 240), cv2.COLOR_RGB2GRAY)
    clip = tmp_path / "gray.mp4"
    make_clip(np.repeat(gray[:, :, None], 3, axis=2), clip, ClipSpec(size=(256, 144), fps=10, seconds=0.2,
              degradation=None, audio=False), sidecar=False)
    frames_in = [f.rgb for f in read_frames(clip, probe_video(clip))]
    assert all((f[..., 0] == f[..., 1]).all() and (f[..., 1] == f[..., 2]).all() for f in frames_in)
    status, err = run_cli(["restore", clip, "-o", tmp_path / "out", *_small_nets(tmp_path)], capsys)
    assert status == 0, err
    assert "0 faces in" not in err and " 0 faces" not in err  # faces were found and restored
    out = tmp_path / "out" / "gray.mp4"
    frames_out = [f.rgb for f in read_frames(out, probe_video(out))]
    assert len(frames_out) == len(frames_in) == 2
    for f in frames_out:
        assert np.array_equal(f[..., 0], f[..., 1]) and np.array_equal(f[..., 1], f[..., 2])


def test_clip_without_faces_is_said_early_and_searched_sparsely(tmp_path, caplog):
    import logging

    pytest.importorskip("av", reason="PyAV (the [video] extra) is not installed")

    from skimage import data

    from difface.face import get_detector
    from difface.video import FaceParts, VideoOptions, restore_video
    from difface.video.synth import ClipSpec, make_clip

    clip = tmp_path / "coffee.mp4"
    make_clip(data.coffee(), clip, ClipSpec(size=(160, 96), fps=10, seconds=4, degradation=None, audio=False),
              sidecar=False)

    class Counting:
        name = "mtcnn"

        def __init__(self):
            self.inner, self.calls = get_detector("mtcnn"), 0

        def detect(self, rgb):
            self.calls += 1
            return self.inner.detect(rgb)

    det = Counting()

    def never(x, seeds):
        raise AssertionError("no face should reach the restorer")

    with caplog.at_level(logging.INFO, logger="difface"):
        res = restore_video(clip, tmp_path / "out.mp4", FaceParts(never, det, 64), upscale=1,
                            options=VideoOptions(det_min_side=160), progress=False)  # detect at the clip's size
    said = [r.getMessage() for r in caplog.records if "0 faces in the first" in r.getMessage()]
    assert said == [f"{clip}: 0 faces in the first 20 frames (2.0 s); looking for faces in every 5th frame until "
                    "one is found"]
    assert res.frames == 40 and res.faces == 0
    assert det.calls == 20 + 4  # every frame of the first 2 s, then frames 24, 29, 34, 39


@pytest.mark.slow
def test_make_test_clip_example_has_whole_faces(tmp_path):
    """The photo example of make_test_clip.py's docstring gives a clip with whole faces (it gave none)."""
    import re
    import subprocess
    import sys

    from conftest import shared_data

    pytest.importorskip("av", reason="PyAV (the [video] extra) is not installed")
    script = Path(__file__).resolve().parents[1] / "scripts" / "maintainer" / "make_test_clip.py"
    doc = re.sub(r"\\+\n", " ", script.read_text().split('"""')[1])  # continuation lines joined
    example = re.search(r"make_test_clip.py --photo \.\./shared/data/(\S+)(.*?) -o \S+", doc)
    assert example, doc
    photo = shared_data(*example.group(1).split("/"))
    r = subprocess.run([sys.executable, str(script), "--photo", str(photo), *example.group(2).split(), "-o",
                        str(tmp_path / "clip.mp4"), "--no-audio"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    counts = re.search(r"(\d+) faces on the photo, (\d+) fully in every frame", r.stdout)
    faces, whole = (int(v) for v in counts.groups())
    assert whole == faces == 3, r.stdout
