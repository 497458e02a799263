"""The one home of configuration: every option dataclass of the inference pipelines, every default and
choice list, one validator per option, and the table of named models (`MODELS`).

The CLI (difface.commands), the app and the API build options only through these classes.

Every range is checked when an options object is made, before any work: a bad value raises
`OptionError` (a ValueError) naming the option by its field name (the CLI prints its flag). Checks that need the
loaded model (start step within the chain and the prior's trained range, nfe within the start
step) are made by the pipeline right after loading, still before any input is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from difface.checks import (  # noqa: F401 (re-exported: the options' checks and their error)
    OptionError,
    _check_backend,
    _int,
    _number,
    _solvers,
    check_eta,
    check_max_pixels,
    check_nfe,
    check_output_format,
    check_start_step,
    check_strength,
    check_threads,
    ref,
    respaced_length,
    say_options,
)
from difface.names import DEFAULT_DETECTOR, DEFAULT_NFE, DEFAULT_QUALITY, OFFICIAL, OUTPUT_FORMATS  # noqa: F401
from difface.names import DTYPE_NAMES as DTYPES

# This module imports no torch, OpenCV or numpy (a test checks it): the names it shares with the heavy modules
# live in difface.names, and the tables owned by heavy modules are read on first use: `SAMPLERS` and `SOLVERS`
# (difface.diffusion.solvers, the sampler table), `DETECTORS` (difface.face.detect) and `BACKEND_NAMES` (the names
# of difface.backends.RUNTIMES) are module attributes
# that import their table when first asked for (`__getattr__` below), and the checks that need them import it then.
_LAZY = {"SAMPLERS": ("difface.diffusion.solvers", "SAMPLERS"), "SOLVERS": ("difface.diffusion.solvers", "SOLVERS"),
         "DETECTORS": ("difface.face.detect", "DETECTORS"), "BACKEND_NAMES": ("difface.backends", "RUNTIMES"),
         "RUN_PRESETS": ("difface.presets", "RUN_PRESET_TABLE")}


def __getattr__(name: str):
    """SAMPLERS, SOLVERS (the sampler table's), DETECTORS (the detector names), BACKEND_NAMES (the runtime
    table's names, difface.backends.RUNTIMES) and RUN_PRESETS (`--preset`: difface.presets.RUN_PRESET_TABLE's names),
    imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    return tuple(value) if name in ("DETECTORS", "RUN_PRESETS", "BACKEND_NAMES") else value


def _samplers() -> tuple[str, ...]:
    from difface.diffusion.solvers import SAMPLERS

    return SAMPLERS


def _detectors() -> tuple[str, ...]:
    from difface.face.detect import DETECTORS

    return tuple(DETECTORS)


DEFAULT_SEED = 12345
DEFAULT_STEPS = "ddim250"
# Inputs above this many pixels are refused from the image header, before decoding: a 50 MP photo
# takes about 2 GB to decode and resize. Raise it with --max-pixels.
DEFAULT_MAX_PIXELS = 50_000_000
BG_UPSAMPLERS = ("auto", "realesrgan", "lanczos")
DEFAULT_BG_UPSAMPLER = "auto"
DEFAULT_DEVICE = "auto"  # difface.device.pick_device: CUDA, else MPS, else the CPU
DEFAULT_BATCH_SIZE = 1
MAX_UPSCALE = 8
DEFAULT_UPSCALE = 2
DEFAULT_CRF = 18
DEFAULT_BATCH_FRAMES = 8
DEFAULT_MAX_VIDEO_SECONDS = 300.0  # longer clips are refused from the header (0: no limit)
DEFAULT_X264_PRESET = "medium"  # libx264 speed/size preset of the videos written (difface.video.encode)
SCHEDULES = ("even", "fitted")  # timesteps of the few-step samplers (difface.schedules: fitted ones)
DEFAULT_RUN_PRESET = "official"


@dataclass(frozen=True)
class ModelEntry:
    """A model the tool knows by name (`MODELS`, `--model NAME`): its weights (registry names of
    difface.hub.REGISTRY; None: the bundled files of `task`) and its defaults.

    start_t: the default start as an original timestep of 1000 (the same on any respacing); eta: default DDIM
    eta; t_max: largest timestep the prior was trained on (None: read from the weights' metadata, or
    unlimited); auto: a call without a start step chooses one per image (difface.autostart); image_size: the
    faces the networks see (pixels a side); licence: the terms of the weights; label: the app's menu entry;
    description: one line for `--help` and `difface weights list`."""

    prior: str | None
    estimator: str | None
    task: str
    image_size: int
    start_t: int
    eta: float
    t_max: int | None = None
    auto: bool = False
    licence: str = ""
    label: str = ""
    description: str = ""

    @property
    def bundled(self) -> bool:
        """True for the bundled files (shipped in the package, offline)."""
        return self.prior is None and self.estimator is None

    @property
    def weights(self) -> tuple[str, ...]:
        """The weights registry entries this model needs (none for the bundled files: they are in the package)."""
        return tuple(name for name in (self.prior, self.estimator) if name is not None)


_BUNDLED_LICENCE = "research and non-commercial use only (trained on CelebA; docs/model-card.md)"
_OFFICIAL_LICENCE = "non-commercial (the DifFace project's NTU S-Lab License 1.0)"

# The one table of named models: `--model NAME`, `DifFace.from_pretrained(NAME)`, the app's menu and `difface
# weights list` read it. The official defaults: restoration starts at step 100 of "ddim250" (t = 400), eta 0.5;
# inpainting at step 120 (t = 480), eta 1.0. The bundled prior is small and CPU-trained: it helps near the clean
# end of the chain and harms from t = 400 on, so its fixed start is t = 80 with eta 0 (docs/model-card.md), and
# its estimator carries a calibrated auto rule that is used by default ("Version 2").
MODELS: dict[str, ModelEntry] = {
    "official-512": ModelEntry(
        "iddpm-ffhq512", "swinir-ffhq512", "restoration", 512, start_t=400, eta=0.5, licence=_OFFICIAL_LICENCE,
        label="official DifFace 512 px (iddpm-ffhq512 + swinir-ffhq512)",
        description="the paper's restoration models: FFHQ prior and SwinIR estimator, 512 px (downloaded, ~700 MB)"),
    "official-256-inpaint": ModelEntry(
        "iddpm-ffhq256", "lama-inpainting256", "inpainting", 256, start_t=480, eta=1.0, licence=_OFFICIAL_LICENCE,
        label="official DifFace 256 px (iddpm-ffhq256 + lama-inpainting256)",
        description="the paper's inpainting models: FFHQ prior and LaMa estimator, 256 px (downloaded)"),
    "bundled-64": ModelEntry(
        None, None, "restoration", 64, start_t=80, eta=0.0, auto=True, licence=_BUNDLED_LICENCE,
        label="bundled small model (64 px)",
        description="the bundled small model (difface-small64, CelebA), 64 px, offline; start chosen per face"),
    "bundled-64-inpaint": ModelEntry(
        None, None, "inpainting", 64, start_t=480, eta=1.0, licence=_BUNDLED_LICENCE,
        label="bundled small inpainter (64 px)",
        description="the bundled small inpainter (difface-small64, CelebA), 64 px, offline"),
}
TASKS = ("restoration", "inpainting")
# The model of each task when none is named and no files are given: the bundled one (offline).
DEFAULT_MODEL = {"restoration": "bundled-64", "inpainting": "bundled-64-inpaint"}
# The official model of each task: its defaults (start, eta) are those of files given without a model name.
OFFICIAL_MODEL = {"restoration": "official-512", "inpainting": "official-256-inpaint"}


def models_of(task: str) -> list[str]:
    """The names of MODELS for `task`, the task's default first, then in the table's order."""
    return sorted((name for name, e in MODELS.items() if e.task == task), key=lambda n: n != DEFAULT_MODEL[task])


def check_model(name, task: str | None = None) -> None:
    """model: None or a name of MODELS (of `task`, when given)."""
    if name is None:
        return
    if name not in MODELS:
        raise OptionError("model", f"must be one of {', '.join(MODELS)}, got {name!r}")
    if task is not None and MODELS[name].task != task:
        raise OptionError("model", f"{name} is a model for {MODELS[name].task}; for {task} choose one of "
                          f"{', '.join(models_of(task))}")


@dataclass(frozen=True)
class ModelOptions:
    """Which networks, on which device, at which precision.

    model: a name of MODELS (its weights and its defaults); prior/estimator: registry names or files instead
    (defaults: those of the official model of their task); none of the three: the task's DEFAULT_MODEL (the
    bundled small model); steps: timestep
    respacing of the chain; device: auto | cpu | cuda | cuda:N | mps; dtype: fp32 | bf16 | fp16;
    backend: torch | onnxruntime | openvino (difface.backends: where the network forwards run); threads: CPU
    threads of the forwards, applied by the front ends at the start of a run (0: automatic, the cores not busy
    with other work: difface.threads).
    """

    prior: str | None = None
    estimator: str | None = None
    steps: str = DEFAULT_STEPS
    device: str = DEFAULT_DEVICE
    dtype: str = "fp32"
    fast: bool = False
    compile: bool = False
    backend: str = "torch"
    threads: int = 0
    model: str | None = None

    def __post_init__(self) -> None:
        check_model(self.model)
        if self.model is not None and (self.prior is not None or self.estimator is not None):
            raise OptionError("model", f"give {ref('model')} or {ref('prior')} and {ref('estimator')}, not both: "
                              f"{self.model} names its own weights")
        if (self.prior is None) != (self.estimator is None):
            which = "estimator" if self.estimator is None else "prior"
            raise OptionError(which, f"give both {ref('prior')} and {ref('estimator')} (or neither, for the bundled "
                              "model)")
        respaced_length(self.steps)
        if self.dtype not in DTYPES:
            raise OptionError("dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _check_backend(self.backend, self.dtype, self.fast or self.compile)
        check_threads(self.threads)

    @property
    def bundled(self) -> bool:
        """True when these options load the bundled files (no files given, and no model or a bundled one)."""
        if self.model is not None:
            return MODELS[self.model].bundled
        return self.prior is None and self.estimator is None

    def files(self) -> tuple[str | None, str | None]:
        """(prior, estimator) that load: the named model's registry names, or those given (None: bundled)."""
        if self.model is not None:
            return MODELS[self.model].prior, MODELS[self.model].estimator
        return self.prior, self.estimator


@dataclass(frozen=True)
class SamplingOptions:
    """How the reverse process runs.

    start_step: respaced step N the estimate is diffused to (None: the model's default, as the same
    original timestep on any respacing; "auto": chosen per image from the input; 0: estimator only);
    eta: DDIM eta in [0, 1] (None: the model's); sampler: one of SAMPLERS (difface.diffusion.solvers); nfe:
    network evaluations of the few-step samplers (None: DEFAULT_NFE); seed: every image draws from its own generator
    seeded from this and the image's content; schedule: the few-step samplers' timesteps, evenly spaced or
    fitted to the official loop for this prior (schedule_fallback "official": the official loop where none
    is stored, None: an error); strength: None or "auto" (the model's default start), or a number in [0, 1]
    that sets the start step instead (difface.strength; giving `start_step` too is an error).
    """

    start_step: int | str | None = None
    eta: float | None = None
    sampler: str = OFFICIAL
    nfe: int | None = None
    seed: int = DEFAULT_SEED
    schedule: str = "even"  # few-step timesteps: one of SCHEDULES
    schedule_fallback: str | None = None  # "fitted" without a stored schedule: "official" loop, None: an error
    strength: float | str | None = None  # difface.strength: how far the prior may move a face, in [0, 1]

    def __post_init__(self) -> None:
        check_strength(self.strength, self.start_step)
        if self.schedule not in SCHEDULES:
            raise OptionError("schedule", f"must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        check_start_step(self.start_step)
        check_eta(self.eta)
        if self.sampler not in _samplers():
            raise OptionError("sampler", f"must be one of {', '.join(_samplers())}, got {self.sampler!r}")
        check_nfe(self.nfe, self.sampler)
        _int("seed", self.seed)


@dataclass(frozen=True)
class PhotoOptions:
    """Whole photos: detection, background, paste-back.

    upscale: output scale (1..8); detector: a face detector backend; bg_upsampler: auto | realesrgan |
    lanczos | a weights file; max_face_size: faces whose aligned crop spans more input pixels are left
    as they were (None, the default, and 0: no limit).
    """

    upscale: int = DEFAULT_UPSCALE
    detector: str = DEFAULT_DETECTOR
    only_center_face: bool = False
    bg_upsampler: str = DEFAULT_BG_UPSAMPLER
    draw_boxes: bool = False
    max_face_size: float | None = None

    def __post_init__(self) -> None:
        _int("upscale", self.upscale, 1, MAX_UPSCALE)
        if self.detector not in _detectors():
            raise OptionError("detector", f"must be one of {', '.join(_detectors())}, got {self.detector!r}")
        if self.bg_upsampler not in BG_UPSAMPLERS and not Path(self.bg_upsampler).is_file():
            raise OptionError("bg_upsampler", f"must be one of {', '.join(BG_UPSAMPLERS)} or an existing "
                              f"weights file, got {self.bg_upsampler!r}")
        if self.max_face_size is not None:
            _number("max_face_size", self.max_face_size, 0.0)


@dataclass(frozen=True)
class VideoSettings:
    """Videos (difface.video.restore_video takes this whole): the temporal-consistency parts (each can be switched
    off for comparison), face finding, the encoder and the limits.

    tracking: follow faces across frames (off: every frame on its own); track_seeds: one noise seed per track
    (the same noise for the same face in every frame; off: a new seed for every face in every frame); smoothing:
    landmarks smoothed over +-smooth_radius frames (needs tracking; also fills frames where the detector missed
    a tracked face); batch_frames: frames whose faces are restored together (1: frame by frame), at most
    batch_size faces per call; crf: H.264 quality (0-51, lower is better) at x264 `preset`; resume: reuse the
    finished segments (segment_seconds long) of an interrupted run; refuse_vfr: refuse a variable frame rate
    instead of keeping every frame's timestamp; max_seconds / max_pixels: clips longer / frames larger are
    refused from the header (None or 0: no limit). robust_alignment: LMedS alignment (the photo default) or
    least squares; None picks least squares with smoothing (LMedS can switch inlier sets between frames, a
    jump) and LMedS without. min_eye_dist, det_min_side, det_max_side: face finding; max_face_side: faces whose
    aligned crop spans more input pixels are left as they are; max_missing: frames a track survives unseen.
    Within RestoreOptions, seed, batch_size, max_face_side and max_pixels are set from the other options
    (sampling.seed, batch_size (at least 16), photo.max_face_size, max_pixels) by difface.pipeline.video.
    """

    tracking: bool = True
    track_seeds: bool = True
    smoothing: bool = True
    batch_frames: int = DEFAULT_BATCH_FRAMES
    crf: int = DEFAULT_CRF
    resume: bool = True
    refuse_vfr: bool = False
    max_seconds: float | None = DEFAULT_MAX_VIDEO_SECONDS  # difface.video.io
    smooth_radius: int = 4
    batch_size: int = 16
    seed: int = DEFAULT_SEED
    min_eye_dist: float = 5.0
    max_face_side: float | None = None
    max_missing: int = 5
    det_min_side: int = 640
    det_max_side: int = 2048
    robust_alignment: bool | None = None
    preset: str = DEFAULT_X264_PRESET
    segment_seconds: float = 10.0
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        _int("batch_frames", self.batch_frames, 1, 256)
        _int("crf", self.crf, 0, 51)
        if self.max_seconds is not None:
            _number("max_seconds", self.max_seconds, 0)

    @classmethod
    def independent(cls, **kw) -> VideoSettings:
        """Per-frame independent restoration: no tracking, no smoothing, per-frame seeds, no batching."""
        return cls(tracking=False, track_seeds=False, smoothing=False, batch_frames=1, **kw)


@dataclass(frozen=True)
class RestoreOptions:
    """Everything `difface restore` needs (see the member classes); ext and quality: the format of the images it
    writes (videos are MP4 whatever these say)."""

    model: ModelOptions = field(default_factory=ModelOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    photo: PhotoOptions = field(default_factory=PhotoOptions)
    video: VideoSettings = field(default_factory=VideoSettings)
    aligned: bool = False
    batch_size: int = DEFAULT_BATCH_SIZE
    save_comparison: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    ext: str = "png"  # the format of the images written: one of OUTPUT_FORMATS
    quality: int = DEFAULT_QUALITY  # of ext jpg and webp

    def __post_init__(self) -> None:
        check_model(self.model.model, "restoration")
        _int("batch_size", self.batch_size, 1, 4096)
        check_max_pixels(self.max_pixels)
        check_output_format(self.ext, self.quality)


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
    batch_size: int = DEFAULT_BATCH_SIZE
    save_comparison: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        check_model(self.model.model, "inpainting")
        _int("batch_size", self.batch_size, 1, 4096)
        check_max_pixels(self.max_pixels)
        if self.mask is not None and not Path(self.mask).exists():
            raise OptionError("mask", f"{self.mask}: no such file or folder")
        if self.sampling.strength is not None:
            raise OptionError("strength", f"applies to restoration; for inpainting give {ref('start_step')}")
        if self.sampling.start_step == "auto":
            raise OptionError("start_step", "'auto' chooses a start from the damage of a restoration input; "
                              "for inpainting give a number (default: the model's)")
