"""Networks of DifFace and their official configurations.

`build(name)` returns a float32 CPU module in eval mode. Reading checkpoints (any official layout)
lives beside the weights registry, in difface.weights (`load_weights`, `load_network`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from difface.models.lama import FFCResNetGenerator, LamaConfig
from difface.models.swinir import SwinIR, SwinIRConfig
from difface.models.unet import UNetConfig, UNetModel

NetConfig = UNetConfig | SwinIRConfig | LamaConfig

# Official configurations (those of the released checkpoints) and the small golden-test configurations.
CONFIGS: dict[str, NetConfig] = {
    "unet_ffhq512": UNetConfig(),
    "unet_ffhq256": UNetConfig(
        image_size=256, model_channels=128, num_res_blocks=2, attention_resolutions=(16, 8),
        channel_mult=(1, 1, 2, 2, 4, 4),
    ),
    "unet_small": UNetConfig(
        image_size=64, model_channels=32, num_res_blocks=(1, 2, 1), attention_resolutions=(16,),
        channel_mult=(1, 2, 2), num_head_channels=32,
    ),
    "swinir_restoration512": SwinIRConfig(),
    "swinir_small": SwinIRConfig(
        img_size=8, embed_dim=36, depths=(2, 2), num_heads=(6, 6), window_size=4,
    ),
    "lama_inpainting256": LamaConfig(),
    "lama_small": LamaConfig(ngf=16, n_blocks=2),
}

# The `difface.arch` names of our safetensors metadata, per config class.
KINDS: dict[str, type] = {"unet": UNetConfig, "swinir": SwinIRConfig, "lama": LamaConfig}
# What each kind of network is in DifFace: the diffusion prior, the restoration estimator, the inpainting estimator.
ROLES: dict[str, str] = {"unet": "prior", "swinir": "estimator", "lama": "inpainter"}


def kind_of(cfg: NetConfig) -> str:
    """'unet' | 'swinir' | 'lama' for a config dataclass (the inverse of KINDS)."""
    for kind, cls in KINDS.items():
        if isinstance(cfg, cls):
            return kind
    raise TypeError(f"unknown config type {type(cfg).__name__}")


def role_of(net: nn.Module) -> str:
    """'prior' | 'estimator' | 'inpainter': the ROLES entry of a network built here (by its config)."""
    return ROLES[kind_of(net.config)]


DERIVED_BUFFERS = ("relative_position_index", "attn_mask")


def build_from_config(cfg: NetConfig) -> nn.Module:
    """Instantiate the network for a config dataclass (eval mode, float32, CPU)."""
    if isinstance(cfg, UNetConfig):
        model: nn.Module = UNetModel(cfg)
    elif isinstance(cfg, SwinIRConfig):
        model = SwinIR(cfg)
    elif isinstance(cfg, LamaConfig):
        model = FFCResNetGenerator(cfg)
    else:
        raise TypeError(f"unknown config type {type(cfg).__name__}")
    return model.eval()


def build(name: str) -> nn.Module:
    """Build a named network: one of `CONFIGS` (eval mode, float32, CPU, untrained weights)."""
    if name not in CONFIGS:
        raise KeyError(f"unknown network {name!r}; known: {', '.join(CONFIGS)}")
    return build_from_config(CONFIGS[name])


def config_from_dict(kind: str, d: Mapping) -> NetConfig:
    """Config dataclass from a plain dict (as stored beside our safetensors); unknown keys rejected.

    kind: 'unet' | 'swinir' | 'lama' (KINDS)."""
    if kind not in KINDS:
        raise ValueError(f"unknown network kind {kind!r}; known: {', '.join(KINDS)}")
    cls = KINDS[kind]
    ignored = {"dims", "use_fp16", "resblock_updown", "use_new_attention_order"}
    fields = set(cls.__dataclass_fields__) - {"extra"}
    unknown = set(d) - fields - ignored
    if unknown:
        raise ValueError(f"unknown {kind} config keys: {sorted(unknown)}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields}
    return cls(**kw)


def fill_deterministic(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fill weights by the `difface-fill-v1` rule, the one the reference vectors of the tests were made with.

    Keys in sorted order draw from one CPU generator: tensors with ndim >= 2 get
    randn / sqrt(fan_in); 1-D `weight`/`running_var` get 1 + 0.01 randn; others 0.01 randn.
    Derived buffers (relative_position_index, attn_mask, num_batches_tracked) are kept.
    """
    import math

    g = torch.Generator().manual_seed(seed)
    sd = module.state_dict()
    new = {}
    for key in sorted(sd):
        leaf = key.rsplit(".", 1)[-1]
        if leaf in DERIVED_BUFFERS + ("num_batches_tracked",):
            continue
        shape = sd[key].shape
        r = torch.randn(shape, generator=g, dtype=torch.float32)
        if len(shape) >= 2:
            new[key] = r * (1.0 / math.sqrt(math.prod(shape[1:])))
        elif leaf in ("weight", "running_var"):
            new[key] = 1.0 + 0.01 * r
        else:
            new[key] = 0.01 * r
    module.load_state_dict(new, strict=False)
    return module


__all__ = [
    "CONFIGS", "KINDS", "FFCResNetGenerator", "LamaConfig", "NetConfig", "SwinIR", "SwinIRConfig", "UNetConfig",
    "UNetModel", "build", "build_from_config", "config_from_dict", "fill_deterministic", "kind_of",
    "ROLES", "role_of",
]
