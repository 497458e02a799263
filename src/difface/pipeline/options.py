"""The pipelines' options: they live in difface.config (the one home of every option and default)."""

from difface.config import (  # noqa: F401
    BG_UPSAMPLERS,
    DEFAULT_MAX_PIXELS,
    DETECTORS,
    MAX_UPSCALE,
    InpaintOptions,
    ModelOptions,
    OptionError,
    PhotoOptions,
    RestoreOptions,
    SamplingOptions,
    VideoSettings,
    respaced_length,
)
