"""Reading weights into networks: any official checkpoint layout (`read_state_dict`, `load_weights`), our
safetensors with their architecture and metadata (`load_network`, `save_network`, `read_metadata`,
`trained_t_max`, `autostart_rule`). The registry, the cache and verified downloads are difface.hub; their
names are importable from here too.

Checkpoints are read with `weights_only=True` (a pickle that would run code is refused, never run)
or as safetensors; a `.pth` whose zip entries are compressed or claim more bytes than the file holds
(a zip bomb) is refused before anything is decompressed; keys, shapes, dtypes and finiteness are
checked before a value is copied into a network.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from difface import models
from difface.atomic import atomic_write_bytes
from difface.hub import (  # noqa: F401 (the registry and the cache, importable from here as before)
    REGISTRY,
    WeightsEntry,
    WeightsError,
    WeightsMismatch,
    WeightsUnavailable,
    bundled_manifest,
    cache_dir,
    cache_hint,
    check_bundled,
    download,
    entry,
    local_path,
    missing_message,
    missing_weights,
    register,
    resolve,
    sha256_of,
    unavailable_message,
    verify,
    write_bundled_manifest,
)


def _check_zip(path: Path) -> None:
    """Refuse a zip-format .pth whose entries are compressed or claim more bytes than the file holds (torch writes
    its checkpoints uncompressed): a zip bomb is refused before anything is decompressed."""
    if not zipfile.is_zipfile(path):
        return
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise WeightsError(f"{path}: not a readable checkpoint (broken zip: {e}){cache_hint(path)}") from None
    packed = [i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED]
    claimed = sum(i.file_size for i in infos)
    if packed or claimed > size:
        what = (f"{len(packed)} compressed entr{'y' if len(packed) == 1 else 'ies'} ({', '.join(packed[:3])})"
                if packed else f"entries claiming {claimed} bytes in a file of {size}")
        raise WeightsError(f"{path}: refused: not a PyTorch checkpoint as torch writes them: {what} (a zip bomb "
                           "would expand in memory); nothing was decompressed")


def _torch_load_message(e: Exception) -> str:
    """The line of torch.load's error that says what was wrong (its full text is a page of advice)."""
    text = str(e)
    for line in text.splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            what = line[line.index("Unsupported"):].split(" was not")[0].strip()
            return ("refused: it holds Python objects, not only tensors (" + what
                    + "); difface loads weights only and never runs code from a weights file")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    return f"not a readable weights-only checkpoint ({first[:300]})"


def read_state_dict(source: str | os.PathLike | Mapping) -> dict[str, torch.Tensor]:
    """Read a checkpoint into a flat {key: tensor} dict, unwrapping the official containers.

    Accepts a path (.safetensors, or .pth/.pt read with `weights_only=True`) or a mapping; unwraps
    `{"state_dict": ...}`, `{"params_ema": ...}`, `{"params": ...}` and `{"ema": ...}`.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint not found")
        check_bundled(path)
        if path.stat().st_size == 0:
            raise WeightsError(f"{path}: the weights file is empty (0 bytes){cache_hint(path)}")
        if path.suffix == ".safetensors":
            try:
                sd: Mapping = load_file(str(path))
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
                raise WeightsError(f"{path}: not a readable safetensors file ({str(e)[:300]}){cache_hint(path)}") \
                    from None
        else:
            _check_zip(path)
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - report which file failed and why
                raise WeightsError(f"{path}: {_torch_load_message(e)}{cache_hint(path)}") from None
    else:
        sd = source
    for wrapper in ("state_dict", "params_ema", "params", "ema"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
            break
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        where = f"{source}: " if isinstance(source, (str, os.PathLike)) else ""
        raise WeightsError(f"{where}checkpoint is not a mapping of parameter names to tensors")
    return dict(sd)


def remap_official_keys(sd: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> dict:
    """Make `sd` key-compatible with `reference` (the module's own state dict).

    Strips (or adds) a DDP `module.` prefix and fills the derived SwinIR buffers
    (`relative_position_index`, `attn_mask`) and BatchNorm `num_batches_tracked` counters (unused in
    eval mode) from the module when the checkpoint lacks them.
    """
    sd = dict(sd)
    ours_prefixed = next(iter(reference), "").startswith("module.")
    theirs_prefixed = next(iter(sd), "").startswith("module.")
    if theirs_prefixed and not ours_prefixed:
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    elif ours_prefixed and not theirs_prefixed:
        sd = {f"module.{k}": v for k, v in sd.items()}
    for k, v in reference.items():
        if k not in sd and k.rsplit(".", 1)[-1] in models.DERIVED_BUFFERS + ("num_batches_tracked",):
            sd[k] = v
    return sd


def load_weights(module: nn.Module, source: str | os.PathLike | Mapping) -> nn.Module:
    """Load a checkpoint into `module` strictly, in any official layout; returns the module.

    Raises WeightsError listing missing, unexpected and mis-shaped keys when they do not fit.
    """
    reference = module.state_dict()
    sd = remap_official_keys(read_state_dict(source), reference)
    missing = [k for k in reference if k not in sd]
    unexpected = [k for k in sd if k not in reference]
    misshaped = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
        for k, v in reference.items()
        if k in sd and sd[k].shape != v.shape
    ]
    # fp16/bf16 values load into fp32 networks (our half-precision files); an integer, bool or complex tensor
    # where the network has floats (or the reverse) is not a value of this network
    mistyped = [
        f"{k}: checkpoint {sd[k].dtype} vs model {v.dtype}"
        for k, v in reference.items()
        if k in sd and (sd[k].is_floating_point() != v.is_floating_point() or sd[k].is_complex() != v.is_complex())
    ]
    # a NaN or an infinity makes the sum non-finite; the sum (16 ms for 500 MB here, isfinite(v).all() 360 ms) is
    # checked exactly only when it is not finite (a sum can also overflow)
    nonfinite = [k for k, v in sd.items() if k in reference and v.is_floating_point()
                 and not bool(torch.isfinite(v.sum())) and not bool(torch.isfinite(v).all())]
    if missing or unexpected or misshaped or mistyped or nonfinite:
        name = f"{source}" if isinstance(source, (str, os.PathLike)) else "state dict"

        def show(title: str, items: list[str]) -> str:
            more = f" ... and {len(items) - 10} more" if len(items) > 10 else ""
            return f"\n  {title} ({len(items)}): " + ", ".join(items[:10]) + more if items else ""

        raise WeightsError(
            f"{name} does not fit {type(module).__name__}:"
            + show("missing keys", missing)
            + show("unexpected keys", unexpected)
            + show("mis-shaped keys", misshaped)
            + show("keys of another dtype", mistyped)
            + show("keys with NaN or infinite values", nonfinite)
        )
    module.load_state_dict(sd, strict=True)
    return module


_SHAPES: dict[str, dict[str, tuple]] = {}


def _config_shapes(name: str) -> dict[str, tuple]:
    """{key: shape} of the network of models.CONFIGS[name], derived buffers left out (built once, on meta)."""
    if name not in _SHAPES:
        with torch.device("meta"):
            ref = models.build_from_config(models.CONFIGS[name]).state_dict()
        _SHAPES[name] = {k: tuple(v.shape) for k, v in ref.items() if not k.endswith(models.DERIVED_BUFFERS)}
    return _SHAPES[name]


def infer_arch(sd: dict[str, torch.Tensor]) -> str:
    """The name in `models.CONFIGS` whose state-dict keys and shapes equal those of `sd`."""
    keys = {k.removeprefix("module."): tuple(v.shape) for k, v in sd.items()}
    n = len([k for k in keys if not k.endswith(models.DERIVED_BUFFERS)])
    for name in models.CONFIGS:
        ref = _config_shapes(name)
        if all(keys.get(k) == shape for k, shape in ref.items()) and n == len(ref):
            return name
    raise ValueError("the checkpoint does not match any known network configuration")


def closest_arch(sd: dict[str, torch.Tensor]) -> str | None:
    """The configuration sharing the most (key, shape) pairs with `sd`, when it shares at least half of its own."""
    keys = {k.removeprefix("module."): tuple(v.shape) for k, v in sd.items()}
    best, score = None, 0.0
    for name in models.CONFIGS:
        ref = _config_shapes(name)
        same = sum(keys.get(k) == shape for k, shape in ref.items()) / max(len(ref), 1)
        if same > score:
            best, score = name, same
    return best if score >= 0.5 else None


def read_metadata(path: str | os.PathLike | None) -> dict[str, str]:
    """The metadata of one of our safetensors files ({} for None and for other files)."""
    if path is None or Path(path).suffix != ".safetensors":
        return {}
    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})


def load_networks(*sources: str | os.PathLike) -> list[nn.Module]:
    """`load_network` of each source; when registry files among them are neither cached nor downloadable, one
    WeightsUnavailable names every missing one (not only the first) and the command that gets them all."""
    try:
        return [load_network(s) for s in sources]
    except WeightsUnavailable as err:
        absent = missing_weights(sources)
        if not absent:
            raise
        raise WeightsUnavailable(missing_message(absent, str(err.__cause__ or ""))) from err.__cause__


def trained_t_max(path: str | os.PathLike | None) -> int | None:
    """The largest timestep a prior was trained on, from our safetensors metadata (None: unknown/all)."""
    value = read_metadata(path).get("difface.t_max")
    return None if value is None else int(value)


def autostart_rule(path: str | os.PathLike | None) -> str | None:
    """The calibrated auto-start rule (JSON) an estimator file carries (None: none)."""
    return read_metadata(path).get("difface.autostart")


def load_network(source: str | os.PathLike, *, arch: str | None = None, allow_download: bool = True) -> nn.Module:
    """Build and load a network from a registry name or a file (eval mode, float32, CPU).

    Our safetensors carry their architecture in the metadata (`difface.arch` and `difface.config`);
    for other files the architecture is the registry's, `arch`, or inferred from the keys and shapes.
    """
    path = resolve(source, allow_download=allow_download)
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: the weights file is empty (0 bytes){cache_hint(path)}")
    check_bundled(path)
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise WeightsError(f"{path}: not a readable safetensors file ({str(e)[:300]}){cache_hint(path)}") \
                from None
        if "difface.config" in meta:
            cfg = models.config_from_dict(meta["difface.arch"], json.loads(meta["difface.config"]))
            return load_weights(models.build_from_config(cfg), path)
    if arch is None and str(source) in REGISTRY:
        arch = REGISTRY[str(source)].arch
    if arch is None:
        sd = read_state_dict(path)
        try:
            arch = infer_arch(sd)
        except ValueError:
            # the nearest known network (most keys of the same shape) says which keys are wrong
            arch = closest_arch(sd)
            if arch is None:
                raise WeightsError(f"{path}: the checkpoint does not match any known network configuration "
                                   f"({len(sd)} tensors)") from None
    return load_weights(models.build(arch), path)


def save_network(module: nn.Module, path: str | os.PathLike, *, half: bool = False, extra: dict | None = None) -> None:
    """Save a UNet/SwinIR/LaMa as safetensors with its config in the metadata (atomic write).

    Metadata: `difface.arch` ('unet' | 'swinir' | 'lama'), `difface.config` (JSON of the config's
    to_dict) and `difface.<key>` for each entry of `extra`. Derived SwinIR buffers are left out
    (recomputed on load); integer buffers (BatchNorm counters) stay integer with `half`.
    """
    kind = models.kind_of(module.config)
    sd = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()
          if not k.endswith(models.DERIVED_BUFFERS)}
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    meta = {"difface.arch": kind, "difface.config": json.dumps(module.config.to_dict())}
    meta.update({f"difface.{k}": str(v) for k, v in (extra or {}).items()})
    atomic_write_bytes(path, save(sd, metadata=meta))
