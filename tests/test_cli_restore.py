"""End-to-end `difface restore --aligned` with filler-weight checkpoints in the official .pth layout."""

import hashlib
import shutil

import cv2
import numpy as np
import pytest
import torch

from difface.cli import main

from conftest import shared_data


@pytest.fixture(scope="module")
def official_layout_checkpoints(tmp_path_factory, small_models):
    d = tmp_path_factory.mktemp("ckpt")
    prior, est = small_models
    # the trainer's EMA file: a bare dict with DDP prefixes; the estimator: {"state_dict": ...}
    torch.save({f"module.{k}": v for k, v in prior.state_dict().items()}, d / "prior.pth")
    torch.save({"state_dict": est.state_dict()}, d / "estimator.pth")
    return d / "prior.pth", d / "estimator.pth"


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_mixed_folder_restores_good_files_and_names_bad_ones(tmp_path, official_layout_checkpoints, capsys):
    faces = sorted(shared_data("real-world", "difface-testdata", "cropped_faces").glob("*.png"))[:2]
    src = tmp_path / "in"
    src.mkdir()
    for f in faces:
        shutil.copy(f, src / f.name)
    face = cv2.imread(str(faces[0]))
    cv2.imwrite(str(src / "gray.png"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    rgba = cv2.cvtColor(cv2.resize(face, (96, 80)), cv2.COLOR_BGR2BGRA)
    rgba[:, :40, 3] = 77
    cv2.imwrite(str(src / "rgba.png"), rgba)
    (src / "empty.png").write_bytes(b"")
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    before = _digest(src)
    prior, est = official_layout_checkpoints
    args = ["restore", str(src), "--aligned", "--prior", str(prior), "--estimator", str(est),
            "--start-step", "4", "--seed", "3"]
    status = main([*args, "-o", str(tmp_path / "out1")])
    err = capsys.readouterr().err
    assert status != 0
    assert "empty.png" in err and "corrupt.png" in err
    outs = sorted(p.name for p in (tmp_path / "out1").glob("*.png"))
    assert outs == sorted([faces[0].name, faces[1].name, "gray.png", "rgba.png"])
    assert _digest(src) == before  # inputs untouched
    out_rgba = cv2.imread(str(tmp_path / "out1" / "rgba.png"), cv2.IMREAD_UNCHANGED)
    assert out_rgba.shape == (80, 96, 4) and (out_rgba[:, :40, 3] == 77).all() and (out_rgba[:, 40:, 3] == 255).all()
    assert cv2.imread(str(tmp_path / "out1" / faces[0].name)).shape == face.shape
    # the same seed gives the same output
    assert main([*args, "-o", str(tmp_path / "out2")]) != 0
    assert _digest(tmp_path / "out1") == _digest(tmp_path / "out2")


def test_sixteen_bit_non_square_input_and_comparison(tmp_path, official_layout_checkpoints):
    prior, est = official_layout_checkpoints
    rng = np.random.default_rng(0)
    img16 = (rng.random((70, 50, 3)) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), img16)
    status = main(["restore", str(tmp_path / "deep.png"), "-o", str(tmp_path / "out"), "--aligned",
                   "--prior", str(prior), "--estimator", str(est), "--start-step", "2", "--save-comparison"])
    assert status == 0
    out = cv2.imread(str(tmp_path / "out" / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert out.shape == (70, 50, 3) and out.dtype == np.uint16
    comp = cv2.imread(str(tmp_path / "out" / "comparisons" / "deep.png"))
    assert comp.shape == (70, 150, 3)


def test_refuses_to_overwrite_inputs(tmp_path, official_layout_checkpoints, capsys):
    prior, est = official_layout_checkpoints
    cv2.imwrite(str(tmp_path / "a.png"), np.full((64, 64, 3), 100, np.uint8))
    before = _digest(tmp_path)
    status = main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path), "--aligned",
                   "--prior", str(prior), "--estimator", str(est), "--start-step", "1"])
    assert status != 0 and "overwrite" in capsys.readouterr().err
    assert _digest(tmp_path) == before


def test_missing_inputs_and_missing_weights_fail_clearly(tmp_path, capsys, monkeypatch):
    assert main(["restore", str(tmp_path / "nope*.png"), "-o", str(tmp_path / "o"), "--aligned"]) == 2
    assert "no such file" in capsys.readouterr().err
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "cache"))
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    status = main(["restore", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--aligned",
                   "--prior", str(tmp_path / "missing.pth"), "--estimator", str(tmp_path / "missing2.pth")])
    assert status == 2 and "missing.pth" in capsys.readouterr().err


def test_whole_photo_mode_writes_result_faces_and_comparison(tmp_path, official_layout_checkpoints):
    from pathlib import Path

    prior, est = official_layout_checkpoints
    photo = Path(__file__).resolve().parents[1] / "examples" / "astronaut_lq.png"  # public domain
    out = tmp_path / "out"
    status = main(["restore", str(photo), "-o", str(out), "--prior", str(prior), "--estimator", str(est),
                   "--start-step", "2", "--bg-upsampler", "lanczos", "--save-comparison"])
    assert status == 0
    assert cv2.imread(str(out / "astronaut_lq.png")).shape == (384, 384, 3)  # --upscale 2 by default
    assert cv2.imread(str(out / "cropped_faces" / "astronaut_lq_00.png")).shape == (64, 64, 3)
    assert cv2.imread(str(out / "restored_faces" / "astronaut_lq_00.png")).shape == (64, 64, 3)
    assert cv2.imread(str(out / "comparisons" / "astronaut_lq.png")).shape == (384, 768, 3)


def test_large_faces_keep_their_detail_and_are_left_alone_only_when_asked(tmp_path, official_layout_checkpoints,
                                                                          capsys):
    from pathlib import Path

    from difface.face.background import lanczos_upsampler
    from difface.images import read_image
    from difface.metrics.sharpness import detail_ratio

    prior, est = official_layout_checkpoints
    small = cv2.imread(str(Path(__file__).resolve().parents[1] / "examples" / "astronaut_lq.png"))
    big = cv2.resize(small, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)  # face crop ~178 px > 2 x 64
    src = tmp_path / "big.png"
    cv2.imwrite(str(src), big)
    common = ["--prior", str(prior), "--estimator", str(est), "--start-step", "2", "--bg-upsampler", "lanczos",
              "--upscale", "1"]
    assert main(["restore", str(src), "-o", str(tmp_path / "a"), *common, "--max-face-size", "128"]) == 0
    assert "0 face(s) restored; 1 face(s) larger than 128 px left as they were" in capsys.readouterr().err
    assert not (tmp_path / "a" / "restored_faces").exists()
    kept = read_image(tmp_path / "a" / "big.png").rgb  # float32 [0, 1]
    expect = np.round(np.clip(lanczos_upsampler(read_image(src).rgb, 1), 0, 1) * 255) / 255
    np.testing.assert_allclose(kept, expect, atol=1e-6)  # the background alone, no face pasted
    assert main(["restore", str(src), "-o", str(tmp_path / "b"), *common]) == 0  # the default: no limit
    err = capsys.readouterr().err
    assert "1 face(s) restored; face 1" in err and "model 64 px: coarse band restored, fine detail kept" in err
    assert (tmp_path / "b" / "restored_faces" / "big_00.png").is_file()
    out = read_image(tmp_path / "b" / "big.png").rgb
    assert np.abs(out - kept).max() > 0.1  # the face was restored
    assert detail_ratio(out, kept) >= 0.9  # and kept its detail above the model's 64 px band
