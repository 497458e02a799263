"""NMS, the detection front-end and the MTCNN / YuNet backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from difface.face.detect import (
    Detections,
    box_iou,
    detect_faces,
    detection_scale,
    draw_detections,
    get_detector,
    nms,
)
from difface.face.template import eye_distance, face_template

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real-world"
CROPPED = DATA / "difface-testdata" / "cropped_faces"


def _iou_reference(a, b) -> float:
    """Plain-Python IoU with continuous areas."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _nms_brute_force(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(_iou_reference(boxes[i], boxes[k]) <= thr for k in kept):
            kept.append(i)
    return kept


def test_box_iou_hand_values():
    a = np.array([0.0, 0.0, 10.0, 10.0])
    b = np.array([[5.0, 5.0, 15.0, 15.0], [10.0, 0.0, 20.0, 10.0], [0.0, 0.0, 5.0, 10.0]])
    np.testing.assert_allclose(box_iou(a, b), [25 / 175, 0.0, 0.5])
    np.testing.assert_allclose(box_iou(a, b, mode="min"), [25 / 100, 0.0, 1.0])


@pytest.mark.parametrize("seed", range(5))
def test_nms_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 100, (60, 2))
    wh = rng.uniform(5, 40, (60, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.random(60).round(2)  # ties on purpose
    for thr in (0.3, 0.5, 0.7):
        keep = nms(boxes, scores, thr)
        assert keep.tolist() == _nms_brute_force(boxes.tolist(), scores.tolist(), thr)
        # the defining properties: kept boxes overlap little; each dropped box overlaps a better kept one
        for i in range(len(boxes)):
            if i in keep:
                continue
            assert any(_iou_reference(boxes[i], boxes[k]) > thr and scores[k] >= scores[i] for k in keep)


def test_nms_empty_and_single():
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    assert nms(np.array([[0, 0, 1, 1.0]]), np.array([0.3]), 0.5).tolist() == [0]


def test_detection_scale_rules():
    assert detection_scale(100, 200) == pytest.approx(6.4)  # short side -> 640
    assert detection_scale(800, 1000) == 1.0
    assert detection_scale(4000, 3000) == pytest.approx(2048 / 4000)  # long side -> 2048
    assert detection_scale(100, 4000) == pytest.approx(2048 / 4000)  # the long-side limit wins


class _CentreDetector:
    """Fake backend: one face whose coordinates are fixed fractions of the image it is given."""

    name = "fake"

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def detect(self, rgb):
        h, w = rgb.shape[:2]
        self.seen.append((h, w))
        frac = np.array([[0.4, 0.4], [0.6, 0.4], [0.5, 0.5], [0.42, 0.6], [0.58, 0.6]])
        lm = frac * (w, h) - 0.5  # fractions of the pixel-edge frame, as pixel-centre coordinates
        return Detections(np.array([[0.3 * w - 0.5, 0.3 * h - 0.5, 0.7 * w - 0.5, 0.7 * h - 0.5]]),
                          np.array([0.9]), lm[None])


@pytest.mark.parametrize("hw", [(100, 150), (3000, 1000)])
def test_detect_faces_maps_back_to_input_pixels(hw):
    det = _CentreDetector()
    dets = detect_faces(np.zeros((*hw, 3), np.float32), det)
    h, w = hw
    assert det.seen[0] != hw  # the detector saw a resized copy
    frac = np.array([[0.4, 0.4], [0.6, 0.4], [0.5, 0.5], [0.42, 0.6], [0.58, 0.6]])
    np.testing.assert_allclose(dets.landmarks[0], frac * (w, h) - 0.5, atol=0.01 * max(hw) / 640)


def test_detections_container():
    d = Detections(np.ones((2, 4)), [0.5, 0.9], np.zeros((2, 5, 2)))
    assert len(d) == 2 and d.sorted().scores.tolist() == pytest.approx([0.9, 0.5])
    assert len(Detections()) == 0 and Detections().to_json() == []
    js = d.scaled(2.0).to_json()
    assert js[0]["box"] == [2.0, 2.0, 2.0, 2.0] and len(js[0]["landmarks"]) == 5
    with pytest.raises(ValueError):
        Detections(np.ones((2, 4)), [0.5], np.zeros((2, 5, 2)))
    out = draw_detections(np.zeros((50, 60, 3), np.float32), d)
    assert out.shape == (50, 60, 3) and out.max() > 0


def test_unknown_backend_and_missing_weights(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown face detector"):
        get_detector("nope")
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path))  # an empty weights cache
    with pytest.raises(FileNotFoundError, match="detection_Resnet50_Final.pth"):
        get_detector("retinaface_resnet50")
    with pytest.raises(FileNotFoundError, match="detection_mobilenet0.25_Final.pth"):
        get_detector("retinaface_mobile0.25")
    with pytest.raises(FileNotFoundError):
        get_detector("retinaface_resnet50", weights=tmp_path / "missing.pth")


def test_a_detector_is_one_entry_of_the_table(monkeypatch):
    """get_detector builds through DETECTORS; config's names, the CLI's --detector help and the options' check
    come from the same table."""
    from difface import config
    from difface.cli import _command_parser, build_parser
    from difface.face import detect

    assert config.DETECTORS == tuple(detect.DETECTORS) and config.DEFAULT_DETECTOR in detect.DETECTORS
    help_text = " ".join(_command_parser(build_parser(["restore"]), ["restore"]).format_help().split())
    assert all(name in help_text for name in detect.DETECTORS)
    assert config.PhotoOptions(detector="retinaface_mobile0.25").detector == "retinaface_mobile0.25"
    with pytest.raises(config.OptionError, match="detector"):
        config.PhotoOptions(detector="nope")

    built = []

    class Fixed:
        def detect(self, rgb):
            return Detections()

    monkeypatch.setitem(detect.DETECTORS, "fixed", lambda weights, device: built.append((weights, device)) or Fixed())
    assert isinstance(get_detector("fixed", weights="w.pth", device="meta"), Fixed)
    assert built == [("w.pth", "meta")]


def test_mtcnn_shipped_weights_and_empty_image():
    from difface.face.mtcnn import MTCNN, load_mtcnn

    net = load_mtcnn()
    assert set(net.state_dict()) == set(MTCNN().state_dict())
    assert sum(p.numel() for p in net.parameters()) == 495_850  # 6,632 + 100,178 + 389,040 params
    det = get_detector("mtcnn")
    assert len(det.detect(np.full((80, 120, 3), 0.5, np.float32))) == 0
    assert len(det.detect(np.zeros((5, 5, 3), np.float32))) == 0  # smaller than one PNet window


def _aligned_faces() -> list[Path]:
    files = sorted(CROPPED.glob("*.png"))
    if not files:
        pytest.skip(f"{CROPPED} not found (shared test data absent)")
    return files


@pytest.mark.parametrize("backend", ["mtcnn", "yunet"])
def test_detection_on_aligned_faces(backend):
    from difface.images import read_image

    files = _aligned_faces()
    if backend == "yunet":
        pytest.importorskip("yuface")
    det = get_detector(backend)
    tpl = face_template(512)
    ref = float(eye_distance(tpl))
    errors, counts = [], []
    for f in files:
        dets = det.detect(read_image(f).rgb)
        counts.append(len(dets))
        if len(dets):
            errors.append(np.linalg.norm(dets.landmarks[0] - tpl, axis=1).mean() / ref)
    if backend == "mtcnn":
        assert counts == [1] * len(files)
        assert np.mean(errors) < 0.10 and max(errors) < 0.25  # measured 0.080 and 0.21
    else:
        assert sum(c == 1 for c in counts) >= len(files) - 1  # YuNet misses one of the 20
        assert np.mean(errors) < 0.15


def test_mtcnn_finds_the_six_faces_in_t1():
    from difface.images import read_image

    path = DATA / "pypi-samples" / "t1.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found (shared test data absent)")
    dets = detect_faces(read_image(path).rgb, get_detector("mtcnn"))
    assert len(dets) == 6
    assert (eye_distance(dets.landmarks) > 20).all()
