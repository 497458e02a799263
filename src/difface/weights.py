"""Registry of downloadable weights, a local cache, verified downloads and network loading.

Cache folder: `$DIFFACE_HOME`, else `$XDG_CACHE_HOME/difface`, else `~/.cache/difface`; files live in
its `weights/` sub-folder. A download goes to a temporary file in that folder, is checked against
the expected size and SHA-256 (when the registry knows them) and renamed into place atomically. The
SHA-256 of every file is recorded beside it (`<file>.sha256`) on first use and checked on every
later load, so a truncated or swapped file is caught.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from difface import models

_GH = "https://github.com"


@dataclass(frozen=True)
class WeightsEntry:
    """A named weights file: where it comes from, what it is for and which network it fits."""

    name: str
    kind: str  # prior | estimator | background | detector | metric
    url: str
    filename: str
    arch: str | None = None  # key of difface.models.CONFIGS when the network is built by name
    sha256: str | None = None
    size: int | None = None
    description: str = ""


# Every weights file difface knows, in one literal table (name -> entry).
REGISTRY: dict[str, WeightsEntry] = {e.name: e for e in (
    WeightsEntry("iddpm-ffhq512", "prior", f"{_GH}/zsyOAOA/DifFace/releases/download/V1.0/iddpm_ffhq512_ema500000.pth",
                 "iddpm_ffhq512_ema500000.pth", "unet_ffhq512",
                 description="official DifFace face prior, FFHQ 512x512 (EMA, 500k iterations)"),
    WeightsEntry("swinir-ffhq512", "estimator",
                 f"{_GH}/zsyOAOA/DifFace/releases/download/V1.0/swinir_restoration512_L1.pth",
                 "swinir_restoration512_L1.pth", "swinir_restoration512",
                 description="official DifFace diffused estimator (SwinIR, L1), 512x512"),
    WeightsEntry("iddpm-ffhq256", "prior", f"{_GH}/zsyOAOA/DifFace/releases/download/V1.0/iddpm_ffhq256_ema750000.pth",
                 "iddpm_ffhq256_ema750000.pth", "unet_ffhq256",
                 description="official DifFace face prior, FFHQ 256x256 (inpainting task)"),
    WeightsEntry("lama-inpainting256", "estimator",
                 f"{_GH}/zsyOAOA/DifFace/releases/download/V1.0/lama_inpainting256.pth",
                 "lama_inpainting256.pth", "lama_inpainting256",
                 description="official DifFace inpainting estimator (LaMa FFC ResNet), 256x256"),
    WeightsEntry("realesrgan-x2", "background",
                 f"{_GH}/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
                 "RealESRGAN_x2plus.pth",
                 description="Real-ESRGAN x2 background upsampler (RRDBNet, key params_ema)"),
    WeightsEntry("retinaface-resnet50", "detector",
                 f"{_GH}/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
                 "detection_Resnet50_Final.pth", description="RetinaFace ResNet-50 face detector (facexlib)"),
    WeightsEntry("retinaface-mobilenet0.25", "detector",
                 f"{_GH}/xinntao/facexlib/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",
                 "detection_mobilenet0.25_Final.pth", description="RetinaFace MobileNet-0.25 face detector (facexlib)"),
    WeightsEntry("parsenet", "parser", f"{_GH}/sczhou/CodeFormer/releases/download/v0.1.0/parsing_parsenet.pth",
                 "parsing_parsenet.pth", description="ParseNet face parsing (paste-back mask)"),
    WeightsEntry("lpips-alexnet", "metric", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                 "alexnet-owt-7be5be79.pth", description="torchvision AlexNet (ImageNet), LPIPS-Alex backbone"),
    WeightsEntry("lpips-vgg16", "metric", "https://download.pytorch.org/models/vgg16-397923af.pth",
                 "vgg16-397923af.pth", description="torchvision VGG-16 (ImageNet), LPIPS-VGG backbone"),
    WeightsEntry("fid-inception", "metric",
                 "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                 "pt_inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth",
                 description="TF Inception v3 (2015-12-05) ported by pytorch-fid, for FID"),
)}


def register(entry: WeightsEntry) -> WeightsEntry:
    """Add a weights file of your own to the registry at run time (the built-in ones are above)."""
    REGISTRY[entry.name] = entry
    return entry


class WeightsError(RuntimeError):
    """A checkpoint does not fit the network; the message lists the offending keys."""


def read_state_dict(source: str | os.PathLike | Mapping) -> dict[str, torch.Tensor]:
    """Read a checkpoint into a flat {key: tensor} dict, unwrapping the official containers.

    Accepts a path (.safetensors, or .pth/.pt read with `weights_only=True`) or a mapping; unwraps
    `{"state_dict": ...}`, `{"params_ema": ...}`, `{"params": ...}` and `{"ema": ...}`.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: checkpoint not found")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Mapping = load_file(str(path))
        else:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - report which file failed and why
                raise WeightsError(f"{path}: not a readable weights-only checkpoint ({e})") from e
    else:
        sd = source
    for wrapper in ("state_dict", "params_ema", "params", "ema"):
        if isinstance(sd, Mapping) and wrapper in sd and isinstance(sd[wrapper], Mapping):
            sd = sd[wrapper]
            break
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise WeightsError("checkpoint is not a mapping of parameter names to tensors")
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
    if missing or unexpected or misshaped:
        name = f"{source}" if isinstance(source, (str, os.PathLike)) else "state dict"

        def show(title: str, items: list[str]) -> str:
            more = f" ... and {len(items) - 10} more" if len(items) > 10 else ""
            return f"\n  {title} ({len(items)}): " + ", ".join(items[:10]) + more if items else ""

        raise WeightsError(
            f"{name} does not fit {type(module).__name__}:"
            + show("missing keys", missing)
            + show("unexpected keys", unexpected)
            + show("mis-shaped keys", misshaped)
        )
    module.load_state_dict(sd, strict=True)
    return module


class WeightsUnavailable(FileNotFoundError):
    """A weights file is not in the cache and cannot be downloaded; the message says what to do."""


def cache_dir() -> Path:
    """Folder holding downloaded weights (created on demand)."""
    if os.environ.get("DIFFACE_HOME"):
        root = Path(os.environ["DIFFACE_HOME"])
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]) / "difface"
    else:
        root = Path.home() / ".cache" / "difface"
    return root / "weights"


def local_path(name: str) -> Path:
    """Where the file of registry entry `name` lives (whether or not it is there)."""
    return cache_dir() / entry(name).filename


def entry(name: str) -> WeightsEntry:
    if name not in REGISTRY:
        raise KeyError(f"unknown weights {name!r}; `difface weights list` shows the known names")
    return REGISTRY[name]


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, expected_sha256: str | None = None) -> str:
    """Check `path` against the registry's SHA-256, or the one recorded beside it on first use.

    Records the hash when none is known yet. Raises ValueError naming the file on a mismatch.
    """
    actual = sha256_of(path)
    record = path.with_name(path.name + ".sha256")
    expected = expected_sha256 or (record.read_text().split()[0] if record.is_file() else None)
    if expected is not None and actual != expected:
        raise ValueError(
            f"{path}: SHA-256 {actual} does not match the expected {expected}; the file is corrupt or was "
            f"replaced. Delete it (and {record.name}) and download it again."
        )
    if not record.is_file():
        record.write_text(f"{actual}  {path.name}\n")
    return actual


def download(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """Fetch registry entry `name` into the cache (atomic, size- and SHA-256-checked); returns the path."""
    e = entry(name)
    dest = local_path(name)
    if dest.is_file() and not force:
        verify(dest, e.sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(e.url, out, progress=progress, expected_size=e.size)
        if e.size is not None and tmp.stat().st_size != e.size:
            raise ValueError(f"{e.url}: got {tmp.stat().st_size} bytes, expected {e.size}")
        if e.sha256 is not None and sha256_of(tmp) != e.sha256:
            raise ValueError(f"{e.url}: SHA-256 mismatch, download discarded")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as err:
        tmp.unlink(missing_ok=True)
        raise WeightsUnavailable(unavailable_message(name, reason=str(err))) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dest.with_name(dest.name + ".sha256").unlink(missing_ok=True)
    verify(dest, e.sha256)
    return dest


def _fetch(url: str, out, *, progress: bool, expected_size: int | None) -> None:
    from tqdm import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": "difface"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or expected_size
        written = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name, disable=not progress) as bar:
            while block := resp.read(1 << 20):
                out.write(block)
                written += len(block)
                bar.update(len(block))
        if total and written != total:
            raise OSError(f"connection closed after {written} of {total} bytes")


def unavailable_message(name: str, reason: str = "") -> str:
    e = entry(name)
    why = f" ({reason})" if reason else ""
    return (
        f"weights '{name}' are not available offline{why}.\n"
        f"  Download {e.url}\n"
        f"  and put it at {local_path(name)}\n"
        f"  (folder {cache_dir()}; set DIFFACE_HOME to use another folder), or pass the file's path instead."
    )


def resolve(name_or_path: str | os.PathLike, *, allow_download: bool = True) -> Path:
    """A registry name or a file path -> a verified local file; raises WeightsUnavailable with advice."""
    p = Path(name_or_path)
    if p.suffix in (".pth", ".pt", ".safetensors", ".ckpt", ".bin") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: weights file not found")
        return p
    name = str(name_or_path)
    dest = local_path(name)
    if dest.is_file():
        verify(dest, entry(name).sha256)
        return dest
    if not allow_download:
        raise WeightsUnavailable(unavailable_message(name))
    return download(name)


def infer_arch(sd: dict[str, torch.Tensor]) -> str:
    """The name in `models.CONFIGS` whose state-dict keys and shapes equal those of `sd`."""
    keys = {k.removeprefix("module."): tuple(v.shape) for k, v in sd.items()}
    for name, cfg in models.CONFIGS.items():
        with torch.device("meta"):
            ref = models.build_from_config(cfg).state_dict()
        if all(keys.get(k) == tuple(v.shape) for k, v in ref.items() if not k.endswith(models.DERIVED_BUFFERS)):
            if len([k for k in keys if not k.endswith(models.DERIVED_BUFFERS)]) == len(
                [k for k in ref if not k.endswith(models.DERIVED_BUFFERS)]
            ):
                return name
    raise ValueError("the checkpoint does not match any known network configuration")


def load_network(source: str | os.PathLike, *, arch: str | None = None, allow_download: bool = True) -> nn.Module:
    """Build and load a network from a registry name or a file (eval mode, float32, CPU).

    Our safetensors carry their architecture in the metadata (`difface.arch` and `difface.config`);
    for other files the architecture is the registry's, `arch`, or inferred from the keys and shapes.
    """
    path = resolve(source, allow_download=allow_download)
    if path.stat().st_size == 0:
        raise WeightsError(f"{path}: the weights file is empty (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise WeightsError(f"{path}: not a readable safetensors file ({e})") from None
        if "difface.config" in meta:
            cfg = models.config_from_dict(meta["difface.arch"], json.loads(meta["difface.config"]))
            return load_weights(models.build_from_config(cfg), path)
    if arch is None and str(source) in REGISTRY:
        arch = REGISTRY[str(source)].arch
    if arch is None:
        arch = infer_arch(read_state_dict(path))
    return load_weights(models.build(arch), path)


def save_network(module: nn.Module, path: str | os.PathLike, *, half: bool = False, extra: dict | None = None) -> None:
    """Save a UNet/SwinIR/LaMa as safetensors with its config in the metadata (atomic write).

    Metadata: `difface.arch` ('unet' | 'swinir' | 'lama'), `difface.config` (JSON of the config's
    to_dict) and `difface.<key>` for each entry of `extra`. Derived SwinIR buffers are left out
    (recomputed on load); integer buffers (BatchNorm counters) stay integer with `half`.
    """
    from safetensors.torch import save

    from difface.images import atomic_write_bytes

    kind = models.kind_of(module.config)
    sd = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()
          if not k.endswith(models.DERIVED_BUFFERS)}
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    meta = {"difface.arch": kind, "difface.config": json.dumps(module.config.to_dict())}
    meta.update({f"difface.{k}": str(v) for k, v in (extra or {}).items()})
    atomic_write_bytes(path, save(sd, metadata=meta))
