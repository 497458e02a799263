"""What a new user meets first, through the real command (difface.cli.main or a subprocess): gray inputs give
gray files, --ext/--quality, a mistyped option or command answered in one line with the closest name, inpaint's
--start-step, the interrupt line, `difface weights list`, the offline message of the official models."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from difface import hub, models

from conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"  # public-domain astronaut
FACE, PHOTO = EXAMPLES / "astronaut_face.png", EXAMPLES / "astronaut_lq.png"
ENV = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")


def _gray_face() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(FACE)), cv2.COLOR_BGR2GRAY)


# -- gray stays gray ---------------------------------------------------------------------------------------
def test_gray_aligned_face_is_written_with_one_channel(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    gray = _gray_face()
    cv2.imwrite(str(src / "one.png"), gray)  # one channel
    cv2.imwrite(str(src / "three.png"), np.dstack([gray] * 3))  # the same pixels as RGB
    status, err = run_cli(["restore", src, "-o", tmp_path / "out", "--aligned", "--save-comparison"], capsys)
    assert status == 0, err
    one = cv2.imread(str(tmp_path / "out" / "one.png"), cv2.IMREAD_UNCHANGED)
    three = cv2.imread(str(tmp_path / "out" / "three.png"), cv2.IMREAD_UNCHANGED)
    assert one.shape == gray.shape and three.shape == (*gray.shape, 3)
    np.testing.assert_array_equal(one, three[:, :, 0])  # the same result, stored in one channel
    comp = cv2.imread(str(tmp_path / "out" / "comparisons" / "one.png"), cv2.IMREAD_UNCHANGED)
    assert comp.shape == (64, 3 * 64, 3)  # comparisons stay RGB


def test_gray_whole_photo_and_its_faces_are_written_with_one_channel(tmp_path, capsys):
    photo = tmp_path / "bw.png"
    padded = cv2.copyMakeBorder(_gray_face(), 32, 32, 32, 32, cv2.BORDER_REPLICATE)
    cv2.imwrite(str(photo), padded)  # 128 x 128, one channel, a face the default detector finds
    status, err = run_cli(["restore", photo, "-o", tmp_path / "out", "--bg-upsampler", "lanczos"], capsys)
    assert status == 0 and "1 face(s) restored" in err, err
    out = cv2.imread(str(tmp_path / "out" / "bw.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (256, 256) and out.dtype == np.uint8
    for sub in ("cropped_faces", "restored_faces"):
        assert cv2.imread(str(tmp_path / "out" / sub / "bw_00.png"), cv2.IMREAD_UNCHANGED).ndim == 2


# -- --ext and --quality -----------------------------------------------------------------------------------
def test_ext_and_quality_set_the_format_and_skip_existing_finds_it(tmp_path, capsys):
    out = tmp_path / "out"
    base = ["restore", PHOTO, "-o", out, "--bg-upsampler", "lanczos"]
    assert run_cli([*base, "--ext", "jpg", "--quality", "90", "--save-comparison"], capsys)[0] == 0
    jpg = out / "astronaut_lq.jpg"
    assert jpg.read_bytes()[:3] == b"\xff\xd8\xff" and not list(out.glob("*.png"))
    assert cv2.imread(str(jpg)).shape == (384, 384, 3)
    assert (out / "comparisons" / "astronaut_lq.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    small = out / "small"
    assert run_cli(["restore", PHOTO, "-o", small, "--bg-upsampler", "lanczos", "--ext", "jpg", "--quality", "20"],
                capsys)[0] == 0
    assert (small / "astronaut_lq.jpg").stat().st_size < 0.6 * jpg.stat().st_size
    assert run_cli([*base, "--ext", "webp"], capsys)[0] == 0
    webp = (out / "astronaut_lq.webp").read_bytes()
    assert webp[:4] == b"RIFF" and webp[8:12] == b"WEBP"
    stamp = jpg.stat().st_mtime_ns
    status, err = run_cli([*base, "--ext", "jpg", "--skip-existing"], capsys)
    assert status == 0 and "1 kept" in err and jpg.stat().st_mtime_ns == stamp, err
    assert not list(out.glob("*.png"))  # PNG only when asked (the default)


def test_quality_is_checked_and_named_by_its_flag(tmp_path, capsys):
    status, err = run_cli(["restore", PHOTO, "-o", tmp_path / "a", "--quality", "0", "--ext", "jpg"], capsys)
    assert status == 2 and "--quality: must be between 1 and 100, got 0" in err, err
    status, err = run_cli(["restore", PHOTO, "-o", tmp_path / "b", "--quality", "80"], capsys)
    assert status == 2 and "--quality: applies to --ext jpg or webp; PNG is lossless" in err, err
    assert not (tmp_path / "b").exists() or not list((tmp_path / "b").iterdir())


# -- one line with the closest name for a mistyped option, command or choice -------------------------------
@pytest.mark.parametrize("args, line", [
    (["restore", "x", "-o", "y", "--start-stp", "3"],
     "difface restore: unknown option --start-stp; did you mean --start-step?"),
    (["restore", "x", "--ouput=y"], "difface restore: unknown option --ouput; did you mean --output?"),
    (["restore", "x", "-o", "y", "--bogus", "2"],
     "difface restore: unknown option --bogus; `difface restore --help` lists the options"),
    (["restre", "x"], "difface: unknown command restre; did you mean restore? (`difface --help` lists them)"),
    (["weights", "lst"], "difface weights: unknown command lst; did you mean list? (`difface weights --help` "
                         "lists them)"),
    (["restore", "x", "-o", "y", "--preset", "fsat"],
     "difface restore: --preset: invalid choice fsat; did you mean fast? (choose from official, fast)"),
    (["restore", "x", "-o", "y", "--ext", "jpeg"],
     "difface restore: --ext: invalid choice jpeg; did you mean jpg? (choose from png, jpg, webp)"),
])
def test_mistyped_names_get_one_line_and_the_closest_name(args, line, capsys):
    status, err = run_cli(args, capsys)
    assert status == 2 and err == line + "\n"


# -- inpaint --start-step ----------------------------------------------------------------------------------
def test_inpaint_help_offers_what_inpaint_accepts(tmp_path, capsys):
    status, text = run_cli(["inpaint", "--help"], capsys)
    assert status == 0 and "[--start-step N]" in text and "--start-step N|auto" not in text and "auto =" not in text
    status, err = run_cli(["inpaint", FACE, "-o", tmp_path / "out", "--start-step", "auto"], capsys)
    assert status == 2 and "inpainting takes a number, got 'auto'" in err
    status, text = run_cli(["restore", "--help"], capsys)
    assert status == 0 and "[--start-step N|auto]" in text  # restore still takes auto


# -- Ctrl-C ------------------------------------------------------------------------------------------------
@pytest.mark.slow  # two subprocesses restoring a dozen faces
def test_interrupt_says_how_to_finish_the_batch_and_that_finishes_it(tmp_path):
    faces, out = tmp_path / "faces", tmp_path / "out"
    faces.mkdir()
    face = cv2.imread(str(FACE))
    for k in range(12):
        cv2.imwrite(str(faces / f"f{k:02d}.png"), np.clip(face * (0.6 + k / 30), 0, 255).astype(np.uint8))
    # torch and 8 steps a face, one face a batch: slow enough that the interrupt lands mid-batch
    cmd = [sys.executable, "-m", "difface", "restore", str(faces), "-o", str(out), "--aligned", "--device", "cpu",
           "--backend", "torch", "--start-step", "8", "--batch-size", "1"]
    # a shell's background job ignores SIGINT, and a child would inherit that: give it the default, as in a terminal
    proc = subprocess.Popen(cmd, env=ENV, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("*.png"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    lines = err.split("\n")  # a progress bar redraws its line with "\r": the message must start a line of its own
    k = next(i for i, ln in enumerate(lines) if ln.startswith("interrupted"))
    assert "run the same command with --skip-existing" in lines[k], err
    again = shlex.split(lines[k + 1].strip())
    assert again[:2] == ["difface", "restore"] and again[-1] == "--skip-existing" and again[2:-1] == cmd[4:]
    done = len(list(out.glob("*.png")))
    assert 0 < done < 12
    rerun = subprocess.run([sys.executable, "-m", "difface", *again[1:]], env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0 and f"{done} kept" in rerun.stderr, rerun.stderr
    assert len(list(out.glob("*.png"))) == 12


# -- difface weights list ----------------------------------------------------------------------------------
def test_weights_list_shows_every_model_with_its_size(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "RealESRGAN_x2plus.pth").write_bytes(b"\0" * 3000)
    status, text = run_cli(["weights", "list"], capsys)
    assert status == 0
    rows = {line.split()[0]: line.split() for line in text.splitlines()[2:] if line.split()}
    assert rows["small64/prior"][2:6] == ["9.7", "MB", "bundled,", "offline"]
    assert rows["small64/estimator"][2:4] == ["2.3", "MB"] and "small64/inpainter" in rows
    assert rows["iddpm-ffhq512"][2:6] == ["~639", "MB", "not", "cached"]
    assert rows["swinir-ffhq512"][2:6] == ["~90", "MB", "not", "cached"]
    assert rows["realesrgan-x2"][2:5] == ["3", "kB", "cached"]  # a cached file: its size on disk
    assert set(hub.REGISTRY) <= set(rows)
    assert all(row[2] != "?" for row in rows.values() if row[0] in hub.REGISTRY)


@pytest.mark.parametrize("name", [n for n, e in hub.REGISTRY.items() if e.arch in models.CONFIGS])
def test_approximate_sizes_are_those_of_the_networks(name):
    entry = hub.REGISTRY[name]
    with torch.device("meta"):
        net = models.build(entry.arch)
    nbytes = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    assert abs(entry.approx_size - nbytes) < 0.01 * nbytes


# -- the official models offline ---------------------------------------------------------------------------
def test_offline_message_names_every_missing_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path))

    def offline(url, out, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(hub, "_fetch", offline)
    status, err = run_cli(["restore", FACE, "-o", tmp_path / "out", "--aligned", "--prior", "iddpm-ffhq512",
                        "--estimator", "swinir-ffhq512"], capsys)
    assert status == 2 and "Traceback" not in err
    assert "cannot be downloaded now (<urlopen error no network>): iddpm-ffhq512, swinir-ffhq512" in err, err
    assert "difface weights download iddpm-ffhq512 swinir-ffhq512" in err
    assert hub.REGISTRY["iddpm-ffhq512"].url in err and hub.REGISTRY["swinir-ffhq512"].url in err
    assert str(tmp_path / "weights") in err
