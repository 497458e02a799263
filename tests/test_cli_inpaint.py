"""`difface inpaint` end to end with filler-weight networks (small UNet prior + small LaMa)."""

from __future__ import annotations

import hashlib
import shutil

import cv2
import numpy as np
import pytest
import torch

from difface.cli import main
from difface.data.masks import feathered_mask
from difface.models import build, fill_deterministic
from difface.weights import save_network


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("inpaint_weights")
    save_network(fill_deterministic(build("unet_small")), d / "prior.safetensors")
    save_network(fill_deterministic(build("lama_small")), d / "lama.safetensors")
    save_network(fill_deterministic(build("swinir_small")), d / "swinir.safetensors")
    return d


def _model(d, estimator="lama.safetensors"):
    return ["--prior", str(d / "prior.safetensors"), "--estimator", str(d / estimator), "--start-step", "3"]


def _face(seed: int, hw=(64, 64)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]] / 64.0
    img = np.stack([np.sin(5 * xx + seed), np.cos(4 * yy), xx * yy], -1) * 0.35 + 0.5
    return np.clip(np.rint((img + 0.02 * rng.standard_normal(img.shape)) * 255), 1, 255).astype(np.uint8)


def _run(args, capsys):
    try:
        status = main(args)
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err


def test_zero_pixels_are_filled_and_known_pixels_kept(weights, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    img = _face(0)
    img[20:40, 15:45] = 0  # the official convention: missing pixels are exactly 0
    cv2.imwrite(str(src / "a.png"), img)
    status, err = _run(["inpaint", str(src), "-o", str(tmp_path / "out"), *_model(weights), "--save-comparison"],
                       capsys)
    assert status == 0, err
    out = cv2.imread(str(tmp_path / "out" / "a.png"))
    known = np.ones(img.shape[:2], bool)
    known[20:40, 15:45] = False
    assert np.array_equal(out[known], img[known])
    assert out[~known].mean() > 5  # the hole is filled, not left black
    assert (tmp_path / "out" / "comparisons" / "a.png").is_file()
    assert "inpainted 1 of 1" in err


def test_mask_folder_pairs_by_stem_and_a_missing_mask_fails_alone(weights, tmp_path, capsys):
    src, masks = tmp_path / "in", tmp_path / "masks"
    src.mkdir()
    masks.mkdir()
    for i, name in enumerate(["a", "b", "c"]):
        cv2.imwrite(str(src / f"{name}.png"), _face(i, (80, 72)))
    hole = np.zeros((40, 36), np.uint8)  # half size: resized nearest to 80x72
    hole[10:25, 5:20] = 255
    cv2.imwrite(str(masks / "a.png"), hole)
    cv2.imwrite(str(masks / "b.jpg"), hole)
    cv2.imwrite(str(masks / "unrelated.png"), hole)
    status, err = _run(["inpaint", str(src), "-o", str(tmp_path / "out"), *_model(weights), "--mask", str(masks),
                        "--batch-size", "2"], capsys)
    assert status == 1 and "Traceback" not in err
    assert f"failed: {src / 'c.png'}: " in err and "no mask named c.*" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["a.png", "b.png"]
    a_in, a_out = cv2.imread(str(src / "a.png")), cv2.imread(str(tmp_path / "out" / "a.png"))
    big = cv2.resize(hole, (72, 80), interpolation=cv2.INTER_NEAREST) > 127
    # 80x72 is larger than the 64 px model: the fill is blended in over a soft edge of 2 model pixels (2.5 px)
    edge = feathered_mask(torch.from_numpy(big[None, None].astype(np.float32)), 2 * 80 / 64)[0, 0].numpy() > 0
    assert edge.sum() > big.sum() and np.array_equal(a_out[~edge], a_in[~edge])
    assert not np.array_equal(a_out[big], a_in[big])
    # batching changes nothing: a alone gives the same file
    solo = tmp_path / "solo"
    solo.mkdir()
    shutil.copy(src / "a.png", solo / "a.png")
    assert _run(["inpaint", str(solo), "-o", str(tmp_path / "out1"), *_model(weights), "--mask", str(masks)],
                capsys)[0] == 0
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "out" / "a.png",
                                                                   tmp_path / "out1" / "a.png")]
    assert digest[0] == digest[1]


@pytest.mark.parametrize("case", ["empty mask", "full mask", "no zeros and no mask"])
def test_unusable_masks_fail_that_input_with_a_reason(case, weights, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _face(1))
    args = ["inpaint", str(src), "-o", str(tmp_path / "out"), *_model(weights)]
    if case != "no zeros and no mask":
        m = np.full((64, 64), 0 if case == "empty mask" else 255, np.uint8)
        cv2.imwrite(str(tmp_path / "m.png"), m)
        args += ["--mask", str(tmp_path / "m.png")]
    status, err = _run(args, capsys)
    assert status == 1 and "Traceback" not in err and "a.png" in err
    assert {"empty mask": "no pixel", "full mask": "every pixel", "no zeros and no mask": "no missing pixels"}[case] \
        in err
    assert not list((tmp_path / "out").glob("*.png"))


def test_estimator_only_is_the_lama_fill(weights, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    img = _face(2)
    img[10:30, 10:30] = 0
    cv2.imwrite(str(src / "a.png"), img)
    status, err = _run(["inpaint", str(src), "-o", str(tmp_path / "out"), *_model(weights), "--start-step", "0",
                        "--save-comparison"], capsys)
    assert status == 0
    panels = cv2.imread(str(tmp_path / "out" / "comparisons" / "a.png"))
    out = cv2.imread(str(tmp_path / "out" / "a.png"))
    est = panels[:, 64:128]
    assert np.array_equal(out[10:30, 10:30], est[10:30, 10:30])  # with N = 0 the fill is the estimate


@pytest.mark.parametrize("extra,needle", [(["--start-step", "auto"], "--start-step"),
                                          (["--estimator", "SWINIR"], "restoration"),
                                          (["--mask", "/no/such/mask.png"], "--mask"),
                                          (["--eta", "1.5"], "--eta")])
def test_usage_errors(extra, needle, weights, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), _face(0))
    model = _model(weights)
    if extra[0] == "--estimator":
        model[3], extra = str(weights / "swinir.safetensors"), []
    status, err = _run(["inpaint", str(src), "-o", str(tmp_path / "out"), *model, *extra], capsys)
    assert status == 2 and needle in err and "Traceback" not in err
