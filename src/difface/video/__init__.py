"""Video: restore the faces of a clip, stable from frame to frame, audio kept.

    from difface.video import restore_video, model_restorer
    from difface.face import get_detector
    from difface.core import DifFace

    model = DifFace.from_pretrained()
    result = restore_video("clip.mp4", "out/clip.mp4", restore_faces=model_restorer(model),
                           detector=get_detector("mtcnn"), face_size=model.image_size, upscale=2)

Decoding and encoding go through PyAV (`pip install 'difface[video]'`), imported only when a video
is read or written; `is_video_path` needs nothing.
"""

from difface.video.io import (
    VIDEO_EXTENSIONS,
    CorruptVideoError,
    EmptyVideoError,
    EncoderSettings,
    NotAVideoError,
    NoVideoStreamError,
    VariableFrameRateError,
    VideoDependencyError,
    VideoError,
    VideoInfo,
    VideoTooLargeError,
    is_video_path,
    probe_video,
    read_frames,
)
from difface.video.process import (
    FaceParts,
    FrameFaces,
    RestoreFaces,
    VideoOptions,
    VideoResult,
    model_restorer,
    restore_video,
)
from difface.video.track import FaceTracker, frame_seed, smooth_landmarks, track_seed

__all__ = [
    "VIDEO_EXTENSIONS", "CorruptVideoError", "EmptyVideoError", "EncoderSettings", "FaceParts", "FaceTracker",
    "FrameFaces",
    "NoVideoStreamError", "NotAVideoError", "RestoreFaces", "VariableFrameRateError", "VideoDependencyError",
    "VideoError", "VideoInfo", "VideoOptions", "VideoResult", "VideoTooLargeError", "frame_seed", "is_video_path",
    "model_restorer", "probe_video", "read_frames", "restore_video", "smooth_landmarks", "track_seed",
]
