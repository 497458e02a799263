"""MTCNN face detector (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", IEEE SPL 2016) in plain torch.

The P-, R- and O-net weights ship in `difface/assets/mtcnn.safetensors`, converted from the
MIT-licensed facenet-pytorch 2.6.0 wheel (licence in `assets/LICENSE-mtcnn.txt`); their layout
(layer names, flattening in (W, H, C) order) follows that wheel's TF-derived port.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from difface.face.boxes import Detections, nms
from difface.weights import check_bundled

WEIGHTS_FILE = "mtcnn.safetensors"


def _flatten_whc(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, W*H*C) in the (W, H, C) order the dense layers were trained on."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, H, W) normalised -> (box offsets (B, 4, h, w), face probability (B, h, w))."""
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(1)[:, 1]


class RNet(nn.Module):
    """Refinement net on 24 x 24 patches."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, 24, 24) -> (box offsets (B, 4), face probability (B,))."""
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_whc(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), self.dense5_1(x).softmax(1)[:, 1]


class ONet(nn.Module):
    """Output net on 48 x 48 patches: box offsets, 5 landmarks and the final score."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, 3, 48, 48) -> (box offsets (B, 4), landmarks (B, 10) = 5 x then 5 y in [0, 1]
        of the patch, face probability (B,))."""
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_whc(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(1)[:, 1]


class MTCNN(nn.Module):
    """The three cascade networks; state-dict keys `pnet.*`, `rnet.*`, `onet.*`."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()


def load_mtcnn(path: str | None = None) -> MTCNN:
    """MTCNN with the shipped weights (or a safetensors file at `path`), eval mode, CPU float32."""
    from safetensors.torch import load_file

    if path is None:
        with resources.as_file(resources.files("difface") / "assets" / WEIGHTS_FILE) as p:
            check_bundled(Path(p))  # the shipped file, unchanged since installation (WeightsMismatch otherwise)
            sd = load_file(str(p))
    else:
        sd = load_file(str(path))
    model = MTCNN()
    model.load_state_dict(sd, strict=True)
    return model.eval()


def _normalise(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Pixel values in [0, 255] -> the networks' input range, (x - 127.5) / 128."""
    return (torch.as_tensor(x) - 127.5) * 0.0078125


def _square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box (N, >=4) to a square around its centre (side = the longer side)."""
    b = boxes.copy()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    side = np.maximum(w, h)
    b[:, 0] += (w - side) / 2
    b[:, 1] += (h - side) / 2
    b[:, 2], b[:, 3] = b[:, 0] + side, b[:, 1] + side
    return b


def _regress(boxes: np.ndarray, offsets: np.ndarray, plus_one: bool = True) -> np.ndarray:
    """Apply box offsets (N, 4), relative to the box width/height (+1 as in the original code)."""
    b = boxes.copy()
    extra = 1.0 if plus_one else 0.0
    wh = np.stack([b[:, 2] - b[:, 0] + extra, b[:, 3] - b[:, 1] + extra], 1)
    b[:, :4] += offsets * np.concatenate([wh, wh], 1)
    return b


def _crop_patches(img: np.ndarray, boxes: np.ndarray, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """Crop boxes out of img (H, W, 3) [0, 255], zero-padded outside, resized to size x size.

    The box convention is the original MTCNN's (1-based, inclusive): pixel columns trunc(x1) - 1
    ... trunc(x2) - 1. Returns ((K, 3, size, size) tensor, (K,) indices of the usable boxes).
    """
    h, w = img.shape[:2]
    b = np.trunc(boxes[:, :4]).astype(np.int64)
    patches, valid = [], []
    for k, (x1, y1, x2, y2) in enumerate(b):
        x0, y0 = x1 - 1, y1 - 1
        if x2 - x0 < 1 or y2 - y0 < 1 or (x2 - x0) * (y2 - y0) > 64 * h * w:
            continue
        patch = np.zeros((y2 - y0, x2 - x0, 3), np.float32)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x2, w), min(y2, h)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
        patches.append(cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA))
        valid.append(k)
    if not patches:
        return torch.zeros(0, 3, size, size), np.zeros(0, np.int64)
    return _normalise(np.stack(patches).transpose(0, 3, 1, 2)), np.asarray(valid, np.int64)


def _pyramid(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """Scales at which PNet's 12 px window sees faces of min_face px and larger."""
    scales, s = [], 12.0 / min_face
    side = min(height, width) * s
    while side >= 12:
        scales.append(s)
        s *= factor
        side *= factor
    return scales


class MTCNNDetector:
    """MTCNN cascade: PNet on an image pyramid, then RNet and ONet on cropped candidates.

    Defaults follow the original: minimum face 20 px, pyramid factor 0.709, thresholds
    (0.6, 0.7, 0.7), NMS 0.5 (per scale), 0.7, 0.7 and 0.7 ("min" overlap) at the end. Faces
    whose final score is below `score_threshold` (0.95) are dropped: on the shared test photos
    every false positive scored <= 0.94 and every true face >= 0.97 (docs/whole-photos.md).
    """

    name = "mtcnn"

    def __init__(self, device: str | torch.device = "cpu", min_face: float = 20.0, factor: float = 0.709,
                 thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7), score_threshold: float = 0.95,
                 batch: int = 512) -> None:
        self.device = torch.device(device)
        self.net = load_mtcnn().to(self.device)
        self.min_face, self.factor, self.thresholds, self.batch = min_face, factor, thresholds, batch
        self.score_threshold = score_threshold

    def _run(self, net: nn.Module, patches: torch.Tensor) -> list[np.ndarray]:
        outs = [net(patches[i:i + self.batch].to(self.device)) for i in range(0, len(patches), self.batch)]
        return [torch.cat(parts).float().cpu().numpy() for parts in zip(*outs)]

    def _stage1(self, img: torch.Tensor) -> np.ndarray:
        """Candidate boxes (K, 9): x1, y1, x2, y2, score, 4 offsets (1-based MTCNN convention)."""
        h, w = img.shape[-2:]
        found = []
        for s in _pyramid(h, w, self.min_face, self.factor):
            x = F.interpolate(img, size=(int(h * s + 1), int(w * s + 1)), mode="area")
            reg, prob = self.net.pnet(_normalise(x))
            prob, reg = prob[0].cpu().numpy(), reg[0].cpu().numpy()
            ys, xs = np.nonzero(prob >= self.thresholds[0])
            if len(ys) == 0:
                continue
            cells = np.stack([xs, ys], 1).astype(np.float64)
            q1, q2 = np.floor((2 * cells + 1) / s), np.floor((2 * cells + 12) / s)
            cand = np.concatenate([q1, q2, prob[ys, xs][:, None], reg[:, ys, xs].T], 1)
            found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 9))
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        return _square(_regress(cand[:, :5], cand[:, 5:9], plus_one=False))

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray) -> Detections:
        """Faces in rgb (H, W, 3) float32 in [0, 1]; landmarks from ONet, scores = ONet probability."""
        img = np.ascontiguousarray(rgb, np.float32) * 255.0
        t = torch.from_numpy(img).permute(2, 0, 1)[None].to(self.device)
        boxes = self._stage1(t)
        if len(boxes):
            patches, valid = _crop_patches(img, boxes, 24)
            reg, prob = self._run(self.net.rnet, patches)
            ok = prob > self.thresholds[1]
            boxes = np.concatenate([boxes[valid][ok, :4], prob[ok, None]], 1)
            keep = nms(boxes[:, :4], boxes[:, 4], 0.7)
            boxes = _square(_regress(boxes[keep], reg[ok][keep]))
        if not len(boxes):
            return Detections()
        patches, valid = _crop_patches(img, boxes, 48)
        reg, lm, prob = self._run(self.net.onet, patches)
        ok = prob > self.thresholds[2]
        boxes = np.concatenate([boxes[valid][ok, :4], prob[ok, None]], 1)
        size = boxes[:, 2:4] - boxes[:, 0:2] + 1
        lm = lm[ok].reshape(-1, 2, 5).transpose(0, 2, 1) * size[:, None] + boxes[:, None, 0:2] - 1
        boxes = _regress(boxes, reg[ok])
        keep = nms(boxes[:, :4], boxes[:, 4], 0.7, mode="min")
        keep = keep[boxes[keep, 4] >= self.score_threshold]
        # Report boxes in the same 0-based frame as the landmarks.
        return Detections(boxes[keep, :4] - 1, boxes[keep, 4], lm[keep]).sorted()
