"""Inference orchestration shared by the CLI, the Python API, the web app and video.

`restore` and `inpaint` are the in-memory pipelines (`RestorePipeline`: aligned faces and whole photos;
`InpaintPipeline`); `files` is everything about files around them (output planning, the one output-folder
check, reading inputs, the file loop, the one writer of a result); `video` is the video job and its resume
key; `outputs` holds the records (`Job`, `Outcome`); `options` re-exports the option objects of
difface.config. The commands only parse arguments into options, call these and report the outcomes.
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
from difface.pipeline.files import check_output, plan_outputs, read_input, run, save_result
from difface.pipeline.inpaint import InpaintPipeline, MaskError
from difface.pipeline.outputs import Job, Outcome
from difface.pipeline.restoration import FacePipeline, ImageResult, NonFiniteResult, RestorePipeline

__all__ = [
    "DEFAULT_MAX_PIXELS", "FacePipeline", "ImageResult", "InpaintOptions", "InpaintPipeline", "Job", "MaskError",
    "ModelOptions", "NonFiniteResult", "OptionError", "Outcome", "PhotoOptions", "RestoreOptions", "RestorePipeline",
    "SamplingOptions", "VideoSettings", "check_output", "plan_outputs", "read_input", "run", "save_result",
]
