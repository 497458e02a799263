"""Identity metrics (ArcFace ONNX with filler weights, dlib descriptor) and the landmark distance."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from difface.metrics.identity import (
    ARCFACE_TEMPLATE_112,
    FFHQ_TEMPLATE_512,
    ArcFaceONNX,
    angle_degrees,
    cosine_similarity,
    ffhq_to_arcface,
    similarity_transform,
)
from difface.metrics.lmd import landmark_distance, lmd

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def test_cosine_and_angle_hand_computed():
    assert cosine_similarity([1, 0], [1, 1]) == pytest.approx(1 / math.sqrt(2))
    assert angle_degrees(cosine_similarity([1, 0], [1, 1])) == pytest.approx(45.0)
    assert angle_degrees(1.0000001) == 0.0 and angle_degrees(-1.0) == pytest.approx(180.0)


def test_similarity_transform_recovers_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    th, s, t = math.radians(30), 2.0, np.array([5.0, -3.0])
    r = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    dst = s * src @ r.T + t
    np.testing.assert_allclose(similarity_transform(src, dst), np.hstack([s * r, t[:, None]]), atol=1e-10)


def test_ffhq_to_arcface_moves_template_points():
    # Bright dots on the FFHQ landmarks of a 512 image land near the ArcFace 112 landmarks: within
    # 3 px each (the two templates differ in shape by up to ~2.4 px after the best similarity), and
    # their centroid on the template's centroid (a least-squares similarity maps centroid to centroid).
    img = np.zeros((512, 512, 3), np.float32)
    for x, y in FFHQ_TEMPLATE_512:
        img[round(y) - 6:round(y) + 7, round(x) - 6:round(x) + 7] = 1.0
    out = ffhq_to_arcface(img)[..., 0]
    assert out.shape == (112, 112)
    found = []
    for x, y in ARCFACE_TEMPLATE_112:
        y0, x0 = round(y) - 6, round(x) - 6
        patch = out[y0:y0 + 13, x0:x0 + 13]
        yy, xx = np.mgrid[y0:y0 + 13, x0:x0 + 13]
        found.append(((patch * xx).sum() / patch.sum(), (patch * yy).sum() / patch.sum()))
    found = np.array(found)
    assert np.all(np.linalg.norm(found - ARCFACE_TEMPLATE_112, axis=1) < 3.0)
    np.testing.assert_allclose(found.mean(0), ARCFACE_TEMPLATE_112.mean(0), atol=0.5)


class _TinyEmbedder(torch.nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 8, 5, stride=4)
        self.fc = torch.nn.Linear(8 * 27 * 27, 16)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _export(tmp_path: Path, channels: int) -> Path:
    pytest.importorskip("onnx", reason="the ArcFace test exports a filler network with the 'onnx' package (test extra)")
    pytest.importorskip("onnxruntime", reason="ArcFace runs through onnxruntime (extras test/metrics)")
    torch.manual_seed(0)  # the exporter traces the module; the weights come from this seeded init
    net = _TinyEmbedder(channels).eval()
    path = tmp_path / f"arcface_filler_{channels}.onnx"
    torch.onnx.export(net, (torch.zeros(1, channels, 112, 112),), str(path), dynamo=False, input_names=["input"],
                      output_names=["embedding"], dynamic_axes={"input": {0: "n"}, "embedding": {0: "n"}})
    return path


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("channels", [3, 1])
def test_arcface_onnx_filler_weights(tmp_path, channels):
    model = ArcFaceONNX(_export(tmp_path, channels))
    assert model.size == (112, 112) and model.channels == channels
    rng = np.random.default_rng(1)
    a, b = rng.random((256, 256, 3), dtype=np.float32), rng.random((256, 256, 3), dtype=np.float32)
    e = model.embed([a, b, a])
    assert e.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-9)
    assert cosine_similarity(e[0], e[2]) == pytest.approx(1.0, abs=1e-9)
    assert cosine_similarity(e[0], e[1]) == pytest.approx(cosine_similarity(e[1], e[0]))
    assert cosine_similarity(e[0], e[1]) < 0.9999


def test_arcface_rejects_bad_paths(tmp_path):
    pytest.importorskip("onnxruntime", reason="ArcFace runs through onnxruntime (extras test/metrics)")
    with pytest.raises(FileNotFoundError, match="ONNX"):
        ArcFaceONNX(tmp_path / "missing.onnx")


def test_dlib_descriptor_same_image_and_people():
    pytest.importorskip("dlib", reason="ids_dlib needs the optional 'dlib-bin' package (extra [metrics])")
    from difface.metrics.identity import DlibEmbedder

    try:
        emb = DlibEmbedder()
    except ImportError as e:
        pytest.skip(f"ids_dlib needs face-recognition-models (extra [metrics]): {e}")
    lfw = DATA / "lfw-150"
    if not lfw.is_dir():
        pytest.skip(f"{lfw} not found (shared data folder absent)")
    from difface.images import read_image

    a, a2, other = (read_image(lfw / n).rgb for n in ("Aaron_Peirsol_0001.jpg", "Aaron_Peirsol_0003.jpg",
                                                      "Aaron_Sorkin_0001.jpg"))
    ea, ea2, eo = emb.embed(a), emb.embed(a2), emb.embed(other)
    assert ea.shape == (128,)
    assert cosine_similarity(ea, emb.embed(a.copy())) == pytest.approx(1.0, abs=1e-9)
    assert cosine_similarity(ea, ea2) > cosine_similarity(ea, eo)


def test_landmark_distance_hand_computed():
    gt = np.zeros((5, 2))
    pred = np.array([[3, 4], [0, 0], [6, 8], [0, 0], [0, 0]], float)  # distances 5, 0, 10, 0, 0
    assert landmark_distance(pred, gt) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        landmark_distance(np.zeros((5, 2)), np.zeros((4, 2)))


def test_lmd_maps_prediction_to_gt_pixels_and_handles_no_face():
    pts = np.array([[10.0, 10.0], [20.0, 10.0], [15.0, 15.0], [11.0, 20.0], [19.0, 20.0]])

    def detect(rgb):  # a stand-in detector: the same face, drawn at the image's scale
        s = rgb.shape[1] / 32.0
        return (pts + 0.5) * s - 0.5 if rgb[0, 0, 0] == 0 else None

    small, big = np.zeros((32, 32, 3)), np.zeros((64, 64, 3))
    assert lmd(big, small, detect) == pytest.approx(0.0, abs=1e-12)
    assert lmd(small, small, detect) == 0.0
    no_face = np.ones((32, 32, 3))
    assert math.isnan(lmd(no_face, small, detect))


def test_lmd_with_project_detector_on_identical_faces():
    try:
        from difface.metrics.lmd import detector_landmarks

        detect = detector_landmarks("mtcnn")
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"the project's face detector is not available: {e}")
    from skimage import data

    face = data.astronaut()[:256, 64:320].astype(np.float32) / 255.0
    lm = detect(face)
    if lm is None:
        pytest.skip("no face found on the astronaut crop")
    assert lm.shape == (5, 2)
    assert lmd(face, face, detect) == pytest.approx(0.0, abs=1e-6)
