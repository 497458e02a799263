"""Estimator training with validation, prior sample grids with restorations, exported weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _train_utils import TINY_SWINIR, single_thread, tiny_config, write_images
from difface.cli import main
from difface.data.datasets import PairedFolder
from difface.images import read_image
from difface.models import SwinIR, SwinIRConfig, build_from_config
from difface.train.config import dump_config
from difface.train.samples import image_grid
from difface.weights import load_network, save_network

_one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    write_images(root / "train", 8)
    write_images(root / "val" / "hq", 3, seed=5)
    write_images(root / "val" / "lq", 3, seed=6)  # any image pairs by name will do
    return root


def _psnr_y_reference(a: np.ndarray, b: np.ndarray) -> float:
    """BT.601 Y on the uint8 grid (the official validation), written out independently of the package."""
    ya = 16 + (65.481 * np.rint(a[..., 0] * 255) + 128.553 * np.rint(a[..., 1] * 255)
               + 24.966 * np.rint(a[..., 2] * 255)) / 255
    yb = 16 + (65.481 * np.rint(b[..., 0] * 255) + 128.553 * np.rint(b[..., 1] * 255)
               + 24.966 * np.rint(b[..., 2] * 255)) / 255
    return 10 * np.log10(255**2 / np.mean((ya - yb) ** 2))


def test_estimator_training_validates_and_exports(data, tmp_path):
    cfg = tiny_config("estimator", data / "train", data={"val_lq": str(data / "val" / "lq"),
                      "val_hq": str(data / "val" / "hq"), "degradation": "moderate"}, max_steps=2)
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    run = tmp_path / "run"
    assert main(["train", "estimator", "--config", str(tmp_path / "c.yaml"), "--out", str(run)]) == 0
    row = json.loads((run / "val.jsonl").read_text().splitlines()[-1])
    model = load_network(run / "estimator.safetensors")
    assert isinstance(model, SwinIR) and row["step"] == 2
    pairs = PairedFolder(data / "val" / "lq", data / "val" / "hq", size=32)
    with torch.no_grad():
        preds = [model(pairs[i]["lq"][None])[0].clamp(0, 1).permute(1, 2, 0).numpy() for i in range(3)]
    gts = [pairs[i]["gt"].permute(1, 2, 0).numpy() for i in range(3)]
    expected = np.mean([_psnr_y_reference(p, g) for p, g in zip(preds, gts)])
    assert row["psnr_y"] == pytest.approx(expected, abs=1e-3)
    grid = read_image(run / "samples" / "step_00000002_val.png").rgb
    assert grid.shape == (3 * 34 + 2, 3 * 34 + 2, 3)  # 3 rows x (lq | output | hq), 2 px gaps


def test_prior_grids_with_restorations(data, tmp_path):
    est = build_from_config(SwinIRConfig(**{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in TINY_SWINIR.items()}))
    save_network(est, tmp_path / "est.safetensors")
    cfg = tiny_config("prior", data / "train", max_steps=1,
                      data={"val_lq": str(data / "val" / "lq"), "val_hq": str(data / "val" / "hq"), "val_count": 2},
                      sample={"num_samples": 4, "respacing": "ddim10", "estimator": str(tmp_path / "est.safetensors"),
                              "restore_respacing": "ddim25", "start_step": 5})
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    run = tmp_path / "run"
    assert main(["train", "prior", "--config", str(tmp_path / "c.yaml"), "--out", str(run)]) == 0
    samples = read_image(run / "samples" / "step_00000001_samples.png").rgb
    assert samples.shape == (2 * 34 + 2, 2 * 34 + 2, 3)  # 4 samples as 2 x 2
    restore = read_image(run / "samples" / "step_00000001_restore.png").rgb
    assert restore.shape == (2 * 34 + 2, 4 * 34 + 2, 3)  # lq | estimate | restoration | hq
    row = json.loads((run / "val.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(row["restore_psnr_y"])
    out = tmp_path / "restored"
    assert main(["restore", str(data / "val" / "lq"), "-o", str(out), "--aligned", "--device", "cpu",
                 "--prior", str(run / "prior.safetensors"), "--estimator", str(tmp_path / "est.safetensors"),
                 "--steps", "ddim25", "--start-step", "5"]) == 0
    assert len(list(out.glob("*.png"))) == 3


def test_image_grid_layout():
    a = torch.zeros(2, 3, 4, 5)
    b = torch.ones(2, 3, 4, 5) * 0.5
    b[1] = 0.25
    g = image_grid([a, b], pad=1)
    assert g.shape == (2 * 5 + 1, 2 * 6 + 1, 3)
    assert (g[0] == 1).all() and (g[:, 0] == 1).all()  # padding is white
    assert (g[1:5, 1:6] == 0).all() and (g[1:5, 7:12] == 0.5).all() and (g[6:10, 7:12] == 0.25).all()
