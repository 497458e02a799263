"""The registry of downloadable weights, the local cache, verified downloads and the checksums of the files
shipped in the package (difface.weights reads the files into networks).

Cache folder: `$DIFFACE_HOME`, else `$XDG_CACHE_HOME/difface`, else `~/.cache/difface`; files live in
its `weights/` sub-folder. A download goes to a temporary file in that folder, is checked against
the expected size and SHA-256 (when the registry knows them) and renamed into place atomically. The
SHA-256 of every file is recorded beside it (`<file>.sha256`) on first use, with the file's size,
mtime, ctime and inode; a later load hashes the file again whenever any of these changed (the
kernel sets ctime on every write, rename or `touch`, and it cannot be set back), and trusts the
record otherwise: hashing a 500 MB checkpoint costs about 0.8 s here, on every load, for nothing
(see docs/reliability.md). So a bit flip, a truncation or a replacement is refused at load with a
message naming the file and the fix; a symlink in the cache is refused too. The files shipped in
the package (`difface/assets`, 24 MB) are hashed at every load against `assets/SHA256SUMS`.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from difface.atomic import atomic_write_bytes

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
    approx_size: int | None = None  # about how many bytes the download is, for `difface weights list` (`size`,
    # when known, is exact and checked after the download): the network's float32 tensors, or the file as published


# Every weights file difface knows, in one literal table (name -> entry).
REGISTRY: dict[str, WeightsEntry] = {e.name: e for e in (
    WeightsEntry("iddpm-ffhq512", "prior", f"{_GH}/zsyOAOA/DifFace/releases/download/V1.0/iddpm_ffhq512_ema500000.pth",
                 "iddpm_ffhq512_ema500000.pth", "unet_ffhq512",
                 description="official DifFace face prior, FFHQ 512x512 (EMA, 500k iterations)",
                 approx_size=639_000_000),
    WeightsEntry("swinir-ffhq512", "estimator",
                 f"{_GH}/zsyOAOA/DifFace/releases/download/V1.0/swinir_restoration512_L1.pth",
                 "swinir_restoration512_L1.pth", "swinir_restoration512",
                 description="official DifFace diffused estimator (SwinIR, L1), 512x512",
                 approx_size=90_000_000),
    WeightsEntry("iddpm-ffhq256", "prior", f"{_GH}/zsyOAOA/DifFace/releases/download/V1.0/iddpm_ffhq256_ema750000.pth",
                 "iddpm_ffhq256_ema750000.pth", "unet_ffhq256",
                 description="official DifFace face prior, FFHQ 256x256 (inpainting task)",
                 approx_size=496_000_000),
    WeightsEntry("lama-inpainting256", "estimator",
                 f"{_GH}/zsyOAOA/DifFace/releases/download/V1.0/lama_inpainting256.pth",
                 "lama_inpainting256.pth", "lama_inpainting256",
                 description="official DifFace inpainting estimator (LaMa FFC ResNet), 256x256",
                 approx_size=204_000_000),
    WeightsEntry("realesrgan-x2", "background",
                 f"{_GH}/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
                 "RealESRGAN_x2plus.pth",
                 description="Real-ESRGAN x2 background upsampler (RRDBNet, key params_ema)",
                 approx_size=67_000_000),
    WeightsEntry("retinaface-resnet50", "detector",
                 f"{_GH}/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
                 "detection_Resnet50_Final.pth", description="RetinaFace ResNet-50 face detector (facexlib)",
                 approx_size=109_000_000),
    WeightsEntry("retinaface-mobilenet0.25", "detector",
                 f"{_GH}/xinntao/facexlib/releases/download/v0.1.0/detection_mobilenet0.25_Final.pth",
                 "detection_mobilenet0.25_Final.pth", description="RetinaFace MobileNet-0.25 face detector (facexlib)",
                 approx_size=1_800_000),
    WeightsEntry("parsenet", "parser", f"{_GH}/sczhou/CodeFormer/releases/download/v0.1.0/parsing_parsenet.pth",
                 "parsing_parsenet.pth", description="ParseNet face parsing (paste-back mask)",
                 approx_size=85_000_000),
    WeightsEntry("lpips-alexnet", "metric", "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                 "alexnet-owt-7be5be79.pth", description="torchvision AlexNet (ImageNet), LPIPS-Alex backbone",
                 approx_size=244_000_000),
    WeightsEntry("lpips-vgg16", "metric", "https://download.pytorch.org/models/vgg16-397923af.pth",
                 "vgg16-397923af.pth", description="torchvision VGG-16 (ImageNet), LPIPS-VGG backbone",
                 approx_size=553_000_000),
    WeightsEntry("fid-inception", "metric",
                 "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                 "pt_inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth",
                 description="TF Inception v3 (2015-12-05) ported by pytorch-fid, for FID",
                 approx_size=96_000_000),
)}


def register(entry: WeightsEntry) -> WeightsEntry:
    """Add a weights file of your own to the registry at run time (the built-in ones are above)."""
    REGISTRY[entry.name] = entry
    return entry


class WeightsError(RuntimeError):
    """A checkpoint does not fit the network, or cannot be trusted; the message names the file and the fix."""


class WeightsMismatch(WeightsError, ValueError):
    """A cached or bundled file whose bytes are not those verified (or a symlink in the cache)."""


class WeightsUnavailable(FileNotFoundError):
    """A weights file is not in the cache and cannot be downloaded; the message says what to do."""


ASSETS = Path(__file__).parent / "assets"
MANIFEST = ASSETS / "SHA256SUMS"
_bundled_ok: dict[tuple, str] = {}


def bundled_manifest() -> dict[str, str]:
    """{path relative to difface/assets: SHA-256} of the weights files shipped in the package."""
    if not MANIFEST.is_file():
        return {}
    out = {}
    for line in MANIFEST.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(None, 1)
            out[name.strip()] = digest
    return out


def write_bundled_manifest() -> Path:
    """Record the SHA-256 of every weights file under difface/assets (run after changing a bundled model)."""
    lines = ["# SHA-256 of the weights shipped in the package, checked at every load (difface.weights)"]
    for f in sorted(ASSETS.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".npz", ".pth", ".onnx"):
            lines.append(f"{sha256_of(f)}  {f.relative_to(ASSETS).as_posix()}")
    MANIFEST.write_text("\n".join(lines) + "\n")
    return MANIFEST


def check_bundled(path: Path) -> None:
    """WeightsError when `path` is a file shipped in the package whose bytes differ from the package's record."""
    try:
        rel = path.resolve().relative_to(ASSETS.resolve()).as_posix()
    except (ValueError, OSError):
        return
    expected = bundled_manifest().get(rel)
    if expected is None:
        return
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if _bundled_ok.get(key) == expected:
        return
    actual = sha256_of(path)
    if actual != expected:
        raise WeightsMismatch(
            f"{path}: this file shipped with difface was changed after installation (SHA-256 {actual[:16]}..., "
            f"the package records {expected[:16]}...). Reinstall difface (pip install --force-reinstall difface) "
            f"or, in a git checkout, restore it: git checkout -- {path}")
    _bundled_ok[key] = actual


def cache_hint(path: Path) -> str:
    """How to fix a damaged file of the weights cache ("" for a file elsewhere)."""
    try:
        path.resolve().relative_to(cache_dir().resolve())
    except (ValueError, OSError):
        return ""
    names = [n for n, e in REGISTRY.items() if e.filename == path.name]
    again = f"difface weights download {names[0]}" if names else "download it again"
    return (f"; the file in the weights cache is damaged (an interrupted download, or changed since): delete "
            f"{path} (and {path.name}.sha256) and run: {again}")


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


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"


def verify(path: Path, expected_sha256: str | None = None, *, full: bool = False) -> str:
    """Check `path` against the registry's SHA-256, or the one recorded beside it on first use.

    The record (`<file>.sha256`) also holds the file's size, mtime, ctime and inode when it was last hashed: when
    they are unchanged the file is not hashed again (unless `full`). Records the hash when none is known yet.
    Raises WeightsError naming the file and the fix on a mismatch or for a symlink; writes nothing then.
    """
    record = path.with_name(path.name + ".sha256")
    if path.is_symlink():
        raise WeightsMismatch(
            f"{path}: is a symbolic link (to {os.readlink(path)}); the weights cache holds only the files it "
            f"downloaded and verified. Delete the link (and {record.name}) and download the file again, or pass "
            "the other file's path instead of the name.")
    lines = record.read_text().splitlines() if record.is_file() else []
    recorded = lines[0].split()[0] if lines and lines[0].split() else None
    stat_line = next((ln.removeprefix("# stat ").strip() for ln in lines[1:] if ln.startswith("# stat ")), None)
    expected = expected_sha256 or recorded
    if not full and expected is not None and recorded == expected and stat_line == _stat_key(path):
        return expected
    actual = sha256_of(path)
    if expected is not None and actual != expected:
        names = [n for n, e in REGISTRY.items() if e.filename == path.name]
        again = f"difface weights download {names[0]} --force" if names else "download it again"
        raise WeightsMismatch(
            f"{path}: SHA-256 {actual} does not match the expected {expected}; the file is corrupt or was "
            f"replaced (a changed byte, a truncation, another checkpoint). Delete it (and {record.name}) and "
            f"download it again: {again}"
        )
    text = f"{actual}  {path.name}\n# stat {_stat_key(path)}\n"
    if record.is_file() and record.read_text() == text:
        return actual
    try:
        atomic_write_bytes(record, text.encode())
    except OSError:  # a read-only cache still loads; the file is hashed again next time
        pass
    return actual


def download(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """Fetch registry entry `name` into the cache (atomic, size- and SHA-256-checked); returns the path."""
    e = entry(name)
    dest = local_path(name)
    if (dest.is_file() or dest.is_symlink()) and not force:
        verify(dest, e.sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(dest)
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


STALE_PART_S = 600


def _remove_stale_parts(dest: Path) -> list[Path]:
    """Delete what interrupted downloads of `dest` left (`.<name>.*.part` untouched for STALE_PART_S; a download
    in progress writes to its own part file every second)."""
    removed = []
    for part in dest.parent.glob(f".{dest.name}.*.part"):
        try:
            if time.time() - part.stat().st_mtime > STALE_PART_S:
                part.unlink()
                removed.append(part)
        except OSError:
            pass
    return removed


def _fetch(url: str, out, *, progress: bool, expected_size: int | None) -> None:
    req = urllib.request.Request(url, headers={"User-Agent": "difface"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        total = int(resp.headers.get("Content-Length") or 0) or expected_size
        written = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=Path(url).name, disable=not progress) as bar:
            while block := resp.read1(1 << 20):  # what has arrived: a part file grows as bytes come
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


def missing_weights(names: Iterable[str | os.PathLike]) -> list[str]:
    """The registry names among `names` whose file is not in the cache (files and other names left out)."""
    return [str(n) for n in names if str(n) in REGISTRY and not local_path(str(n)).is_file()]


def missing_message(names: list[str], reason: str = "") -> str:
    """What to do when the registry files `names` are not in the cache and cannot be downloaded: each file, the
    command that gets them all, and where to put them by hand."""
    why = f" ({reason})" if reason else ""
    these = "these weights are" if len(names) > 1 else "this weights file is"
    lines = [f"{these} not in the cache and cannot be downloaded now{why}: {', '.join(names)}.",
             f"  Get {'them' if len(names) > 1 else 'it'} where there is a network: difface weights download "
             f"{' '.join(names)}",
             f"  or download {'each file' if len(names) > 1 else 'the file'} and put it into {cache_dir()} (set "
             "DIFFACE_HOME to use another folder):"]
    lines += [f"    {entry(n).url}" for n in names]
    return "\n".join(lines + ["  or pass the files' paths instead of the names."])


def resolve(name_or_path: str | os.PathLike, *, allow_download: bool = True) -> Path:
    """A registry name or a file path -> a verified local file; raises WeightsUnavailable with advice."""
    p = Path(name_or_path)
    if p.suffix in (".pth", ".pt", ".safetensors", ".ckpt", ".bin") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"{p}: weights file not found")
        return p
    name = str(name_or_path)
    dest = local_path(name)
    if dest.is_file() or dest.is_symlink():
        verify(dest, entry(name).sha256)
        return dest
    if not allow_download:
        raise WeightsUnavailable(unavailable_message(name))
    return download(name)
