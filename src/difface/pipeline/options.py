"""Frozen, validated options of the inference pipelines, built once by the CLI, the API or the app.

Every range is checked when an options object is made, before any work: a bad value raises
`OptionError` (a ValueError) naming the option as the command line spells it. Checks that need the
loaded model (start step within the chain and the prior's trained range, nfe within the start
step) are made by the pipeline right after loading, still before any input is touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from difface.device import DTYPES
from difface.diffusion.sampling import SAMPLERS
from difface.diffusion.schedule import space_timesteps

# Inputs above this many pixels are refused from the image header, before decoding: a 50 MP photo
# takes about 2 GB to decode and resize. Raise it with --max-pixels.
DEFAULT_MAX_PIXELS = 50_000_000
DETECTORS = ("mtcnn", "yunet", "retinaface_resnet50", "retinaface_mobile0.25")
BG_UPSAMPLERS = ("auto", "realesrgan", "lanczos")
MAX_UPSCALE = 8


class OptionError(ValueError):
    """An option value that cannot work; `option` is its command-line name (e.g. "--eta")."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{option}: {message}")
        self.option, self.message = option, message


def _int(option: str, value, lo: int | None = None, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError(option, f"expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        raise OptionError(option, f"must be {bounds}, got {value}")


def _number(option: str, value, lo: float, hi: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise OptionError(option, f"expected a finite number, got {value!r}")
    if value < lo or (hi is not None and value > hi):
        raise OptionError(option, f"must lie in [{lo:g}, {hi:g}], got {value:g}" if hi is not None
                          else f"must be at least {lo:g}, got {value:g}")


def respaced_length(steps: str) -> int:
    """Number of steps of a respacing spec ("ddim250", "250", "100,50"); OptionError when invalid."""
    try:
        n = len(space_timesteps(1000, steps))
    except (ValueError, TypeError) as e:
        raise OptionError("--steps", f"{steps!r} is not a valid respacing ({e}); use e.g. ddim250, ddim50 or 250") \
            from None
    if n < 1:
        raise OptionError("--steps", f"{steps!r} keeps no step; use e.g. ddim250")
    return n


def _check_backend(backend: str, dtype: str, torch_only: bool) -> None:
    """OptionError("--backend") for an unknown or missing backend (with the pip command) or a combination
    it cannot run (difface.backends)."""
    from difface.backends import BACKENDS, BackendUnavailable, check_backend

    if backend not in BACKENDS:
        raise OptionError("--backend", f"must be one of {', '.join(BACKENDS)}, got {backend!r}")
    try:
        check_backend(backend)
    except BackendUnavailable as e:
        raise OptionError("--backend", str(e)) from None
    if torch_only:
        raise OptionError("--backend", f"--fast and --compile are torch options; leave them out with {backend}")
    if backend == "onnxruntime" and dtype == "bf16":
        raise OptionError("--backend", "onnxruntime runs fp32 (fp16 on a GPU); for bf16 use --backend openvino or "
                          "torch")


@dataclass(frozen=True)
class ModelOptions:
    """Which networks, on which device, at which precision.

    prior/estimator: registry names or files (both None: the bundled small model); steps: timestep
    respacing of the chain; device: auto | cpu | cuda | cuda:N | mps; dtype: fp32 | bf16 | fp16;
    backend: torch | onnxruntime | openvino (difface.backends: where the network forwards run).
    """

    prior: str | None = None
    estimator: str | None = None
    steps: str = "ddim250"
    device: str = "auto"
    dtype: str = "fp32"
    fast: bool = False
    compile: bool = False
    backend: str = "torch"

    def __post_init__(self) -> None:
        if (self.prior is None) != (self.estimator is None):
            which = "--estimator" if self.estimator is None else "--prior"
            raise OptionError(which, "give both --prior and --estimator (or neither, for the bundled model)")
        respaced_length(self.steps)
        if self.dtype not in DTYPES:
            raise OptionError("--dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.backend != "torch":
            _check_backend(self.backend, self.dtype, self.fast or self.compile)


@dataclass(frozen=True)
class SamplingOptions:
    """How the reverse process runs.

    start_step: respaced step N the estimate is diffused to (None: the model's default, as the same
    original timestep on any respacing; "auto": chosen per image from the input; 0: estimator only);
    eta: DDIM eta in [0, 1] (None: the model's); sampler: official | ddim | dpmpp2m; nfe: network
    evaluations of the few-step samplers (None: 10); seed: every image draws from its own generator
    seeded from this and the image's content.
    """

    start_step: int | str | None = None
    eta: float | None = None
    sampler: str = "official"
    nfe: int | None = None
    seed: int = 12345
    schedule: str = "even"  # few-step timesteps: even | fitted (difface.schedules)
    schedule_fallback: str | None = None  # "fitted" without a stored schedule: "official" loop, None: error

    def __post_init__(self) -> None:
        if self.schedule not in ("even", "fitted"):
            raise OptionError("--schedule", f"must be even or fitted, got {self.schedule!r}")
        if isinstance(self.start_step, str):
            if self.start_step != "auto":
                raise OptionError("--start-step", f"expected an integer or 'auto', got {self.start_step!r}")
        elif self.start_step is not None:
            _int("--start-step", self.start_step, 0)
        if self.eta is not None:
            _number("--eta", self.eta, 0.0, 1.0)
        if self.sampler not in SAMPLERS:
            raise OptionError("--sampler", f"must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.nfe is not None:
            if self.sampler == "official":
                raise OptionError("--nfe", "applies to --sampler ddim or dpmpp2m; the official loop makes one "
                                  "evaluation per respaced step (see --steps and --start-step)")
            _int("--nfe", self.nfe, 1)
        _int("--seed", self.seed)


@dataclass(frozen=True)
class PhotoOptions:
    """Whole photos: detection, background, paste-back.

    upscale: output scale (1..8); detector: a face detector backend; bg_upsampler: auto | realesrgan |
    lanczos | a weights file; max_face_size: faces whose aligned crop spans more input pixels are left
    as they were (None, the default, and 0: no limit).
    """

    upscale: int = 2
    detector: str = "mtcnn"
    only_center_face: bool = False
    bg_upsampler: str = "auto"
    draw_boxes: bool = False
    max_face_size: float | None = None

    def __post_init__(self) -> None:
        _int("--upscale", self.upscale, 1, MAX_UPSCALE)
        if self.detector not in DETECTORS:
            raise OptionError("--detector", f"must be one of {', '.join(DETECTORS)}, got {self.detector!r}")
        if self.bg_upsampler not in BG_UPSAMPLERS and not Path(self.bg_upsampler).is_file():
            raise OptionError("--bg-upsampler", f"must be one of {', '.join(BG_UPSAMPLERS)} or an existing "
                              f"weights file, got {self.bg_upsampler!r}")
        if self.max_face_size is not None:
            _number("--max-face-size", self.max_face_size, 0.0)


@dataclass(frozen=True)
class VideoSettings:
    """Videos (difface.video): the temporal-consistency parts (each can be switched off for comparison)
    and the encoder.

    tracking: follow faces across frames; track_seeds: one noise seed per track (the same noise for the
    same face in every frame); smoothing: landmarks smoothed over time (needs tracking); batch_frames:
    frames whose faces are restored together; crf: H.264 quality (0-51, lower is better); resume: reuse
    the finished segments of an interrupted run; refuse_vfr: refuse a variable frame rate instead of
    keeping every frame's timestamp.
    """

    tracking: bool = True
    track_seeds: bool = True
    smoothing: bool = True
    batch_frames: int = 8
    crf: int = 18
    resume: bool = True
    refuse_vfr: bool = False
    max_seconds: float = 300.0  # longer clips are refused from the header (0: no limit); difface.video.io

    def __post_init__(self) -> None:
        _int("--batch-frames", self.batch_frames, 1, 256)
        _int("--crf", self.crf, 0, 51)
        _number("--max-video-seconds", self.max_seconds, 0)


@dataclass(frozen=True)
class RestoreOptions:
    """Everything `difface restore` needs (see the member classes)."""

    model: ModelOptions = field(default_factory=ModelOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    photo: PhotoOptions = field(default_factory=PhotoOptions)
    video: VideoSettings = field(default_factory=VideoSettings)
    aligned: bool = False
    batch_size: int = 1
    save_comparison: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        _int("--batch-size", self.batch_size, 1, 4096)
        _int("--max-pixels", self.max_pixels, 1)


@dataclass(frozen=True)
class InpaintOptions:
    """Everything `difface inpaint` needs: the model and sampling options, and the masks.

    mask: None (the official convention: pixels that are exactly 0 in all three channels are
    missing), a mask image used for every input, or a folder of masks paired with the inputs by file
    stem (white = missing; any size, resized nearest to the input).
    """

    model: ModelOptions = field(default_factory=ModelOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    mask: str | None = None
    batch_size: int = 1
    save_comparison: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        _int("--batch-size", self.batch_size, 1, 4096)
        _int("--max-pixels", self.max_pixels, 1)
        if self.mask is not None and not Path(self.mask).exists():
            raise OptionError("--mask", f"{self.mask}: no such file or folder")
        if self.sampling.start_step == "auto":
            raise OptionError("--start-step", "'auto' chooses a start from the damage of a restoration input; "
                              "for inpainting give a number (default: the model's)")
