"""Training configs: strict YAML, official values of the shipped files, overrides, resume checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from difface.models import CONFIGS, UNetConfig, build_from_config
from difface.train.config import (
    ConfigError,
    apply_overrides,
    check_resumable,
    dump_config,
    from_dict,
    load_config,
)

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"


def test_unknown_keys_and_wrong_types_are_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-4\n  learning_rate: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*'optim\.learning_rate'"):
        load_config(bad, "prior")
    with pytest.raises(ConfigError, match="optim.batch_size: expected an integer"):
        from_dict({"optim": {"batch_size": 2.5}}, "prior")
    with pytest.raises(ConfigError, match="model.unet.channel_muls"):
        from_dict({"model": {"unet": {"channel_muls": [1]}}}, "prior")
    with pytest.raises(ConfigError, match="precision"):
        from_dict({"precision": "fp8"}, "prior")
    with pytest.raises(ConfigError, match="needs a swinir"):
        from_dict({"model": {"unet": {}}}, "estimator")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_numbers_without_dot_are_read_as_floats(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model: unet_small\noptim:\n  lr: 1e-4\n  betas: [0.9, 0.99]\n")  # YAML 1.1 reads 1e-4 as a string
    cfg = load_config(f, "prior")
    assert cfg.optim.lr == 1e-4 and cfg.optim.betas == (0.9, 0.99)


def test_official_configs_hold_the_spec_values():
    prior = load_config(CONFIG_DIR / "prior_ffhq512.yaml", "prior")
    assert prior.model == CONFIGS["unet_ffhq512"]
    o = prior.optim
    assert (o.lr, o.warmup_steps, o.schedule, o.batch_size, o.micro_batch, o.ema_rate, o.weight_decay) == (
        1e-4, 10_000, "constant", 64, 8, 0.999, 0.0)
    assert (prior.max_steps, prior.data.flip, prior.diffusion.t_max, prior.diffusion.focus_prob) == (
        800_000, False, None, 0.0)
    est = load_config(CONFIG_DIR / "estimator_ffhq512.yaml", "estimator")
    assert est.model == CONFIGS["swinir_restoration512"]
    o = est.optim
    assert (o.lr, o.schedule, o.eta_min, o.cosine_steps, o.batch_size, o.micro_batch, o.ema_rate) == (
        5e-5, "cosine", 5e-6, 300_000, 32, 8, None)
    assert (est.loss, est.max_steps, est.data.degradation, est.image_size) == ("l1", 300_000, "gfpgan", 512)


def test_tiny_configs_build_small_networks():
    prior = load_config(CONFIG_DIR / "prior_tiny64.yaml", "prior")
    assert prior.image_size == 64 and isinstance(prior.model, UNetConfig)
    n = sum(p.numel() for p in build_from_config(prior.model).parameters())
    assert 2.2e6 < n < 2.6e6
    est = load_config(CONFIG_DIR / "estimator_tiny64.yaml", "estimator")
    assert est.image_size == 64 and est.model.img_size * est.model.sf == 64
    n = sum(p.numel() for p in build_from_config(est.model).parameters())
    assert 4e5 < n < 1e6


def test_overrides_and_round_trip():
    cfg = from_dict({}, "prior")
    cfg2 = apply_overrides(cfg, ["optim.lr=2e-4", "data.size=64", "model.unet.image_size=64",
                                 "optim.betas=[0.8, 0.9]", "data.val_lq=null"])
    assert (cfg2.optim.lr, cfg2.data.size, cfg2.model.image_size, cfg2.optim.betas) == (2e-4, 64, 64, (0.8, 0.9))
    assert cfg.optim.lr == 1e-4  # the original is unchanged (frozen)
    assert from_dict(yaml.safe_load(dump_config(cfg2)), "prior") == cfg2
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(cfg, ["optim.lr"])
    with pytest.raises(ConfigError, match="'optim.lrr'"):
        apply_overrides(cfg, ["optim.lrr=1"])


def test_network_by_name():
    cfg = from_dict({"model": "swinir_small"}, "estimator")
    assert cfg.model == CONFIGS["swinir_small"] and cfg.task == "estimator"


def test_resume_allows_only_harmless_changes():
    cfg = from_dict({}, "prior")
    old = cfg.to_dict()
    assert check_resumable(old, apply_overrides(cfg, ["max_steps=10", "sample.eta=1.0"])) == ["max_steps", "sample.eta"]
    with pytest.raises(ConfigError, match="optim.lr"):
        check_resumable(old, apply_overrides(cfg, ["optim.lr=1e-3"]))
