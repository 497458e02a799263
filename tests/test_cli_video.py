"""`difface restore clip.mp4`: videos through the restoration pipeline (difface.video underneath)."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from difface.cli import main
from difface.models import build, fill_deterministic
from difface.weights import save_network

av = pytest.importorskip("av", reason="PyAV (the [video] extra) is not installed")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut_lq.png"  # public domain


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from difface.video.synth import ClipSpec, make_clip

    d = tmp_path_factory.mktemp("video")
    save_network(fill_deterministic(build("unet_small")), d / "prior.safetensors")
    save_network(fill_deterministic(build("swinir_small")), d / "est.safetensors")
    face = cv2.cvtColor(cv2.imread(str(EXAMPLE)), cv2.COLOR_BGR2RGB)
    make_clip(face, d / "clip.mov", ClipSpec(size=(192, 192), fps=10, seconds=0.6, degradation=None), sidecar=False)
    (d / "broken.mp4").write_bytes(b"this is not a video at all")
    return d


def _run(args, capsys):
    try:
        status = main(args)
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def _model(d):
    return ["--prior", str(d / "prior.safetensors"), "--estimator", str(d / "est.safetensors"), "--start-step", "2",
            "--bg-upsampler", "lanczos", "--upscale", "1"]


def test_clip_is_restored_with_its_timing_and_audio(setup, tmp_path, capsys):
    from difface.video.io import probe_video

    status, err = _run(["restore", str(setup / "clip.mov"), "-o", str(tmp_path), *_model(setup)], capsys)
    assert status == 0, err
    src, out = probe_video(setup / "clip.mov"), probe_video(tmp_path / "clip.mp4")
    assert out.frames == src.frames == 6 and out.fps == src.fps
    assert (out.width, out.height) == (src.width, src.height)
    assert out.audio and src.audio
    assert "6 frames" in err and "restored 1 of 1 inputs" in err


def test_a_bad_clip_fails_alone_beside_a_photo(setup, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes((setup / "broken.mp4").read_bytes())
    (folder / "photo.png").write_bytes(EXAMPLE.read_bytes())
    status, err = _run(["restore", str(folder), "-o", str(tmp_path / "out"), *_model(setup)], capsys)
    assert status == 1 and "Traceback" not in err
    assert f"failed: {folder / 'broken.mp4'}" in err
    assert (tmp_path / "out" / "photo.png").is_file() and not (tmp_path / "out" / "broken.mp4").exists()


def test_aligned_mode_refuses_a_video(setup, tmp_path, capsys):
    status, err = _run(["restore", str(setup / "clip.mov"), "-o", str(tmp_path), "--aligned", *_model(setup)],
                       capsys)
    assert status == 1 and "leave out --aligned" in err


@pytest.mark.parametrize("extra,needle", [(["--crf", "99"], "--crf"), (["--batch-frames", "0"], "--batch-frames")])
def test_video_usage_errors(extra, needle, setup, tmp_path, capsys):
    status, err = _run(["restore", str(setup / "clip.mov"), "-o", str(tmp_path), *_model(setup), *extra], capsys)
    assert status == 2 and needle in err
