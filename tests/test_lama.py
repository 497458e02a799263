"""LaMa FFCResNetGenerator: official layouts, filler fingerprints, golden forwards, checkpoints, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from difface import weights
from difface.data.masks import detect_mask
from difface.models import CONFIGS, FFCResNetGenerator, LamaConfig, build, build_from_config, fill_deterministic
from difface.weights import WeightsError, load_weights

from conftest import golden, manifest

NAMES = ["lama_inpainting256", "lama_small"]


@pytest.fixture(scope="module")
def lama_small():
    return fill_deterministic(build("lama_small"))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_equals_manifest(name):
    m = manifest(name)
    with torch.device("meta"):
        sd = build(name).state_dict()
    assert list(sd) == list(m["state_dict"])  # same keys, same order
    assert {k: list(v.shape) for k, v in sd.items()} == m["state_dict"]
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in sd.items() if v.dtype != torch.float32} == m["dtypes"]
    params = dict(build_from_config(CONFIGS[name]).named_parameters()) if name == "lama_small" else None
    if params is not None:
        assert sorted(k for k in sd if k not in params) == sorted(m["buffers"])
    assert sum(v.numel() for k, v in sd.items() if k not in m["buffers"]) == m["num_params"]
    assert len(sd) == m["num_state_dict_tensors"]
    assert sum(v.numel() for v in sd.values()) == m["num_state_dict_elements"]


@pytest.mark.parametrize("name", NAMES)
def test_official_constructor_arguments_give_our_config(name):
    assert LamaConfig.from_official(manifest(name)["config"]) == CONFIGS[name]


def test_unsupported_official_options_are_refused():
    with pytest.raises(ValueError, match="enable_lfu"):
        LamaConfig.from_official({"resnet_conv_kwargs": {"ratio_gin": 0.75, "ratio_gout": 0.75, "enable_lfu": True}})
    with pytest.raises(ValueError, match="spatial_transform"):
        LamaConfig.from_official({"spatial_transform_layers": [1], "spatial_transform_kwargs": {}})
    with pytest.raises(ValueError, match="add_out_act"):
        LamaConfig(add_out_act="relu")


@pytest.mark.parametrize("name", NAMES)
def test_filler_matches_reference_fingerprint(name):
    fp = manifest(name)["filler_check"]
    sd = fill_deterministic(build(name)).state_dict()
    filled = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert len(filled) == fp["num_filled_tensors"]
    assert sum(v.double().sum().item() for v in filled.values()) == pytest.approx(fp["sum"], rel=1e-9)
    assert sum(v.double().abs().sum().item() for v in filled.values()) == pytest.approx(fp["abs_sum"], rel=1e-9)
    np.testing.assert_allclose(sd[fp["first_key"]].flatten()[:4].numpy(), fp["first_values"], rtol=1e-6)
    np.testing.assert_allclose(sd[fp["last_key"]].flatten()[-4:].numpy(), fp["last_values"], rtol=1e-6)


def test_lama_small_matches_golden(lama_small):
    g = golden("lama_small")
    x = torch.from_numpy(g["x"])
    with torch.no_grad():
        logits = lama_small.logits(x)
        out = lama_small(x)
    np.testing.assert_allclose(logits.numpy(), g["out_logits"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.numpy(), g["out"], atol=1e-5, rtol=0)
    assert out.min() >= 0 and out.max() <= 1


def test_estimator_step_of_the_official_inpainting_sampler(lama_small):
    # sampler_inpaint_small.npz: the official sampler detected the mask on y0 and fed cat(y0, mask)
    # to the LaMa; im_hq is that output clamped to [0, 1].
    g = golden("sampler_inpaint_small")
    y0 = torch.from_numpy(g["y0"])
    mask = detect_mask(y0)
    assert torch.equal(mask, torch.from_numpy(g["mask"]))
    with torch.no_grad():
        hq = lama_small(torch.cat([y0, mask], 1)).clamp(0, 1)
    np.testing.assert_allclose(hq.numpy(), g["im_hq"], atol=1e-5, rtol=0)


def test_forward_batch_and_rectangular_inputs(lama_small):
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 4, 64, 96, generator=g)
    with torch.no_grad():
        both = lama_small(x)
        first = lama_small(x[:1])
    assert both.shape == (2, 3, 64, 96)
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=0)  # eval mode: samples are independent
    with pytest.raises(ValueError, match="divisible by 8"):
        lama_small(torch.rand(1, 4, 60, 64))
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        lama_small(torch.rand(1, 3, 64, 64))


def test_global_branch_uses_the_whole_image(lama_small):
    # The Fourier unit gives every output pixel a receptive field over the whole image: changing one
    # input corner changes the output in the opposite corner, about 90 px away in each axis. The
    # convolutions alone reach about 52 px (7x7 stems, three stride-2 3x3, four 3x3 at 1/8 scale,
    # three transposed 3x3).
    x = torch.rand(1, 4, 128, 128, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[:, :, :4, :4] += 0.5
    with torch.no_grad():
        d = (lama_small.logits(x) - lama_small.logits(y)).abs()
    assert d[..., 96:, 96:].max() > 1e-4
    for block in (lama_small.model[5], lama_small.model[6]):  # without the spectral path: no change there
        for conv in (block.conv1, block.conv2):
            conv.ffc.convg2g.fu.conv_layer.weight.data.mul_(0)  # restored below
    try:
        with torch.no_grad():
            d0 = (lama_small.logits(x) - lama_small.logits(y)).abs()
    finally:
        fill_deterministic(lama_small)
    assert d0[..., 96:, 96:].max() == 0


def _official_layouts(sd):
    no_counters = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    return {
        "bare": sd,
        "trainer_ckpt": {"iters_start": 500000, "log_step": {"train": 1, "val": 1}, "log_step_img": {"train": 1},
                         "state_dict": {f"module.{k}": v for k, v in sd.items()}},
        "ema_ddp": {f"module.{k}": v for k, v in sd.items()},
        "without_bn_counters": no_counters,
    }


@pytest.mark.parametrize("layout", list(_official_layouts({})))
def test_load_weights_reads_official_checkpoint_layouts(lama_small, layout, tmp_path):
    path = tmp_path / "lama_inpainting256.pth"
    torch.save(_official_layouts(lama_small.state_dict())[layout], path)
    fresh = load_weights(build("lama_small"), path)
    for k, v in lama_small.state_dict().items():
        if not k.endswith("num_batches_tracked") or layout != "without_bn_counters":
            assert torch.equal(fresh.state_dict()[k], v), k


def test_load_weights_names_what_does_not_fit(lama_small):
    sd = dict(lama_small.state_dict())
    sd.pop("model.18.bias")
    with pytest.raises(WeightsError, match=r"missing keys \(1\): model\.18\.bias"):
        load_weights(build("lama_small"), sd)
    with pytest.raises(WeightsError, match="mis-shaped"):
        load_weights(build("lama_inpainting256"), lama_small.state_dict())


def test_registry_entry_for_the_official_file():
    e = weights.entry("lama-inpainting256")
    assert e.url == "https://github.com/zsyOAOA/DifFace/releases/download/V1.0/lama_inpainting256.pth"
    assert (e.filename, e.arch, e.kind) == ("lama_inpainting256.pth", "lama_inpainting256", "estimator")
    names = list(weights.REGISTRY)
    assert names[names.index("iddpm-ffhq256") + 1] == "lama-inpainting256"


def test_safetensors_roundtrip_and_arch_inference(lama_small, tmp_path):
    weights.save_network(lama_small, tmp_path / "lama.safetensors", extra={"task": "inpainter"})
    net = weights.load_network(tmp_path / "lama.safetensors")
    assert isinstance(net, FFCResNetGenerator) and net.config == lama_small.config
    for k, v in lama_small.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    from safetensors import safe_open

    with safe_open(str(tmp_path / "lama.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["difface.arch"] == "lama" and meta["difface.task"] == "inpainter"
    weights.save_network(lama_small, tmp_path / "half.safetensors", half=True)
    half = weights.load_network(tmp_path / "half.safetensors")
    key = "model.5.conv1.ffc.convg2g.fu.conv_layer.weight"
    assert torch.equal(half.state_dict()[key], lama_small.state_dict()[key].half().float())
    # a bare official-layout file is recognised by its keys and shapes
    torch.save({"state_dict": lama_small.state_dict()}, tmp_path / "bare.pth")
    assert weights.infer_arch(torch.load(tmp_path / "bare.pth", weights_only=True)["state_dict"]) == "lama_small"
    net2 = weights.load_network(tmp_path / "bare.pth")
    assert torch.equal(net2.model[18].weight, lama_small.model[18].weight)


def test_filler_forward_script_compares_with_a_golden_file(tmp_path):
    """scripts/maintainer/filler_forward.py (the full-size check against official vectors) on the small goldens:
    the same output within 1e-5, and exit status 1 when a reference disagrees."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "maintainer" / "filler_forward.py"
    golden_file = Path(__file__).resolve().parent / "fixtures" / "golden" / "lama_small.npz"
    run = [sys.executable, str(script), "lama_small", "--inputs", str(golden_file), "--compare", "out"]
    ok = subprocess.run([*run, "--atol", "1e-5"], capture_output=True, text=True)
    assert ok.returncode == 0 and "within atol 1e-05" in ok.stdout, ok.stdout + ok.stderr
    bad = np.load(golden_file)
    shifted = tmp_path / "shifted.npz"
    np.savez(shifted, **{k: bad[k] for k in bad.files if k != "out"}, out=bad["out"] + 1e-3)
    run[4] = str(shifted)
    over = subprocess.run([*run, "--atol", "1e-5"], capture_output=True, text=True)
    assert over.returncode == 1 and "OVER atol" in over.stdout, over.stdout + over.stderr
