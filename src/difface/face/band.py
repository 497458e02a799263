"""Band merge: a restorer that works at s x s pixels replaces only the band it can represent.

A face of S > s pixels is shrunk to s for the restorer (`resize`: bicubic with antialiasing, the
pipeline's own resampling), and the restorer returns y from the shrunk face x_s = down(x). Enlarging
y alone would throw away everything the face has above the s-pixel band (a sharp 512 px face came
back as a 64 px blur). Instead the result is the input plus the restorer's correction of its coarse
band:

    out = clamp(x + up(y - x_s), 0, 1)

A restorer that changes nothing gives x back exactly; everything x has above the model's band is
kept; what the restorer changes (its coarse band) is carried over, enlarged. At S == s the result is
y itself, bit for bit (no arithmetic at all), so 64 px faces with the 64 px model are unchanged.
"""

from __future__ import annotations

import torch

NOTE = "coarse band restored, fine detail kept from the input"


def resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, h, w): bicubic with antialiasing (the pipeline's resampling); no-op at size."""
    if tuple(x.shape[2:]) == tuple(hw):
        return x
    return torch.nn.functional.interpolate(x, size=tuple(hw), mode="bicubic", antialias=True)


def applies(hw: tuple[int, int], model_size: int) -> bool:
    """Whether a face of (h, w) pixels has detail above an s-pixel model's band (both sides >= s, not both = s).

    Faces smaller than the model (in either side) keep the plain resize of the restorer's output."""
    h, w = hw
    return h >= model_size and w >= model_size and (h, w) != (model_size, model_size)


def coarse_correction(restored: torch.Tensor, seen: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """up(restored - seen) at (h, w): the restorer's change of the coarse band; (N, C, s, s) -> (N, C, h, w)
    float32, values in about [-1, 1] (not clamped: it is added to an image)."""
    return resize(restored.float() - seen.float(), hw)


def merge_band(x: torch.Tensor, restored: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """clamp(x + up(restored - seen), 0, 1): x (N, C, H, W) in [0, 1] the full-size face, seen (N, C, s, s)
    what the restorer was given (`resize(x, (s, s))`), restored (N, C, s, s) its output. Returns
    (N, C, H, W) float32 in [0, 1]; `restored` itself when H, W == s, s."""
    if tuple(x.shape[2:]) == tuple(restored.shape[2:]):
        return restored
    return (x.float() + coarse_correction(restored, seen, tuple(x.shape[2:]))).clamp(0, 1)


def note(face_px: int | str, model_px: int, count: int = 1) -> str:
    """The log line of the band merge: 'face 512 px, model 64 px: coarse band restored, fine detail kept from
    the input', or '3 faces 67-74 px, model 64 px: ...' (face_px: a size or a range)."""
    what = "face" if count == 1 else f"{count} faces"
    return f"{what} {face_px} px, model {model_px} px: {NOTE}"
