import numpy as np
import pytest
import torch

from difface.models import build, fill_deterministic
from difface.models.unet import set_sdpa
from difface.weights import WeightsError, load_weights

from conftest import golden, manifest

NAMES = ["unet_ffhq512", "unet_ffhq256", "swinir_restoration512", "unet_small", "swinir_small"]


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_equals_manifest(name):
    m = manifest(name)
    with torch.device("meta"):
        sd = build(name).state_dict()
    assert list(sd) == list(m["state_dict"])  # same keys, same order
    assert {k: list(v.shape) for k, v in sd.items()} == m["state_dict"]
    assert {k: str(v.dtype).removeprefix("torch.") for k, v in sd.items() if v.dtype != torch.float32} == m["dtypes"]
    assert sum(v.numel() for k, v in sd.items() if k not in m["buffers"]) == m["num_params"]


@pytest.mark.parametrize("name", ["unet_small", "swinir_small", "swinir_restoration512"])
def test_filler_matches_reference_fingerprint(name):
    fp = manifest(name)["filler_check"]
    sd = fill_deterministic(build(name)).state_dict()
    filled = {k: v for k, v in sd.items() if k.rsplit(".", 1)[-1] not in ("relative_position_index", "attn_mask")}
    assert len(filled) == fp["num_filled_tensors"]
    assert sum(v.double().sum().item() for v in filled.values()) == pytest.approx(fp["sum"], rel=1e-9)
    assert sum(v.double().abs().sum().item() for v in filled.values()) == pytest.approx(fp["abs_sum"], rel=1e-9)
    np.testing.assert_allclose(sd[fp["first_key"]].flatten()[:4].numpy(), fp["first_values"], rtol=1e-6)
    np.testing.assert_allclose(sd[fp["last_key"]].flatten()[-4:].numpy(), fp["last_values"], rtol=1e-6)


@pytest.mark.parametrize("sdpa", [True, False])
def test_unet_small_matches_golden(small_models, sdpa):
    g = golden("unet_small")
    unet = small_models[0]
    set_sdpa(unet, sdpa)
    with torch.no_grad():
        out = unet(torch.from_numpy(g["x"]), torch.from_numpy(g["t"]))
        out_b2 = unet(torch.from_numpy(g["x_b2"]), torch.from_numpy(g["t_b2"]))
    set_sdpa(unet, True)
    np.testing.assert_allclose(out.numpy(), g["out"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out_b2.numpy(), g["out_b2"], atol=1e-5, rtol=0)


def test_swinir_small_matches_golden(small_models):
    g = golden("swinir_small")
    swin = small_models[1]
    with torch.no_grad():
        np.testing.assert_allclose(swin(torch.from_numpy(g["x"])).numpy(), g["out"], atol=1e-5, rtol=0)
        # non-square input: the shifted-window mask is recomputed for the 16x12 feature map
        np.testing.assert_allclose(swin(torch.from_numpy(g["x_rect"])).numpy(), g["out_rect"], atol=1e-5, rtol=0)


def _layouts(sd):
    no_buffers = {k: v for k, v in sd.items() if not k.endswith(("attn_mask", "relative_position_index"))}
    return {
        "bare": sd,
        "state_dict": {"state_dict": sd, "iters_start": 5},
        "params_ema": {"params_ema": sd},
        "module_prefix": {f"module.{k}": v for k, v in sd.items()},
        "no_derived_buffers": no_buffers,
        "prefixed_without_buffers": {"state_dict": {f"module.{k}": v for k, v in no_buffers.items()}},
    }


@pytest.mark.parametrize("layout", list(_layouts({})))
def test_load_weights_accepts_official_layouts(small_models, layout, tmp_path):
    swin = small_models[1]
    source = _layouts(swin.state_dict())[layout]
    path = tmp_path / "ckpt.pth"
    torch.save(source, path)
    fresh = load_weights(build("swinir_small"), path)
    for k, v in swin.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_load_weights_reports_missing_unexpected_misshaped(small_models):
    sd = dict(small_models[0].state_dict())
    sd.pop("out.2.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["out.0.weight"] = torch.zeros(7)
    with pytest.raises(WeightsError) as e:
        load_weights(build("unet_small"), sd)
    msg = str(e.value)
    assert "missing keys (1): out.2.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "out.0.weight: checkpoint (7,) vs model (32,)" in msg


def test_load_weights_never_unpickles_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": Evil()}}, path)
    with pytest.raises(WeightsError, match="evil.pth"):
        load_weights(build("unet_small"), path)


def test_safetensors_roundtrip_with_config(small_models, tmp_path):
    from difface.weights import load_network, save_network

    save_network(small_models[1], tmp_path / "e.safetensors")
    net = load_network(tmp_path / "e.safetensors")
    assert net.config == small_models[1].config
    for k, v in small_models[1].state_dict().items():
        assert torch.equal(net.state_dict()[k], v)
    save_network(small_models[0], tmp_path / "p16.safetensors", half=True)
    net16 = load_network(tmp_path / "p16.safetensors")
    w = small_models[0].state_dict()["out.2.weight"]
    assert torch.equal(net16.state_dict()["out.2.weight"], w.half().float())
