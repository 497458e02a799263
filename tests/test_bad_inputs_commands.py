"""Bad inputs to `difface evaluate`, `detect`, `data align` and `train` (failure semantics).

Every case runs the real command line, in-process through `difface.cli.main` with `capfd` (which
captures file descriptor 2, so what libpng / libjpeg print from C is seen too) or, once, as a
subprocess. Each checks the exit status (0: every input done; 1: some inputs failed; 2: a usage
error found before any work), a message naming the file or option, no traceback and no raw library
line, that no file is written where none should be, and that the good inputs' results equal those
of a clean run without the bad ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from difface.cli import main

# Lines that C libraries or PIL print on their own, without a file name.
RAW_LINE_STARTS = ("libpng", "Corrupt JPEG", "Premature end of JPEG", "Invalid SOS", "Bogus")


def _check_output(text: str) -> None:
    assert "Traceback" not in text
    for line in text.splitlines():
        assert not line.strip().startswith(RAW_LINE_STARTS), f"raw library line reached the terminal: {line!r}"
        assert "UserWarning" not in line and "warnings.warn" not in line, line


def _cli(capfd, *argv) -> tuple[int, str]:
    """Run `difface ARGV` in-process; (exit status, stdout + stderr), checked for raw library output."""
    rc = main([str(a) for a in argv])
    out, err = capfd.readouterr()
    _check_output(out + err)
    return rc, out + err


def _image(seed: int, h: int = 32, w: int = 32) -> np.ndarray:
    """A smooth random uint8 BGR image."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def _encode(arr: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, arr)
    assert ok
    return buf.tobytes()


def _crc_png() -> bytes:
    """A PNG whose compressed data is damaged: libpng says 'libpng error: ...' on stderr, from C."""
    b = bytearray(_encode(_image(90)))
    i = b.find(b"IDAT")
    b[i + 10] ^= 0xFF
    return bytes(b)


def _garbled_jpeg() -> bytes:
    """A JPEG that decodes, but libjpeg prints 'Corrupt JPEG data: ...' on stderr."""
    noise = np.random.default_rng(91).integers(0, 256, (32, 32, 3)).astype(np.uint8)  # many bytes of scan data
    b = bytearray(_encode(noise, ".jpg"))
    m = len(b) // 2
    b[m:m + 20] = b"\xff" * 20
    return bytes(b)


def _bad_exif_jpeg() -> bytes:
    """A JPEG with a broken EXIF block: PIL warns (UserWarning) when the orientation is read."""
    from io import BytesIO

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 1
    buf = BytesIO()
    Image.fromarray(_image(92)[:, :, ::-1]).save(buf, "JPEG", exif=exif.tobytes())
    b = bytearray(buf.getvalue())
    i = b.find(b"Exif")
    b[i + 10:i + 30] = b"\x00\xff" * 10
    return bytes(b)


# Unreadable files: name (its suffix matters) -> bytes.
UNREADABLE = {
    "crc.png": _crc_png,
    "truncated.png": lambda: _encode(_image(93))[:60],
    "empty.png": lambda: b"",
    "text.jpg": lambda: b"this is not an image\n",
}


def test_fixtures_reach_the_raw_library_paths(capfd):
    """The damaged files really make the C libraries / PIL print (so the tests below mean something)."""
    assert cv2.imdecode(np.frombuffer(_crc_png(), np.uint8), cv2.IMREAD_UNCHANGED) is None
    assert cv2.imdecode(np.frombuffer(_garbled_jpeg(), np.uint8), cv2.IMREAD_UNCHANGED) is not None
    err = capfd.readouterr().err
    assert "libpng error" in err and "Corrupt JPEG data" in err
    from io import BytesIO

    from PIL import Image

    with pytest.warns(UserWarning, match="EXIF"), Image.open(BytesIO(_bad_exif_jpeg())) as im:
        im.getexif()


# ---------------------------------------------------------------------------------------------- evaluate

METRICS = "psnr,ssim,psnr_y"


@pytest.fixture
def eval_root(tmp_path):
    """gt/0..2.png and pred/0..2.png (noisy copies), 32x32."""
    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        gt = _image(k)
        pred = np.clip(gt + rng.normal(0, 8, gt.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "gt" / f"{k}.png"), gt)
        cv2.imwrite(str(tmp_path / "pred" / f"{k}.png"), pred)
    return tmp_path


def _evaluate(capfd, root: Path, *extra) -> tuple[int, str]:
    return _cli(capfd, "evaluate", "--pred", root / "pred", "--gt", root / "gt", "--metrics", METRICS,
                "--no-progress", "--json", root / "out.json", *extra)


def _scores(root: Path) -> dict:
    doc = json.loads((root / "out.json").read_text())
    return {k: doc[k] for k in ("images", "means", "counts")}


@pytest.mark.parametrize("bad", sorted(UNREADABLE))
def test_evaluate_unreadable_prediction_is_reported_and_skipped(eval_root, capfd, bad):
    rc, _ = _evaluate(capfd, eval_root)
    assert rc == 0
    clean = _scores(eval_root)
    (eval_root / "pred" / ("9" + Path(bad).suffix)).write_bytes(UNREADABLE[bad]())
    cv2.imwrite(str(eval_root / "gt" / "9.png"), _image(9))
    rc, text = _evaluate(capfd, eval_root)
    assert rc == 1
    bad_path = str(eval_root / "pred" / ("9" + Path(bad).suffix))
    assert any(line.startswith("failed: ") and bad_path in line for line in text.splitlines()), text
    assert "3 of 4 image pair(s) scored" in text
    assert _scores(eval_root) == clean  # the other pairs: the same rows and means
    assert json.loads((eval_root / "out.json").read_text())["failed"].keys() == {"9"}


def test_evaluate_unreadable_ground_truth_is_reported(eval_root, capfd):
    _evaluate(capfd, eval_root)
    clean = _scores(eval_root)
    cv2.imwrite(str(eval_root / "pred" / "9.png"), _image(9))
    (eval_root / "gt" / "9.png").write_bytes(_crc_png())
    rc, text = _evaluate(capfd, eval_root)
    assert rc == 1 and f"failed: {eval_root / 'gt' / '9.png'}" in text
    assert _scores(eval_root) == clean


def test_evaluate_size_mismatch_names_the_pair(eval_root, capfd):
    _evaluate(capfd, eval_root)
    clean = _scores(eval_root)
    cv2.imwrite(str(eval_root / "pred" / "9.png"), _image(9, 48, 32))
    cv2.imwrite(str(eval_root / "gt" / "9.png"), _image(9))
    rc, text = _evaluate(capfd, eval_root)
    assert rc == 1
    line = next(s for s in text.splitlines() if s.startswith("failed: "))
    assert str(eval_root / "pred" / "9.png") in line and str(eval_root / "gt" / "9.png") in line
    assert "32x48" in line and "32x32" in line and "differ in size" in line
    assert "nan" not in text.lower()
    assert _scores(eval_root) == clean


def test_evaluate_nothing_scorable_is_a_failure_without_nan_table(tmp_path, capfd):
    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
    for k in range(2):
        cv2.imwrite(str(tmp_path / "pred" / f"{k}.png"), _image(k, 64, 64))
        cv2.imwrite(str(tmp_path / "gt" / f"{k}.png"), _image(k))
    rc, text = _evaluate(capfd, tmp_path)
    assert rc == 1
    assert "none of the 2 image pair(s) could be scored" in text
    assert text.count("differ in size") == 2 and "nan" not in text.lower()
    assert not (tmp_path / "out.json").exists()


def test_evaluate_reports_files_without_a_counterpart(eval_root, capfd):
    _evaluate(capfd, eval_root)
    clean = _scores(eval_root)
    for k in range(7):
        cv2.imwrite(str(eval_root / "pred" / f"x{k}.png"), _image(20 + k))
    for k in range(2):
        cv2.imwrite(str(eval_root / "gt" / f"y{k}.png"), _image(30 + k))
    rc, text = _evaluate(capfd, eval_root)
    assert rc == 0  # every pair was scored; the lonely files are reported, not failures
    preds = next(s for s in text.splitlines() if "prediction(s)" in s)
    assert preds.startswith("warning: 7 prediction(s)")
    assert preds.endswith("x0.png, x1.png, x2.png, x3.png, x4.png ... and 2 more")
    gts = next(s for s in text.splitlines() if "ground truth(s)" in s)
    assert gts.startswith("warning: 2 ground truth(s)") and gts.endswith("y0.png, y1.png")
    assert _scores(eval_root) == clean


@pytest.mark.parametrize("bad", ["garbled.jpg", "bad_exif.jpg"])
def test_evaluate_decodable_file_with_library_complaint_is_named(eval_root, capfd, bad):
    """A file that decodes despite a complaint is scored; the complaint never appears as a raw line
    (checked by _cli), and where it is shown, it names the file."""
    data = {"garbled.jpg": _garbled_jpeg, "bad_exif.jpg": _bad_exif_jpeg}[bad]()
    (eval_root / "pred" / "9.jpg").write_bytes(data)
    cv2.imwrite(str(eval_root / "gt" / "9.png"), _image(9))
    rc, text = _evaluate(capfd, eval_root)
    assert rc == 0 and "4 of 4 image pair(s) scored" in text
    complaints = [s for s in text.splitlines() if "Corrupt JPEG" in s or "EXIF" in s]
    assert all(s.startswith("warning: ") and str(eval_root / "pred" / "9.jpg") in s for s in complaints), text
    if bad == "bad_exif.jpg":  # PIL's warning is caught by difface.images.read_image
        assert complaints, text


@pytest.mark.parametrize(("option", "target"), [
    ("--json", "folder"), ("--json", "under_a_file"), ("--csv", "folder"), ("--crop-border", "-1")])
def test_evaluate_usage_errors_before_any_work(eval_root, capfd, option, target):
    (eval_root / "afile").write_text("x")
    value = {"folder": eval_root / "gt", "under_a_file": eval_root / "afile" / "out.json", "-1": "-1"}[target]
    before = sorted(p.name for p in eval_root.rglob("*"))
    rc, text = _cli(capfd, "evaluate", "--pred", eval_root / "pred", "--gt", eval_root / "gt", "--metrics", METRICS,
                    "--no-progress", option, value)
    assert rc == 2
    assert text.startswith("error: ") and option in text and "scored" not in text
    assert sorted(p.name for p in eval_root.rglob("*")) == before


def test_evaluate_subprocess_stderr_has_no_raw_libpng_line(eval_root):
    (eval_root / "pred" / "9.png").write_bytes(_crc_png())
    cv2.imwrite(str(eval_root / "gt" / "9.png"), _image(9))
    env = dict(os.environ, PYTHONWARNINGS="default")
    proc = subprocess.run([sys.executable, "-m", "difface", "evaluate", "--pred", str(eval_root / "pred"), "--gt",
                           str(eval_root / "gt"), "--metrics", "psnr", "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    _check_output(proc.stdout + proc.stderr)
    assert f"failed: {eval_root / 'pred' / '9.png'}" in proc.stderr


# ------------------------------------------------------------------------------------- detect, data align


def _face_png() -> bytes:
    """A 96x96 crop of skimage's astronaut (public domain): one clearly detectable face."""
    from skimage import data

    crop = data.astronaut()[10:230, 120:340]
    return _encode(cv2.resize(crop, (96, 96), interpolation=cv2.INTER_AREA)[:, :, ::-1])


@pytest.mark.parametrize("bad", sorted(UNREADABLE))
def test_detect_unreadable_input_fails_that_file_only(tmp_path, capfd, bad):
    (tmp_path / "face.png").write_bytes(_face_png())
    rc, _ = _cli(capfd, "detect", tmp_path / "face.png", "--json", tmp_path / "clean.json", "--draw", tmp_path / "d0")
    assert rc == 0
    (tmp_path / bad).write_bytes(UNREADABLE[bad]())
    rc, text = _cli(capfd, "detect", tmp_path / "face.png", tmp_path / bad, "--json", tmp_path / "out.json",
                    "--draw", tmp_path / "d1")
    assert rc == 1
    assert f"failed: {tmp_path / bad}" in text and "1 of 2 images; 1 failed" in text
    clean, out = (json.loads((tmp_path / f).read_text())["images"] for f in ("clean.json", "out.json"))
    assert out[0] == clean[0] and len(clean[0]["faces"]) == 1
    assert out[1]["path"] == str(tmp_path / bad) and str(tmp_path / bad) in out[1]["error"]
    assert sorted(os.listdir(tmp_path / "d1")) == ["face.png"]
    assert (tmp_path / "d1" / "face.png").read_bytes() == (tmp_path / "d0" / "face.png").read_bytes()


@pytest.mark.parametrize(("option", "target"), [("--json", "folder"), ("--json", "under_a_file"),
                                                 ("--draw", "a_file")])
def test_detect_output_path_errors_before_any_work(tmp_path, capfd, option, target):
    (tmp_path / "face.png").write_bytes(_face_png())
    (tmp_path / "out").mkdir()
    (tmp_path / "afile").write_text("x")
    paths = {"folder": tmp_path / "out", "under_a_file": tmp_path / "afile" / "d.json", "a_file": tmp_path / "afile"}
    argv = ["detect", tmp_path / "face.png", "--json", paths[target] if option == "--json" else tmp_path / "d.json"]
    if option == "--draw":
        argv += [option, paths[target]]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    rc, text = _cli(capfd, *argv)
    assert rc == 2 and text.startswith("error: ") and f"{option} {paths[target]}" in text
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("bad", ["crc.png", "empty.png"])
def test_data_align_failed_inputs_give_exit_1(tmp_path, capfd, bad):
    clean_raw, raw = tmp_path / "clean_raw", tmp_path / "raw"
    for d in (clean_raw, raw):
        d.mkdir()
        (d / "face.png").write_bytes(_face_png())
    rc, _ = _cli(capfd, "data", "align", clean_raw, "-o", tmp_path / "clean_out", "--size", "32")
    assert rc == 0
    (raw / bad).write_bytes(UNREADABLE[bad]())
    cv2.imwrite(str(raw / "blank.png"), np.full((60, 60, 3), 128, np.uint8))  # no face
    rc, text = _cli(capfd, "data", "align", raw, "-o", tmp_path / "out", "--size", "32")
    assert rc == 1
    assert f"failed: {raw / bad}" in text and f"failed: {raw / 'blank.png'}: no face found" in text
    assert "aligned 1 of 3 photos" in text and "2 failed" in text
    report = json.loads((tmp_path / "out" / "align_report.json").read_text())
    assert sorted(report["skipped"]) == sorted([str(raw / bad), str(raw / "blank.png")])
    assert sorted(os.listdir(tmp_path / "out")) == ["align_report.json", "face.png"]
    assert (tmp_path / "out" / "face.png").read_bytes() == (tmp_path / "clean_out" / "face.png").read_bytes()


def test_data_align_output_that_is_a_file_is_a_usage_error(tmp_path, capfd):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "face.png").write_bytes(_face_png())
    (tmp_path / "out").write_text("not a folder")
    rc, text = _cli(capfd, "data", "align", tmp_path / "raw", "-o", tmp_path / "out", "--size", "32")
    assert rc == 2 and text.startswith("error: -o/--out ") and "is a file, not a folder" in text
    assert (tmp_path / "out").read_text() == "not a folder"


# ----------------------------------------------------------------------------------------------- train

TINY_PRIOR = """model:
  unet: {image_size: 32, model_channels: 32, channel_mult: [1, 2], num_res_blocks: 1,
         attention_resolutions: [16], num_head_channels: 32}
data: {size: 32, num_workers: %d}
optim: {batch_size: 2, warmup_steps: 0}
sample: {num_samples: 0}
max_steps: 1
sample_every: 0
checkpoint_every: 0
"""


@pytest.mark.parametrize("workers", [0, 2])
def test_train_on_only_unreadable_images_names_the_folder(tmp_path, capfd, workers):
    data = tmp_path / "faces"
    data.mkdir()
    for name, make in UNREADABLE.items():
        (data / name).write_bytes(make())
    (tmp_path / "c.yaml").write_text(TINY_PRIOR % workers)
    rc, text = _cli(capfd, "train", "prior", "--config", tmp_path / "c.yaml", "--data", data, "--out",
                    tmp_path / "run", "--device", "cpu")
    assert rc == 1
    error = next(s for s in text.splitlines() if s.startswith("error: "))
    assert error.startswith(f"error: {data}: none of the 4 images could be read")
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.safetensors"))


@pytest.mark.parametrize(("task", "content", "says"), [
    ("prior", "", "the config is empty"),
    ("prior", "# only a comment\n", "the config is empty"),
    ("prior", "max_steps: 1\n", "the config names no network"),
    ("estimator", "optim: {lr: 1.0e-4}\n", "the config names no network"),
    ("inpainter", "max_steps: 1\n", "the config names no network"),
])
def test_train_config_must_name_its_network(tmp_path, capfd, task, content, says):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(content)
    (tmp_path / "faces").mkdir()
    cv2.imwrite(str(tmp_path / "faces" / "a.png"), _image(0))
    rc, text = _cli(capfd, "train", task, "--config", cfg, "--data", tmp_path / "faces", "--out", tmp_path / "run")
    assert rc == 2
    assert text.startswith(f"error: {cfg}: {says}")
    small = {"prior": "unet_small", "estimator": "swinir_small", "inpainter": "lama_small"}[task]
    assert f"'model: {small}'" in text
    assert not (tmp_path / "run").exists()
