"""The small model shipped inside the package: present, loadable, and used when no weights are named."""

from pathlib import Path

import cv2
import torch

from difface.cli import main
from difface.restore import BUNDLED_DIR, DifFace

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut_lq.png"  # public domain


def test_bundled_files_are_small_safetensors_with_configs():
    files = [BUNDLED_DIR / "prior.safetensors", BUNDLED_DIR / "estimator.safetensors"]
    assert all(f.is_file() for f in files)
    assert sum(f.stat().st_size for f in files) < 40 * 2**20
    model = DifFace.load()
    assert model.image_size == 64 and "bundled" in model.name
    assert (model.default_start_step, model.default_eta) == (20, 0.0)  # measured in docs/model-card.md
    assert sum(p.numel() for p in model.prior.parameters()) == 2_407_622
    assert sum(p.numel() for p in model.estimator.parameters()) == 688_379
    assert all(torch.isfinite(p).all() for p in model.prior.parameters())


def test_restore_without_weight_options_uses_the_bundled_model(tmp_path, capsys):
    status = main(["restore", str(EXAMPLE), "-o", str(tmp_path), "--start-step", "10", "--save-comparison"])
    assert status == 0
    assert "bundled small model" in capsys.readouterr().err
    out = cv2.imread(str(tmp_path / "astronaut_lq.png"))
    assert out.shape == (384, 384, 3)
    assert (tmp_path / "restored_faces" / "astronaut_lq_00.png").is_file()
