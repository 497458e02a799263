"""Synthetic face degradations: the GFPGAN-style training pipeline (DifFace's 'gfpgan' data) and the official
CelebA-Test recipe (its test-set synthesis), with explicit `np.random.Generator`s.

Images are (H, W, 3) float32 RGB numpy arrays in [0, 1]; the output has the input's size and
lies on the 1/255 grid (values k/255). Pipeline (`apply_degradation`), in order:
  1. blur: cv2.filter2D with a Gaussian kernel (kernels.py), border reflect-101;
  2. downsample: cv2.resize to (int(w // s), int(h // s)), INTER_LINEAR (see `resize` below);
  3. Gaussian noise, std `noise`/255, independent per channel, then clip to [0, 1];
  4. JPEG at integer quality (cv2.imencode on the 8-bit BGR image, rounding), decode;
  5. resize back to (w, h), INTER_LINEAR;  6. optional gray (BT.601 luma replicated x3);
  (`resize`: "linear" = INTER_LINEAR both ways, the official pipeline; "cubic" = INTER_CUBIC both
  ways; "area" = INTER_AREA down, INTER_CUBIC up);
  7. quantize: clip(rint(x * 255), 0, 255) / 255.
Random draws per image, in this order (`sample_params`): kernel type, kernel sigma(s) and theta,
scale s, noise level, JPEG quality, gray, then the resize mode (one draw only when the config
lists more than one, so one-mode configs keep their streams); then the noise field in step 3. One Generator per image
(e.g. `np.random.default_rng([seed, epoch, index])`) makes results independent of worker order.
The official code draws the JPEG quality as a float that older OpenCV truncated; we draw
U(lo, hi) and truncate with int() the same way.

Resolution scaling (`DegradationConfig.for_resolution`): ranges are written for
`reference_resolution` (512) and applied at `resolution`; with r = resolution / reference:
  * blur sigmas (range, and the test-recipe sigmas) are multiplied by r;
  * kernel size k becomes 2 * floor(r * (k // 2) + 0.5) + 1 (41 -> 7 at 64 px, 81 at 1024), at least 3;
  * downsample factors s become max(s * r, min(s, 1)): the smallest LQ face keeps the same pixel
    count (512/32 = 64/4 = 16 px), and factors are not pushed below 1 (below 1 the image is only
    enlarged, and a tiny factor would just make it huge);
  * noise level, JPEG quality and gray probability are per LQ pixel and stay unchanged.
So a 64x64 model trained with DEGRADATIONS["gfpgan"].for_resolution(64) sees roughly what a 512 model
sees, downscaled 8x.

Public API: DegradationConfig, DegradationParams, DEGRADATIONS, get_degradation, sample_params,
apply_degradation, degrade, degrade_with_params, degrade_fixed, to_gray, TestCombo, TestRecipe,
TEST_RECIPE, recipe_params.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from difface.data.kernels import KernelParams, sample_kernel_params

RECIPES = ("random", "celeba-test")
# resize mode -> (interpolation down, interpolation back up)
RESIZE_MODES = {"linear": (cv2.INTER_LINEAR, cv2.INTER_LINEAR), "cubic": (cv2.INTER_CUBIC, cv2.INTER_CUBIC),
                "area": (cv2.INTER_AREA, cv2.INTER_CUBIC)}


def _scale_factor(s: float, r: float) -> float:
    return max(s * r, min(s, 1.0))


def _pair(v, name: str) -> tuple[float, float]:
    lo, hi = (float(x) for x in v)
    if lo > hi:
        raise ValueError(f"{name}: lower bound {lo} exceeds upper bound {hi}")
    return lo, hi


@dataclass(frozen=True)
class DegradationConfig:
    """Ranges of the random degradation; defaults are the official 'gfpgan' training values.

    All ranges are uniform and written for `reference_resolution`; they are scaled to
    `resolution` as the module docstring says (use `for_resolution(size)`).
    recipe: "random" draws from the ranges; "celeba-test" draws one combination of the official
    CelebA-Test grid (TEST_RECIPE) uniformly (only kernel_size and the resolutions are used then).
    """

    kernel_size: int = 41
    blur_sigma: tuple[float, float] = (0.1, 15.0)
    kernel_probs: tuple[float, float] = (0.5, 0.5)  # (iso, aniso)
    rotation: tuple[float, float] = (-math.pi, math.pi)
    downsample: tuple[float, float] = (0.8, 32.0)
    noise: tuple[float, float] = (0.0, 20.0)  # std on the 0-255 scale
    jpeg_quality: tuple[float, float] = (30.0, 100.0)
    gray_prob: float = 0.01
    recipe: str = "random"
    resize_modes: tuple[str, ...] = ("linear",)  # drawn uniformly when more than one (RESIZE_MODES)
    resolution: int = 512
    reference_resolution: int = 512

    def __post_init__(self) -> None:
        for name in ("blur_sigma", "kernel_probs", "rotation", "downsample", "noise", "jpeg_quality"):
            object.__setattr__(self, name, _pair(getattr(self, name), name))
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {self.kernel_size}")
        if self.blur_sigma[0] <= 0 or self.downsample[0] <= 0 or self.noise[0] < 0:
            raise ValueError("blur_sigma and downsample must be > 0 and noise >= 0")
        if not (1 <= self.jpeg_quality[0] and self.jpeg_quality[1] <= 100):
            raise ValueError(f"jpeg_quality must lie in [1, 100], got {self.jpeg_quality}")
        if not 0.0 <= self.gray_prob <= 1.0:
            raise ValueError(f"gray_prob must lie in [0, 1], got {self.gray_prob}")
        object.__setattr__(self, "resize_modes", tuple(self.resize_modes))
        if not self.resize_modes or not set(self.resize_modes) <= set(RESIZE_MODES):
            raise ValueError(f"resize_modes must be a non-empty subset of {sorted(RESIZE_MODES)}, "
                             f"got {self.resize_modes}")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.recipe!r}")
        if self.resolution < 1 or self.reference_resolution < 1:
            raise ValueError("resolutions must be positive")

    def for_resolution(self, size: int) -> DegradationConfig:
        """The same degradation for images of `size` pixels (ranges stay at the reference)."""
        return dataclasses.replace(self, resolution=int(size))

    @property
    def scale(self) -> float:
        """r = resolution / reference_resolution."""
        return self.resolution / self.reference_resolution

    @property
    def effective_kernel_size(self) -> int:
        half = self.kernel_size // 2
        if half == 0:
            return 1
        return 2 * max(1, math.floor(self.scale * half + 0.5)) + 1

    @property
    def effective_blur_sigma(self) -> tuple[float, float]:
        return (self.blur_sigma[0] * self.scale, self.blur_sigma[1] * self.scale)

    @property
    def effective_downsample(self) -> tuple[float, float]:
        return tuple(_scale_factor(s, self.scale) for s in self.downsample)  # type: ignore[return-value]


@dataclass(frozen=True)
class DegradationParams:
    """One drawn degradation: kernel, kernel_size, scale s, noise std (0-255), JPEG quality, gray."""

    kernel: KernelParams
    kernel_size: int
    scale: float
    noise: float
    quality: int
    gray: bool = False
    resize: str = "linear"

    def to_dict(self) -> dict:
        """Flat JSON-friendly dict (kernel fields prefixed: kernel, sigma_x, sigma_y, theta)."""
        d = dataclasses.asdict(self)
        k = d.pop("kernel")
        return {"kernel": k["kind"], "sigma_x": k["sigma_x"], "sigma_y": k["sigma_y"],
                "theta": k["theta"], **d}


@dataclass(frozen=True)
class DegradationMixture:
    """A random choice among DegradationConfigs: component i with probability weights[i] / sum.

    Used like a DegradationConfig (sample_params, degrade, SyntheticPairs, `difface degrade`):
    per image, one uniform draw picks the component, then that component's own draws follow on
    the same Generator. All components must share `resolution`; `for_resolution` scales each by
    its own reference_resolution (module docstring).
    """

    components: tuple[DegradationConfig, ...]
    weights: tuple[float, ...]

    def __post_init__(self) -> None:
        comps, w = tuple(self.components), tuple(float(x) for x in self.weights)
        object.__setattr__(self, "components", comps)
        object.__setattr__(self, "weights", w)
        if not comps or len(comps) != len(w):
            raise ValueError(f"a mixture needs one weight per component, got {len(comps)} and {len(w)}")
        if not all(isinstance(c, DegradationConfig) for c in comps):
            raise ValueError("mixture components must be DegradationConfigs")
        if min(w) < 0 or sum(w) <= 0:
            raise ValueError(f"mixture weights must be >= 0 with a positive sum, got {w}")
        if len({c.resolution for c in comps}) != 1:
            raise ValueError("mixture components must share one resolution")

    @property
    def recipe(self) -> str:
        return "mixture"

    @property
    def resolution(self) -> int:
        return self.components[0].resolution

    @property
    def probabilities(self) -> tuple[float, ...]:
        total = sum(self.weights)
        return tuple(x / total for x in self.weights)

    def for_resolution(self, size: int) -> DegradationMixture:
        return DegradationMixture(tuple(c.for_resolution(size) for c in self.components), self.weights)

    def pick(self, rng: np.random.Generator) -> DegradationConfig:
        """The component of one image: one uniform draw against the cumulative probabilities."""
        u, acc = rng.random(), 0.0
        for c, p in zip(self.components, self.probabilities):
            acc += p
            if u < acc:
                return c
        return self.components[-1]  # u within rounding of 1


def _at64(**kw) -> DegradationConfig:
    """A recipe written directly for 64 px faces (reference_resolution 64; no gray unless given)."""
    return DegradationConfig(**{"kernel_size": 21, "gray_prob": 0.0, "resolution": 64, "reference_resolution": 64,
                                **kw})


# Two damage recipes (mild, severe) written at 64 px. "light blur" is read as Gaussian sigma U(0.2, 1.0)
# px and "light noise" as std U(0, 5) (0-255 scale); kernels iso or aniso with p 0.5, as everywhere.
MILD_X2 = _at64(blur_sigma=(0.2, 1.0), downsample=(2.0, 2.0), noise=(0.0, 5.0), jpeg_quality=(60.0, 90.0))
SEVERE_X4 = _at64(blur_sigma=(1.5, 2.5), downsample=(4.0, 4.0), noise=(8.0, 15.0), jpeg_quality=(30.0, 50.0))

# Training mixture of the bundled estimator v2 (64 px): from nearly clean to beyond SEVERE_X4
# (blur up to 3 px, 5.5x down, noise 20, JPEG 25), with 60% of the mass on light and mid damage, and
# the three resize modes, so that the estimator does not depend on how a photo was rescaled.
_ALL_RESIZE = tuple(RESIZE_MODES)
RANGE64 = DegradationMixture(
    (
        _at64(blur_sigma=(0.1, 1.0), downsample=(0.8, 2.0), noise=(0.0, 5.0), jpeg_quality=(60.0, 100.0),
              gray_prob=0.02, resize_modes=_ALL_RESIZE),
        _at64(blur_sigma=(0.2, 1.8), downsample=(1.5, 3.5), noise=(0.0, 12.0), jpeg_quality=(40.0, 95.0),
              gray_prob=0.02, resize_modes=_ALL_RESIZE),
        _at64(blur_sigma=(1.0, 3.0), downsample=(2.5, 5.5), noise=(5.0, 20.0), jpeg_quality=(25.0, 70.0),
              gray_prob=0.02, resize_modes=_ALL_RESIZE),
    ),
    (0.25, 0.35, 0.4),
)

# RANGE64 with a fourth, near-clean component (15%: blur <= 0.5 px, at most 1.25x down, noise <= 5,
# JPEG >= 70, the `mild` degradation's range at 64 px) taken from the light and mid components.
RANGE64_CLEAN = DegradationMixture(
    (_at64(blur_sigma=(0.1, 0.5), downsample=(0.8, 1.25), noise=(0.0, 5.0), jpeg_quality=(70.0, 100.0),
           gray_prob=0.02, resize_modes=_ALL_RESIZE), *RANGE64.components),
    (0.15, 0.2, 0.25, 0.4),
)

# RANGE64_CLEAN with a fifth, noise-dominated component (15%: blur 0.5-2 px, 1-3x down, noise 8-20,
# JPEG 30-80). In RANGE64 strong noise comes only with strong downsampling (the heavy component), so
# noisy faces at moderate scale (the `severe` degradation at 64 px: noise 10-20 at 1.5-4x down) were rare.
RANGE64_WIDE = DegradationMixture(
    (*RANGE64_CLEAN.components,
     _at64(blur_sigma=(0.5, 2.0), downsample=(1.0, 3.0), noise=(8.0, 20.0), jpeg_quality=(30.0, 80.0),
           gray_prob=0.02, resize_modes=_ALL_RESIZE)),
    (0.15, 0.15, 0.2, 0.35, 0.15),
)

DEGRADATIONS: dict[str, DegradationConfig | DegradationMixture] = {
    "gfpgan": DegradationConfig(),
    "celeba-test": DegradationConfig(recipe="celeba-test", gray_prob=0.0),
    "mild": DegradationConfig(blur_sigma=(0.1, 3.0), downsample=(0.8, 4.0), noise=(0.0, 5.0),
                              jpeg_quality=(70.0, 100.0), gray_prob=0.0),
    "moderate": DegradationConfig(blur_sigma=(3.0, 7.0), downsample=(4.0, 12.0), noise=(5.0, 12.0),
                                  jpeg_quality=(50.0, 80.0), gray_prob=0.0),
    "severe": DegradationConfig(blur_sigma=(7.0, 15.0), downsample=(12.0, 32.0), noise=(10.0, 20.0),
                                jpeg_quality=(30.0, 60.0), gray_prob=0.0),
    "mild-x2": MILD_X2,
    "severe-x4": SEVERE_X4,
    "range64": RANGE64,
    "range64-clean": RANGE64_CLEAN,
    "range64-wide": RANGE64_WIDE,
}


def get_degradation(name: str, resolution: int | None = None) -> DegradationConfig | DegradationMixture:
    """DEGRADATIONS[name], scaled to `resolution` when given. Raises KeyError listing the names."""
    if name not in DEGRADATIONS:
        raise KeyError(f"unknown degradation {name!r}; choose from {sorted(DEGRADATIONS)}")
    cfg = DEGRADATIONS[name]
    return cfg if resolution is None else cfg.for_resolution(resolution)


@dataclass(frozen=True)
class TestCombo:
    """One CelebA-Test degradation at 512 px: JPEG qf, scale sf, noise nf, kernel sigmas, theta."""

    __test__ = False  # not a pytest class
    qf: int
    sf: float
    nf: float
    sigma_x: float
    sigma_y: float
    theta: float


@dataclass(frozen=True)
class TestRecipe:
    """The official CelebA-Test grid (the TPAMI 'Journal' setting: 5*10*5*4*4 = 4000)."""

    __test__ = False
    qualities: tuple[int, ...] = (30, 40, 50, 60, 70)
    scales: tuple[int, ...] = (4, 8, 12, 16, 20, 24, 28, 32, 36, 40)
    noises: tuple[int, ...] = (1, 5, 10, 15, 20)
    sigmas: tuple[int, ...] = (4, 8, 12, 16)
    thetas: tuple[float, ...] = (0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4)

    def __len__(self) -> int:
        return len(self.qualities) * len(self.scales) * len(self.noises) * len(self.sigmas) * len(self.thetas)

    def combos(self, rng: np.random.Generator) -> Iterator[TestCombo]:
        """Yield the combinations in the official loop order (qf outer ... theta inner); for each,
        sigma_y is one rng draw from `sigmas` (the official code used Python random.choice)."""
        for qf in self.qualities:
            for sf in self.scales:
                for nf in self.noises:
                    for sx in self.sigmas:
                        for th in self.thetas:
                            sy = self.sigmas[int(rng.integers(len(self.sigmas)))]
                            yield TestCombo(qf, float(sf), float(nf), float(sx), float(sy), th)

    def sample(self, rng: np.random.Generator) -> TestCombo:
        """One combination drawn uniformly (each grid axis, and sigma_y, independently)."""
        def pick(v):
            return v[int(rng.integers(len(v)))]
        qf, sf, nf, sx, th, sy = (pick(v) for v in (self.qualities, self.scales, self.noises,
                                                      self.sigmas, self.thetas, self.sigmas))
        return TestCombo(qf, float(sf), float(nf), float(sx), float(sy), th)


TEST_RECIPE = TestRecipe()


def recipe_params(combo: TestCombo, cfg: DegradationConfig = DEGRADATIONS["celeba-test"]) -> DegradationParams:
    """DegradationParams of a TestCombo at cfg.resolution (sigmas and sf scaled, module docstring)."""
    r = cfg.scale
    kernel = KernelParams("aniso", combo.sigma_x * r, combo.sigma_y * r, combo.theta)
    return DegradationParams(kernel, cfg.effective_kernel_size, _scale_factor(combo.sf, r),
                             combo.nf, int(combo.qf), False)


def sample_params(cfg: DegradationConfig | DegradationMixture, rng: np.random.Generator) -> DegradationParams:
    """Draw one degradation from cfg (draw order in the module docstring; a mixture first picks
    its component with one uniform draw)."""
    if isinstance(cfg, DegradationMixture):
        cfg = cfg.pick(rng)
    if cfg.recipe == "celeba-test":
        return recipe_params(TEST_RECIPE.sample(rng), cfg)
    kernel = sample_kernel_params(rng, cfg.effective_blur_sigma, cfg.rotation, cfg.kernel_probs)
    scale = float(rng.uniform(*cfg.effective_downsample))
    noise = float(rng.uniform(*cfg.noise))
    quality = int(rng.uniform(*cfg.jpeg_quality))
    gray = bool(rng.random() < cfg.gray_prob) if cfg.gray_prob > 0 else False
    modes = cfg.resize_modes
    resize = modes[int(rng.integers(len(modes)))] if len(modes) > 1 else modes[0]
    return DegradationParams(kernel, cfg.effective_kernel_size, scale, noise, quality, gray, resize)


def to_gray(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB float32 -> (H, W, 3) with each channel = 0.299 R + 0.587 G + 0.114 B."""
    y = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2GRAY)
    return np.repeat(y[:, :, None], 3, axis=2)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip of an RGB float image in [0, 1] (encoded as 8-bit BGR like OpenCV code)."""
    u8 = np.rint(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)[:, :, ::-1]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(u8), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed (quality {quality})")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255.0


def _check_image(hq: np.ndarray) -> np.ndarray:
    hq = np.asarray(hq, dtype=np.float32)
    if hq.ndim != 3 or hq.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {hq.shape}")
    return hq


def apply_degradation(hq: np.ndarray, params: DegradationParams, rng: np.random.Generator) -> np.ndarray:
    """Apply one drawn degradation (module docstring steps 1-7); rng draws the noise field.

    Args: hq (H, W, 3) float32 RGB in [0, 1]. Returns: lq (H, W, 3) float32 in [0, 1] on the 1/255 grid.
    """
    hq = _check_image(hq)
    h, w = hq.shape[:2]
    x = cv2.filter2D(hq, -1, params.kernel.kernel(params.kernel_size), borderType=cv2.BORDER_REFLECT_101)
    size = (max(1, int(w // params.scale)), max(1, int(h // params.scale)))
    down, up = RESIZE_MODES[params.resize]
    x = cv2.resize(x, size, interpolation=down)
    noise = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(params.noise / 255.0)
    x = np.clip(x + noise, 0.0, 1.0)
    x = _jpeg(x, params.quality)
    x = cv2.resize(x, (w, h), interpolation=up)
    if params.gray:
        x = to_gray(x)
    return (np.clip(np.rint(x * 255.0), 0, 255) / 255.0).astype(np.float32)


def degrade_with_params(
    hq: np.ndarray, cfg: DegradationConfig | DegradationMixture, rng: np.random.Generator
) -> tuple[np.ndarray, DegradationParams]:
    """Draw params from cfg with rng and apply them. Returns (lq as in apply_degradation, params).
    When params.gray is True the caller should also gray the ground truth (to_gray), as GFPGAN does."""
    params = sample_params(cfg, rng)
    return apply_degradation(hq, params, rng), params


def degrade(hq: np.ndarray, cfg: DegradationConfig | DegradationMixture, rng: np.random.Generator) -> np.ndarray:
    """Random degradation of an (H, W, 3) float32 RGB [0, 1] image; returns lq of the same shape."""
    return degrade_with_params(hq, cfg, rng)[0]


def degrade_fixed(
    hq: np.ndarray, sigma_x: float, sigma_y: float, theta: float, sf: float, noise: float, quality: int,
    *, rng: np.random.Generator, kernel_size: int = 41,
) -> np.ndarray:
    """The official test-set `face_degradation` with given parameters, no scaling:
    aniso kernel (sigma_x, sigma_y, theta), downsample by sf, noise std `noise`/255 (rng), JPEG
    `quality`, resize back, quantize. Returns (H, W, 3) float32 on the 1/255 grid."""
    params = DegradationParams(KernelParams("aniso", sigma_x, sigma_y, theta), kernel_size, sf, noise,
                               int(quality), False)
    return apply_degradation(hq, params, rng)
