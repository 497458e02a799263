"""Whole-photo face handling: detection, FFHQ-template alignment, paste-back, background upscaling.

Typical use (the face restorer is any callable (N, 3, S, S) [0, 1] -> same shape):

    from difface.face import PhotoSettings, get_detector, restore_photo
    result = restore_photo(rgb, restorer, detector=get_detector("mtcnn"), face_size=512,
                           settings=PhotoSettings(upscale=2))
"""

from difface.face.align import align_faces, estimate_alignment, select_faces, similarity_lmeds, similarity_lstsq
from difface.face.background import RealESRGANUpsampler, get_bg_upsampler, lanczos_upsampler
from difface.face.detect import (
    DEFAULT_DETECTOR,
    DETECTORS,
    Detections,
    FaceDetector,
    detect_faces,
    draw_detections,
    get_detector,
    nms,
)
from difface.face.paste import inverse_affine, paste_faces, soft_mask
from difface.face.photo import MAX_OUTPUT_PIXELS, PhotoResult, PhotoSettings, find_faces, restore_photo
from difface.face.template import BORDER_GRAY_RGB, FFHQ_TEMPLATE_512, eye_distance, face_template

__all__ = [
    "BORDER_GRAY_RGB", "DEFAULT_DETECTOR", "DETECTORS", "FFHQ_TEMPLATE_512", "MAX_OUTPUT_PIXELS", "Detections",
    "FaceDetector", "PhotoResult", "PhotoSettings", "RealESRGANUpsampler", "align_faces", "detect_faces",
    "draw_detections",
    "estimate_alignment", "eye_distance", "face_template", "find_faces", "get_bg_upsampler", "get_detector",
    "inverse_affine", "lanczos_upsampler", "nms", "paste_faces", "restore_photo", "select_faces",
    "similarity_lmeds", "similarity_lstsq", "soft_mask",
]
