"""The errors of difface.video (each message starts with the file name) and the PyAV import."""

from __future__ import annotations


class VideoError(ValueError):
    """A video that cannot be processed; the message starts with the file name."""


class NotAVideoError(VideoError):
    """The file is missing, not a media file, or a still image."""


class NoVideoStreamError(VideoError):
    """The file is a media file without a video stream (e.g. audio only)."""


class EmptyVideoError(VideoError):
    """The video stream has no frames."""


class CorruptVideoError(VideoError):
    """The video data cannot be decoded, or the file ends before its last frame (truncated)."""


class VideoTooLargeError(VideoError):
    """Frames over the pixel limit, or a clip over the duration limit (from the header, before decoding)."""


class VariableFrameRateError(VideoError):
    """Raised only when variable frame rates are refused (`check_frame_rate(..., refuse=True)`)."""


class VideoDependencyError(ImportError):
    """PyAV is not installed."""


def require_av():
    """The `av` module, or VideoDependencyError saying how to install it."""
    try:
        import av
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise VideoDependencyError("video needs PyAV (FFmpeg bindings): pip install 'difface[video]'") from e
    return av
