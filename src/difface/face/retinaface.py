"""RetinaFace (Deng et al., "RetinaFace: Single-shot Multi-level Face Localisation in the Wild",
CVPR 2020) with ResNet-50 or MobileNet-0.25 backbones.

Module names reproduce the biubug6/facexlib layout so that the facexlib checkpoints
detection_Resnet50_Final.pth and detection_mobilenet0.25_Final.pth load strictly (after the DDP
`module.` prefix is stripped): `body.*` (backbone up to its last used stage), `fpn.*`,
`ssh1..3.*`, `ClassHead/BboxHead/LandmarkHead.{0,1,2}.conv1x1`. No torchvision.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from difface.face.boxes import Detections, nms
from difface.weights import load_weights

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)


def conv_bn(cin: int, cout: int, stride: int = 1, leaky: float | None = 0.0, k: int = 3) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ LeakyReLU(leaky) unless leaky is None); keys `0.*`, `1.*`."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]
    if leaky is not None:
        layers.append(nn.LeakyReLU(leaky))
    return nn.Sequential(*layers)


def conv_dw(cin: int, cout: int, stride: int, leaky: float = 0.1) -> nn.Sequential:
    """Depthwise 3x3 + BN + act, pointwise 1x1 + BN + act (keys 0, 1, 3, 4)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.LeakyReLU(leaky),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(leaky),
    )


class MobileNetV1(nn.Module):
    """MobileNet-0.25 backbone; returns the stage1/2/3 features (64, 128, 256 ch; strides 8/16/32)."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(
            conv_bn(3, 8, 2, leaky=0.1), conv_dw(8, 16, 1), conv_dw(16, 32, 2), conv_dw(32, 32, 1),
            conv_dw(32, 64, 2), conv_dw(64, 64, 1),
        )
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return [c1, c2, self.stage3(c2)]


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), expansion 4."""

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    """ResNet-50 trunk without avgpool/fc; returns layer2/3/4 (512, 1024, 2048 ch; strides 8/16/32)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        cin, layers = 64, []
        for width, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = [Bottleneck(cin, width, stride)] + [Bottleneck(width * 4, width) for _ in range(blocks - 1)]
            layers.append(nn.Sequential(*stage))
            cin = width * 4
        self.layer1, self.layer2, self.layer3, self.layer4 = layers

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        return [c2, c3, self.layer4(c3)]


class FPN(nn.Module):
    """Feature pyramid: 1x1 lateral convs, nearest top-down merge, 3x3 merge convs."""

    def __init__(self, in_channels: tuple[int, int, int], out: int) -> None:
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.output1, self.output2, self.output3 = (conv_bn(c, out, 1, leaky, k=1) for c in in_channels)
        self.merge1, self.merge2 = conv_bn(out, out, 1, leaky), conv_bn(out, out, 1, leaky)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[-2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[-2:], mode="nearest"))
        return [o1, o2, o3]


class SSH(nn.Module):
    """Context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches concatenated, then ReLU."""

    def __init__(self, cin: int, out: int) -> None:
        super().__init__()
        leaky = 0.1 if out <= 64 else 0.0
        self.conv3X3 = conv_bn(cin, out // 2, 1, None)
        self.conv5X5_1 = conv_bn(cin, out // 4, 1, leaky)
        self.conv5X5_2 = conv_bn(out // 4, out // 4, 1, None)
        self.conv7X7_2 = conv_bn(out // 4, out // 4, 1, leaky)
        self.conv7x7_3 = conv_bn(out // 4, out // 4, 1, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), c7], 1))


class _Head(nn.Module):
    def __init__(self, cin: int, per_anchor: int, anchors: int = 2) -> None:
        super().__init__()
        self.per_anchor = per_anchor
        self.conv1x1 = nn.Conv2d(cin, anchors * per_anchor, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, H*W*anchors, per_anchor), ordered row, column, anchor."""
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.per_anchor)


class RetinaFace(nn.Module):
    """RetinaFace network; `backbone` is "resnet50" or "mobile0.25".

    forward(x) with x (B, 3, H, W) BGR in [0, 255] minus BGR_MEAN returns (box offsets (B, P, 4),
    face probability (B, P), landmark offsets (B, P, 10)) for the P = `priors(H, W)` anchors.
    """

    def __init__(self, backbone: str = "resnet50") -> None:
        super().__init__()
        if backbone == "resnet50":
            self.body: nn.Module = ResNet50()
            chans, out = (512, 1024, 2048), 256
        elif backbone == "mobile0.25":
            self.body = MobileNetV1()
            chans, out = (64, 128, 256), 64
        else:
            raise ValueError(f"unknown RetinaFace backbone {backbone!r} (resnet50 or mobile0.25)")
        self.fpn = FPN(chans, out)
        self.ssh1, self.ssh2, self.ssh3 = SSH(out, out), SSH(out, out), SSH(out, out)
        self.ClassHead = nn.ModuleList(_Head(out, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(out, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(out, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.fpn(self.body(x))
        feats = [self.ssh1(p[0]), self.ssh2(p[1]), self.ssh3(p[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], 1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], 1).softmax(-1)[..., 1]
        landm = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], 1)
        return loc, conf, landm


def priors(height: int, width: int) -> np.ndarray:
    """Anchors (P, 4) as (cx, cy, w, h) in pixels, ordered level, row, column, anchor size."""
    out = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * step, (np.arange(fw) + 0.5) * step, indexing="ij")
        for_sizes = [np.stack([cx, cy, np.full_like(cx, s), np.full_like(cx, s)], -1) for s in sizes]
        out.append(np.stack(for_sizes, 2).reshape(-1, 4))
    return np.concatenate(out).astype(np.float64)


def decode(loc: np.ndarray, landm: np.ndarray, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SSD-style decoding with variances (0.1, 0.2): boxes (P, 4) x1y1x2y2, landmarks (P, 5, 2)."""
    c = anchors[:, :2] + loc[:, :2] * VARIANCE[0] * anchors[:, 2:]
    wh = anchors[:, 2:] * np.exp(loc[:, 2:] * VARIANCE[1])
    boxes = np.concatenate([c - wh / 2, c + wh / 2], 1)
    lm = anchors[:, None, :2] + landm.reshape(-1, 5, 2) * VARIANCE[0] * anchors[:, None, 2:]
    return boxes, lm


def load_retinaface(backbone: str, weights: str | os.PathLike) -> RetinaFace:
    """RetinaFace with a facexlib checkpoint loaded strictly (`module.` prefix stripped), eval mode."""
    return load_weights(RetinaFace(backbone), weights).eval()


class RetinaFaceDetector:
    """RetinaFace detector at the image's own size (facexlib's use_origin_size=True).

    Defaults follow the official face helper: score threshold 0.8, NMS IoU 0.4.
    """

    def __init__(self, backbone: str, weights: str | os.PathLike | RetinaFace, device: str = "cpu",
                 conf_threshold: float = 0.8, nms_threshold: float = 0.4) -> None:
        self.name = f"retinaface_{backbone}"
        self.device = torch.device(device)
        net = weights if isinstance(weights, RetinaFace) else load_retinaface(backbone, weights)
        self.net = net.to(self.device).eval()
        self.conf_threshold, self.nms_threshold = conf_threshold, nms_threshold

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray) -> Detections:
        """Faces in rgb (H, W, 3) float32 in [0, 1]."""
        h, w = rgb.shape[:2]
        bgr = np.ascontiguousarray(rgb[:, :, ::-1], np.float32) * 255.0 - np.array(BGR_MEAN, np.float32)
        x = torch.from_numpy(bgr.transpose(2, 0, 1).copy())[None].to(self.device)
        loc, conf, landm = (t[0].float().cpu().numpy().astype(np.float64) for t in self.net(x))
        ok = conf > self.conf_threshold
        boxes, lms = decode(loc[ok], landm[ok], priors(h, w)[ok])
        keep = nms(boxes, conf[ok], self.nms_threshold)
        return Detections(boxes[keep], conf[ok][keep], lms[keep])
