"""Inference orchestration shared by the CLI, the Python API, the web app and video.

`options` holds the frozen, validated option objects; `outputs` plans output names and checks
folders; `restore` is the restoration pipeline (aligned faces and whole photos). The commands only
parse arguments into options, call a pipeline and report its outcomes.
"""

from difface.config import (
    DEFAULT_MAX_PIXELS,
    InpaintOptions,
    ModelOptions,
    OptionError,
    PhotoOptions,
    RestoreOptions,
    SamplingOptions,
    VideoSettings,
)
from difface.pipeline.inpaint import InpaintPipeline, MaskError
from difface.pipeline.outputs import Job, Outcome, check_writable, plan_outputs
from difface.pipeline.restore import FacePipeline, ImageResult, NonFiniteResult, RestorePipeline

__all__ = [
    "DEFAULT_MAX_PIXELS", "FacePipeline", "ImageResult", "InpaintOptions", "InpaintPipeline", "Job", "MaskError",
    "ModelOptions", "NonFiniteResult", "OptionError", "Outcome", "PhotoOptions", "RestoreOptions", "RestorePipeline",
    "SamplingOptions", "VideoSettings", "check_writable", "plan_outputs",
]
