"""`difface restore` as a careless or hostile user meets it: every bad option is a usage error
(exit 2) naming the option before any work; every bad input fails on its own, named, while the other
inputs give exactly the files of a clean run; nothing wrong is ever written; no traceback."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from difface.cli import main
from difface.models import build, fill_deterministic
from difface.weights import save_network

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut_lq.png"  # public domain


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Small filled networks as our safetensors (prior, estimator), plus a prior with NaN weights."""
    d = tmp_path_factory.mktemp("weights")
    prior, est = fill_deterministic(build("unet_small")), fill_deterministic(build("swinir_small"))
    save_network(prior, d / "prior.safetensors")
    save_network(est, d / "estimator.safetensors")
    with torch.no_grad():
        prior.out[-1].bias.fill_(float("nan"))
    save_network(prior, d / "nan_prior.safetensors")  # refused at load (difface.weights)
    with torch.no_grad():  # finite weights whose outputs overflow: caught by the check of the results
        prior.out[-1].weight.fill_(3e38)
        prior.out[-1].bias.fill_(3e38)
    save_network(prior, d / "overflow_prior.safetensors")
    return d


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Two smooth synthetic 64x64 'faces' (aligned mode needs no detector)."""
    d = tmp_path_factory.mktemp("faces")
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    for i in range(2):
        img = np.stack([np.sin(5 * xx + i), np.cos(4 * yy - i), xx * yy], -1) * 0.4 + 0.5
        cv2.imwrite(str(d / f"face{i}.png"), np.rint(img[:, :, ::-1] * 255).astype(np.uint8))
    return d


def _run(args: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of the CLI (argparse's own usage errors exit through SystemExit(2))."""
    try:
        status = main(args)
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def _model(weights: Path) -> list[str]:
    return ["--prior", str(weights / "prior.safetensors"), "--estimator", str(weights / "estimator.safetensors"),
            "--start-step", "2"]


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


BAD_OPTIONS = [
    # (case, extra arguments, whole photo?, text that must be in the message)
    ("eta above 1", ["--eta", "2"], False, "--eta"),
    ("eta above 1 (photo)", ["--eta", "2"], True, "--eta"),
    ("eta negative", ["--eta", "-0.1"], False, "--eta"),
    ("eta nan", ["--eta", "nan"], False, "--eta"),
    ("eta inf", ["--eta", "inf"], True, "--eta"),
    ("upscale 0", ["--upscale", "0"], True, "--upscale"),
    ("upscale 100", ["--upscale", "100"], True, "--upscale"),
    ("nfe 0", ["--sampler", "ddim", "--nfe", "0"], False, "--nfe"),
    ("nfe negative", ["--sampler", "ddim", "--nfe", "-3"], False, "--nfe"),
    ("nfe beyond the start", ["--sampler", "ddim", "--nfe", "1000"], False, "--nfe"),
    ("nfe with the official loop", ["--nfe", "5"], False, "--nfe"),
    ("batch size 0", ["--batch-size", "0"], False, "--batch-size"),
    ("max face size negative", ["--max-face-size", "-1"], True, "--max-face-size"),
    ("start step negative", ["--start-step", "-1"], False, "--start-step"),
    ("start step beyond the chain", ["--start-step", "100000"], False, "--start-step"),
    ("start step beyond the chain (photo)", ["--start-step", "300"], True, "--start-step"),
    ("steps 0", ["--steps", "0"], False, "--steps"),
    ("steps nonsense", ["--steps", "ddimx"], False, "--steps"),
    ("device cuda without one", ["--device", "cuda"], False, "--device"),
    ("device mps without one", ["--device", "mps"], False, "--device"),
    ("device nonsense", ["--device", "tpu9"], False, "--device"),
    ("unknown background upsampler", ["--bg-upsampler", "foo"], True, "--bg-upsampler"),
    ("unknown detector", ["--detector", "foo"], True, "--detector"),
    ("max pixels 0", ["--max-pixels", "0"], False, "--max-pixels"),
    ("prior without estimator", ["--estimator", None], False, "--estimator"),
]


@pytest.mark.parametrize("case,extra,photo,needle", BAD_OPTIONS, ids=[c[0] for c in BAD_OPTIONS])
def test_bad_option_is_a_usage_error_before_any_work(case, extra, photo, needle, weights, faces, tmp_path, capsys):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    if "mps" in extra and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    model = _model(weights)
    if extra[-1] is None:  # drop the option instead of adding one
        i = model.index(extra[0])
        model, extra = model[:i] + model[i + 2:], []
    if "--start-step" in extra:
        model = model[:-2]
    src = [str(EXAMPLE)] if photo else [str(faces)]
    out = tmp_path / "out"
    status, err = _run(["restore", *src, "-o", str(out), *([] if photo else ["--aligned"]), *model, *extra], capsys)
    assert status == 2, err
    assert needle in err and "error" in err
    assert "Traceback" not in err
    assert not list(out.rglob("*.png")) if out.exists() else True


@pytest.mark.parametrize("what", ["corrupt", "empty", "swapped"])
def test_unusable_weights_are_named(what, weights, faces, tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    if what == "corrupt":
        bad.write_bytes(os.urandom(4096))
    elif what == "empty":
        bad.write_bytes(b"")
    else:  # the estimator file given as the prior
        shutil.copy(weights / "estimator.safetensors", bad)
    status, err = _run(["restore", str(faces), "-o", str(tmp_path / "out"), "--aligned", "--prior", str(bad),
                        "--estimator", str(weights / "estimator.safetensors")], capsys)
    assert status == 2 and "bad.safetensors" in err and "Traceback" not in err
    assert not list((tmp_path / "out").rglob("*.png"))


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG whose header says w x h, with one row of data: refused from the header, never decoded."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = zlib.compress(b"\x00" * (1 + 3 * w))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", row) + chunk(b"IEND", b""))


def _jpeg_header_only(path: Path, w: int, h: int) -> None:
    """A small JPEG whose SOF0 header claims w x h."""
    ok, buf = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    data = bytearray(buf.tobytes())
    i = data.find(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("photo", [False, True], ids=["aligned", "photo"])
@pytest.mark.parametrize("kind", ["png 20000x20000", "jpeg 12000x12000"])
def test_huge_image_fails_alone_and_the_good_face_is_restored(kind, photo, weights, faces, tmp_path, capsys):
    good = EXAMPLE if photo else faces / "face0.png"
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(good, src / good.name)
    big = src / ("big.png" if "png" in kind else "big.jpg")
    (_png_header_only if "png" in kind else _jpeg_header_only)(big, *(20000, 20000) if "png" in kind else
                                                              (12000, 12000))
    mode = [] if photo else ["--aligned"]
    status, err = _run(["restore", str(src), "-o", str(tmp_path / "out"), *mode, *_model(weights)], capsys)
    assert status == 1 and "Traceback" not in err
    assert f"failed: {big}" in err and "megapixels" in err and "--max-pixels" in err
    clean = tmp_path / "clean"
    clean_src = tmp_path / "clean_in"
    clean_src.mkdir()
    shutil.copy(good, clean_src / good.name)
    assert _run(["restore", str(clean_src), "-o", str(clean), *mode, *_model(weights)], capsys)[0] == 0
    assert _digests(tmp_path / "out") == _digests(clean)


def test_photo_refused_from_the_header_when_the_upscaled_output_is_too_large(weights, tmp_path, capsys):
    big = tmp_path / "wide.png"
    _png_header_only(big, 7000, 5000)  # 35 MP: under --max-pixels, but x4 is 140 MP of output
    status, err = _run(["restore", str(big), "-o", str(tmp_path / "out"), *_model(weights), "--upscale", "2"], capsys)
    assert status == 1 and "--upscale" in err and "megapixels" in err and "Traceback" not in err


def test_non_finite_result_is_a_failure_and_never_written(weights, faces, tmp_path, capsys):
    status, err = _run(["restore", str(faces), "-o", str(tmp_path / "out"), "--aligned", "--start-step", "2",
                        "--prior", str(weights / "overflow_prior.safetensors"),
                        "--estimator", str(weights / "estimator.safetensors")], capsys)
    assert status == 1 and "non-finite" in err and "restored 0 of 2" in err
    assert not list((tmp_path / "out").rglob("*.png"))
    # NaN in the weights themselves: refused when the model loads, naming the file and the key
    status, err = _run(["restore", str(faces), "-o", str(tmp_path / "out2"), "--aligned", "--start-step", "2",
                        "--prior", str(weights / "nan_prior.safetensors"),
                        "--estimator", str(weights / "estimator.safetensors")], capsys)
    assert status == 2 and "nan_prior.safetensors" in err and "NaN or infinite values (1): out.2.bias" in err
    assert not (tmp_path / "out2").exists() or not list((tmp_path / "out2").rglob("*.png"))


def test_file_where_a_subfolder_should_go(weights, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "cropped_faces").write_text("not a folder")
    status, err = _run(["restore", str(EXAMPLE), "-o", str(out), *_model(weights)], capsys)
    assert status == 2 and "cropped_faces" in err and "not a folder" in err


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_read_only_output_folder_is_refused_before_the_models_load(weights, faces, tmp_path, capsys):
    out = tmp_path / "ro"
    if os.geteuid() == 0:
        if not _mount_tmpfs(out, "ro,size=1m"):
            pytest.skip("running as root and cannot mount a read-only tmpfs here, so no folder is read-only")
    else:
        out.mkdir()
        out.chmod(0o555)
    try:
        status, err = _run(["restore", str(faces), "-o", str(out), "--aligned", *_model(weights)], capsys)
        assert status == 2 and "cannot write" in err and "model:" not in err  # refused before loading
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(out)])


def test_full_disk_fails_files_not_the_run(weights, tmp_path, capsys):
    """A small tmpfs fills up: later files fail with a reason, earlier results are complete files."""
    if os.geteuid() != 0 or not _mount_tmpfs(tmp_path / "small", "size=64k"):
        pytest.skip("needs root and tmpfs to make a small, full disk")
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # noisy 96x96 images: ~28 kB PNGs each, so only a couple fit
        cv2.imwrite(str(src / f"n{i}.png"), rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
    out = tmp_path / "small"
    try:
        status, err = _run(["restore", str(src), "-o", str(out), "--aligned", *_model(weights)], capsys)
        assert status == 1 and "Traceback" not in err and "cannot write" in err
        written = sorted(out.glob("*.png"))
        assert 0 < len(written) < 6
        assert all(cv2.imread(str(p)) is not None for p in written)  # complete files only
        assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    finally:
        subprocess.run(["umount", str(out)])


def test_gray_with_alpha_stays_gray_and_keeps_alpha(weights, faces, tmp_path, capsys):
    from PIL import Image

    img = cv2.imread(str(faces / "face0.png"), cv2.IMREAD_GRAYSCALE)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.dstack([img, np.full_like(img, 200)]), "LA").save(src / "la.png")  # gray + alpha PNG
    assert _run(["restore", str(src), "-o", str(tmp_path / "out"), "--aligned", *_model(weights)], capsys)[0] == 0
    out = cv2.imread(str(tmp_path / "out" / "la.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (64, 64, 4) and (out[:, :, 3] == 200).all()
    assert (out[:, :, 0] == out[:, :, 1]).all() and (out[:, :, 1] == out[:, :, 2]).all()


def test_renamed_output_on_a_name_collision_is_reported(weights, faces, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(faces / "face0.png", src / "a.png")
    cv2.imwrite(str(src / "a.jpg"), cv2.imread(str(faces / "face1.png")))
    status, err = _run(["restore", str(src), "-o", str(tmp_path / "out"), "--aligned", *_model(weights)], capsys)
    assert status == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png", "a_png.png"]
    assert "written as a_png.png" in err


def test_steps_keep_the_default_start_timestep(weights, faces, tmp_path, capsys):
    model = _model(weights)[:-2]  # no --start-step: the model's default t = 400
    status, err = _run(["restore", str(faces), "-o", str(tmp_path / "out"), "--aligned", *model,
                        "--steps", "ddim25"], capsys)
    assert status == 0 and "start step 10 of ddim25 (t = 400 of 1000)" in err
    status, err = _run(["restore", str(faces), "-o", str(tmp_path / "out10"), "--aligned", *model, "--steps", "10"],
                       capsys)
    assert status == 0 and "Traceback" not in err


def test_fp16_on_cpu_says_it_is_slow(weights, faces, tmp_path, capsys):
    status, err = _run(["restore", str(faces / "face0.png"), "-o", str(tmp_path / "out"), "--aligned",
                        *_model(weights), "--dtype", "fp16", "--device", "cpu", "--start-step", "0"], capsys)
    assert status == 0 and "fp16" in err and "slower" in err  # said before any work (start step 0: cheap)


def test_bf16_on_a_cpu_without_bf16_instructions_says_it_is_slow(weights, faces, tmp_path, capsys):
    from difface.device import cpu_has_native_bf16

    status, err = _run(["restore", str(faces / "face0.png"), "-o", str(tmp_path / "out"), "--aligned",
                        *_model(weights), "--dtype", "bf16", "--device", "cpu", "--start-step", "0"], capsys)
    assert status == 0
    # the warning comes exactly where the CPU lacks bf16 instructions (this machine's /proc/cpuinfo decides)
    assert ("no bf16 instructions" in err) == (cpu_has_native_bf16() is False), err


def test_start_step_auto_runs_and_says_what_it_chose(weights, faces, tmp_path, capsys):
    model = _model(weights)[:-2]
    status, err = _run(["restore", str(faces), "-o", str(tmp_path / "out"), "--aligned", *model,
                        "--start-step", "auto", "--sampler", "ddim", "--nfe", "3"], capsys)
    assert status == 0 and "start step auto (per image)" in err and "start step auto: " in err
    assert len(list((tmp_path / "out").glob("*.png"))) == 2
