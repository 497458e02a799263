"""The small model shipped inside the package: present, loadable, and used when no weights are named."""

from pathlib import Path

import cv2
import torch

from difface.cli import main
from difface.core import BUNDLED_DIR, DifFace

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "astronaut_lq.png"  # public domain


def test_bundled_files_are_small_safetensors_with_configs():
    files = [BUNDLED_DIR / "prior.safetensors", BUNDLED_DIR / "estimator.safetensors"]
    assert all(f.is_file() for f in files)
    assert sum(f.stat().st_size for f in files) < 40 * 2**20
    model = DifFace.from_pretrained(device="cpu")
    assert model.image_size == 64 and "bundled" in model.name
    # v2 (docs/model-card.md): start step chosen per image, eta 0; 20 is the fixed start shown beside it
    assert (model.default_start, model.default_start_step, model.default_eta) == ("auto", 20, 0.0)
    assert sum(p.numel() for p in model.prior.parameters()) == 2_407_622
    assert sum(p.numel() for p in model.estimator.parameters()) == 582_139
    assert all(torch.isfinite(p).all() for p in model.prior.parameters())
    # the prior's trained range and the estimator's calibrated rule travel in the weights' metadata
    assert model.t_max == 499
    a = model.autostart
    assert (a.kappa, a.floor, a.t_cap) == (2.0, 0.09, 400) and a.scale > 0
    # since v2.1: the estimator averages its output with the mirrored pass (difface.models.swinir)
    assert model.estimator.config.flip_ensemble and model.estimator.config.residual


def test_bundled_training_configs_parse_and_match_the_weights():
    """The *_train_config.yaml beside the weights are real training configs of these networks."""
    from difface.train.config import load_config

    model = DifFace.from_pretrained(device="cpu")
    est = load_config(BUNDLED_DIR / "estimator_train_config.yaml", "estimator")
    assert est.loss == "l2" and est.data.degradation == "range64-wide"
    shipped = model.estimator.config.to_dict()
    assert {**est.model.to_dict(), "flip_ensemble": True} == shipped  # flip_ensemble is set at export only
    prior = load_config(BUNDLED_DIR / "prior_train_config.yaml", "prior")
    assert prior.diffusion.t_max == model.t_max == 499


def test_auto_default_leaves_a_nearly_clean_face_to_the_estimator_and_diffuses_a_damaged_one():
    """The bundled rule: a clean face (the estimator barely changes it) gets N = 0, a blurred and
    noisy one a start step above 0; a call without start_step uses the rule."""
    from difface.images import image_to_tensor, read_image

    model = DifFace.from_pretrained(device="cpu")
    face = image_to_tensor(read_image(EXAMPLE.parent / "astronaut_face.png").rgb)
    g = torch.Generator().manual_seed(0)
    small = torch.nn.functional.interpolate(face, size=(16, 16), mode="area")
    damaged = (torch.nn.functional.interpolate(small, size=(64, 64), mode="bilinear")
               + 0.06 * torch.randn(face.shape, generator=g)).clamp(0, 1)
    out = model.restore(torch.cat([face, damaged]), seeds=[1, 2])
    assert out.start_steps[0] == 0 and out.start_steps[1] > 0, out.start_steps
    torch.testing.assert_close(out.result[0], out.estimate[0])  # N = 0: the estimate itself


def test_restore_without_weight_options_uses_the_bundled_model(tmp_path, capsys):
    status = main(["restore", str(EXAMPLE), "-o", str(tmp_path), "--start-step", "10", "--save-comparison"])
    assert status == 0
    assert "bundled small model" in capsys.readouterr().err
    out = cv2.imread(str(tmp_path / "astronaut_lq.png"))
    assert out.shape == (384, 384, 3)
    assert (tmp_path / "restored_faces" / "astronaut_lq_00.png").is_file()
