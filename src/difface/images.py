"""Image input/output: the only module that knows about files, uint8, BGR, 16-bit and alpha.

Convention used everywhere else in the package: an image is a float32 numpy array of shape
(H, W, 3), RGB, values in [0, 1]; a batch tensor is (B, 3, H, W) float in [0, 1]. Alpha, when
present, is carried separately as an (H, W) float32 array in [0, 1].
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import struct
import sys
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from difface.atomic import atomic_write_bytes
from difface.names import DEFAULT_QUALITY, OUTPUT_FORMATS  # noqa: F401 (re-exported)

log = logging.getLogger("difface")



@contextlib.contextmanager
def _opencv_silent():
    """OpenCV's own log silenced for the block (it prints warnings for corrupt files; we report them
    ourselves, by file name), and set back after it: importing difface changes no library's settings."""
    cvlog = getattr(getattr(cv2, "utils", None), "logging", None)
    try:
        old = cvlog.getLogLevel()
        cvlog.setLogLevel(cvlog.LOG_LEVEL_SILENT)
    except AttributeError:  # pragma: no cover - older OpenCV builds
        yield
        return
    try:
        yield
    finally:
        cvlog.setLogLevel(old)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# What a result can be written as (`write_image`: the file's suffix says which): PNG is lossless and keeps
# 16 bits and alpha; JPEG and WebP are 8-bit and lossy at `quality` (WebP keeps alpha, JPEG drops it).
# (the names live in difface.names, which difface.config reads without importing this module)


class ImageReadError(ValueError):
    """An input file could not be decoded as an image; the message names the file."""


class ImageTooLarge(ImageReadError):
    """An input image has more pixels than the limit; found from its header, before decoding."""


_lock = threading.RLock()
_warned: set[str] = set()


@contextlib.contextmanager
def native_stderr_captured():
    """Send what C code (libpng, libjpeg) writes to stderr into a list of lines (filled when the block ends).

    File descriptor 2 is swapped for a temporary file, so output another thread writes to stderr
    meanwhile is captured too (and logged at debug level, not lost). Where descriptor 2 cannot be
    duplicated, nothing is captured and the block runs as is.
    """
    lines: list[str] = []
    with _lock:
        try:
            saved = os.dup(2)
        except OSError:
            saved = None
        if saved is None:
            yield lines
            return
        try:
            with tempfile.TemporaryFile() as tmp:
                for stream in (sys.stderr, sys.__stderr__):  # Python's buffered text goes to the real stderr
                    try:
                        if stream is not None:
                            stream.flush()
                    except (OSError, ValueError):
                        pass
                os.dup2(tmp.fileno(), 2)
                try:
                    yield lines
                finally:
                    os.dup2(saved, 2)
                    tmp.seek(0)
                    text = tmp.read().decode("utf-8", errors="replace")
                    lines.extend(t.strip() for t in text.splitlines() if t.strip())
        finally:
            os.close(saved)


def _quietly(read, name: str):
    """Run a decoder with the C libraries' messages and PIL's warnings captured, and say them ourselves.

    A failed read raises ImageReadError naming the file, with the library's reason appended; a read
    that succeeds despite a complaint logs one warning naming the file (once per file and process).
    """
    error: ImageReadError | None = None
    img = None
    with _opencv_silent(), native_stderr_captured() as native, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            img = read()
        except ImageReadError as e:
            error = e
    notes = list(dict.fromkeys(native + [" ".join(str(w.message).split()) for w in caught]))
    for line in notes:
        log.debug("%s: %s", name, line)
    if error is not None:
        raise ImageReadError(f"{error} ({'; '.join(notes)})" if notes else str(error)) from None
    if notes and name not in _warned:
        _warned.add(name)
        log.warning("warning: %s: read despite a decoder complaint: %s", name, "; ".join(notes))
    return img


def probe_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(width, height) of an image file from its header, without decoding the pixels; None if unknown."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with Image.open(path) as im:
                return tuple(im.size)  # type: ignore[return-value]
        except Image.DecompressionBombError as e:  # over PIL's own limit: read PNG sizes ourselves
            with open(path, "rb") as f:
                head = f.read(24)
            if head[:8] == b"\x89PNG\r\n\x1a\n":
                return struct.unpack(">II", head[16:24])  # IHDR width, height
            digits = [int(w.strip("(")) for w in str(e).split() if w.strip("(").isdigit()]
            return (digits[0], 1) if digits else (2**31, 1)  # PIL's message holds the pixel count
        except Exception:  # noqa: BLE001 - not an image PIL knows: the decoder will tell
            return None


def check_pixels(path: str | os.PathLike, max_pixels: int) -> tuple[int, int] | None:
    """Raise ImageTooLarge when the header says the image has more than `max_pixels`; returns the size."""
    size = probe_size(path)
    if size is not None and size[0] * size[1] > max_pixels:
        w, h = size
        dims = f"{w}x{h} = " if h > 1 else ""
        raise ImageTooLarge(f"{path}: image is {dims}{w * h / 1e6:.1f} megapixels, over the limit of "
                            f"{max_pixels / 1e6:g} MP (raise it with `max_pixels` if you have the memory: about "
                            f"40 bytes per pixel)")
    return size


@dataclass
class LoadedImage:
    """A decoded image.

    rgb: (H, W, 3) float32 RGB in [0, 1]; alpha: (H, W) float32 in [0, 1] or None;
    bit_depth: 8 or 16 (of the source); gray: True when the source is black and white (one
    channel, gray + alpha, or R = G = B in every pixel): results of gray inputs are made gray;
    channels: the source file's channel count (1: gray, 2: gray + alpha, 3, 4): a result of a
    one-channel input is written with one channel.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    gray: bool
    path: Path | None = None
    channels: int = 3


def _exif_orientation(path: Path) -> int:
    """EXIF orientation tag (1..8) of a JPEG/TIFF/WebP file, 1 when absent or unreadable."""
    if path.suffix.lower() not in (".jpg", ".jpeg", ".tif", ".tiff", ".webp"):
        return 1
    try:
        from PIL import Image

        with Image.open(path) as im:
            return int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not stop the read
        return 1


def _apply_orientation(a: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip an (H, W, ...) array so that it displays upright (EXIF orientation 1..8)."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: np.swapaxes(x, 0, 1),
        6: lambda x: np.swapaxes(x, 0, 1)[:, ::-1],
        7: lambda x: np.swapaxes(x, 0, 1)[::-1, ::-1],
        8: lambda x: np.swapaxes(x, 0, 1)[::-1],
    }
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def decode_image(data: bytes, name: str = "<bytes>") -> LoadedImage:
    """Decode encoded image bytes (PNG, JPEG, ...) into a LoadedImage without EXIF handling.

    The decoders' own messages are captured and reported by `name` (see `_quietly`)."""
    return _quietly(lambda: _decode(data, name), name)


def _decode(data: bytes, name: str) -> LoadedImage:
    if len(data) == 0:
        raise ImageReadError(f"{name}: file is empty (0 bytes)")
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ImageReadError(f"{name}: not a readable image (corrupt or unsupported format)")
    if raw.dtype == np.uint8:
        depth, scale = 8, 255.0
    elif raw.dtype == np.uint16:
        depth, scale = 16, 65535.0
    elif raw.dtype == np.float32:
        depth, scale = 32, 1.0
    else:
        raise ImageReadError(f"{name}: unsupported pixel type {raw.dtype}")
    a = raw.astype(np.float32) / scale
    gray = a.ndim == 2 or a.shape[2] in (1, 2)
    if not gray and np.array_equal(raw[:, :, 0], raw[:, :, 1]) and np.array_equal(raw[:, :, 1], raw[:, :, 2]):
        gray = True  # a black-and-white photo stored as RGB(A): its result stays black and white
    alpha = None
    if a.ndim == 2:
        rgb = np.repeat(a[:, :, None], 3, axis=2)
    elif a.shape[2] == 1:
        rgb = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 2:  # gray + alpha
        rgb, alpha = np.repeat(a[:, :, :1], 3, axis=2), a[:, :, 1]
    elif a.shape[2] == 3:
        rgb = a[:, :, ::-1]
    elif a.shape[2] == 4:
        rgb, alpha = a[:, :, 2::-1], a[:, :, 3]
    else:
        raise ImageReadError(f"{name}: unsupported channel count {a.shape[2]}")
    rgb = np.ascontiguousarray(np.clip(rgb, 0.0, 1.0), dtype=np.float32)
    if alpha is not None:
        alpha = np.ascontiguousarray(np.clip(alpha, 0.0, 1.0), dtype=np.float32)
    return LoadedImage(rgb=rgb, alpha=alpha, bit_depth=depth, gray=gray, channels=1 if a.ndim == 2 else a.shape[2])


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> LoadedImage:
    """Read an image file, honouring EXIF orientation.

    Returns a LoadedImage (rgb (H, W, 3) float32 in [0, 1]). Raises ImageReadError naming the file
    when it is missing, empty, corrupt or of an unsupported kind (with the decoder's reason), and
    ImageTooLarge (found from the header, before decoding) when it has more than `max_pixels` pixels.
    The decoders' messages never reach the terminal raw (see `_quietly`).
    """
    path = Path(path)
    if max_pixels is not None and path.is_file():
        check_pixels(path, max_pixels)
    return _quietly(lambda: _read_file(path), str(path))


def _read_file(path: Path) -> LoadedImage:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read file ({e.strerror or e})") from e
    img = _decode(data, str(path))
    orient = _exif_orientation(path)
    if orient != 1:
        img.rgb = _apply_orientation(img.rgb, orient)
        if img.alpha is not None:
            img.alpha = _apply_orientation(img.alpha, orient)
    img.path = path
    return img


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float [0, 1] array -> uint8 with round-half-even (numpy rint), as skimage img_as_ubyte."""
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def encode_png(rgb: np.ndarray, alpha: np.ndarray | None = None, bit_depth: int = 8) -> bytes:
    """Encode (H, W, 3) float RGB in [0, 1] (+ optional (H, W) alpha) as PNG bytes (8 or 16 bit)."""
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if alpha is not None:
        bgr = np.concatenate([bgr, alpha[:, :, None]], axis=2)
    if bit_depth == 16:
        arr = np.rint(np.clip(bgr, 0.0, 1.0) * 65535.0).astype(np.uint16)
    else:
        arr = to_uint8(bgr)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def write_image(
    path: str | os.PathLike, rgb: np.ndarray, alpha: np.ndarray | None = None, bit_depth: int = 8, *,
    quality: int = DEFAULT_QUALITY, gray: bool = False,
) -> None:
    """Atomically write (H, W, 3) float RGB in [0, 1] to `path`: PNG, or JPEG / WebP when the suffix says so
    (8-bit, at `quality`; JPEG drops alpha). gray: the image is gray (R = G = B, as the pipelines make the
    results of gray inputs) and is written with one channel (with alpha: as RGBA, which PNG and WebP hold)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg", ".webp"):
        data = encode_lossy(rgb, None if suffix != ".webp" else alpha, suffix, quality, gray)
    elif gray and alpha is None:
        data = _encode(np.rint(np.clip(rgb[:, :, 0], 0.0, 1.0) * (65535.0 if bit_depth == 16 else 255.0))
                       .astype(np.uint16 if bit_depth == 16 else np.uint8), ".png", [])
    else:
        data = encode_png(rgb, alpha, bit_depth)
    atomic_write_bytes(path, data)


def encode_lossy(rgb: np.ndarray, alpha: np.ndarray | None, suffix: str, quality: int = DEFAULT_QUALITY,
                 gray: bool = False) -> bytes:
    """8-bit JPEG (".jpg") or WebP (".webp") bytes of (H, W, 3) float RGB [+ alpha] at `quality` (1 to 100);
    gray: one channel (JPEG; WebP has no gray mode and stores it as RGB)."""
    arr = to_uint8(rgb[:, :, :1] if gray and suffix != ".webp" and alpha is None else rgb[:, :, ::-1])
    if alpha is not None:
        arr = np.concatenate([arr, to_uint8(alpha)[:, :, None]], axis=2)
    flag = cv2.IMWRITE_WEBP_QUALITY if suffix == ".webp" else cv2.IMWRITE_JPEG_QUALITY
    return _encode(np.ascontiguousarray(arr), ".webp" if suffix == ".webp" else ".jpg", [flag, int(quality)])


def _encode(arr: np.ndarray, ext: str, params: list[int]) -> bytes:
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise RuntimeError(f"{ext.lstrip('.').upper()} encoding failed")
    return buf.tobytes()


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float array in [0, 1] -> (1, 3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float()[None]


def tensor_to_image(x: torch.Tensor) -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) tensor in [0, 1] -> (H, W, 3) float32 numpy array (clamped)."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected a batch of one, got {tuple(x.shape)}")
        x = x[0]
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def collect_inputs(specs: list[str], recursive: bool = False, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
                   ) -> list[Path]:
    """Expand files, folders and glob patterns into a sorted, de-duplicated list of input paths.

    Folders contribute files with one of `extensions` (recursively when asked); files named
    explicitly are kept whatever their extension so that a bad one is reported, not dropped.
    Raises FileNotFoundError for a spec that matches nothing.
    """
    out: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            out += sorted(q for q in it if q.is_file() and q.suffix.lower() in extensions)
        elif p.is_file():
            out.append(p)
        else:
            matches = sorted(Path(m) for m in glob.glob(spec, recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise FileNotFoundError(f"{spec}: no such file, folder or matching glob")
            out += matches
    seen: set[Path] = set()
    unique = []
    for q in out:
        key = q.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(q)
    return unique
