"""RetinaFace: facexlib checkpoint layout, strict loading, anchors, decoding, end-to-end run."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from difface.face.detect import get_detector
from difface.face.retinaface import RetinaFace, decode, priors
from difface.models import fill_deterministic

BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _conv_bn_keys(prefix: str, conv_idx: int = 0, bn_idx: int = 1) -> list[str]:
    return [f"{prefix}.{conv_idx}.weight"] + [f"{prefix}.{bn_idx}.{b}" for b in BN]


def _expected_keys(backbone: str) -> set[str]:
    """The facexlib/biubug6 state-dict keys, written out from the published layout."""
    keys: list[str] = []
    if backbone == "resnet50":
        keys += ["body.conv1.weight"] + [f"body.bn1.{b}" for b in BN]
        for layer, blocks in zip((1, 2, 3, 4), (3, 4, 6, 3)):
            for i in range(blocks):
                p = f"body.layer{layer}.{i}"
                for j in (1, 2, 3):
                    keys += [f"{p}.conv{j}.weight"] + [f"{p}.bn{j}.{b}" for b in BN]
                if i == 0:
                    keys += _conv_bn_keys(f"{p}.downsample")
    else:
        stages = {1: 6, 2: 6, 3: 2}
        for s, n in stages.items():
            for i in range(n):
                p = f"body.stage{s}.{i}"
                keys += _conv_bn_keys(p) if (s, i) == (1, 0) else _conv_bn_keys(p) + _conv_bn_keys(p, 3, 4)
    for name in ("output1", "output2", "output3", "merge1", "merge2"):
        keys += _conv_bn_keys(f"fpn.{name}")
    for s in (1, 2, 3):
        for name in ("conv3X3", "conv5X5_1", "conv5X5_2", "conv7X7_2", "conv7x7_3"):
            keys += _conv_bn_keys(f"ssh{s}.{name}")
    for head in ("ClassHead", "BboxHead", "LandmarkHead"):
        for i in range(3):
            keys += [f"{head}.{i}.conv1x1.weight", f"{head}.{i}.conv1x1.bias"]
    return set(keys)


@pytest.mark.parametrize("backbone,count,params", [("resnet50", 456, 27_293_600), ("mobile0.25", 300, 426_608)])
def test_state_dict_layout(backbone, count, params):
    net = RetinaFace(backbone)
    sd = net.state_dict()
    assert set(sd) == _expected_keys(backbone)
    assert len(sd) == count  # 300 for mobile0.25 is also the count other ports report
    # 4 x params ~ the released files (R50 ~104 MiB, mobile0.25 ~1.7 MB)
    assert sum(p.numel() for p in net.parameters()) == params


def test_spot_shapes():
    mob = RetinaFace("mobile0.25").state_dict()
    assert tuple(mob["body.stage1.1.0.weight"].shape) == (8, 1, 3, 3)  # depthwise
    assert tuple(mob["ssh1.conv5X5_1.0.weight"].shape) == (16, 64, 3, 3)
    assert tuple(mob["LandmarkHead.0.conv1x1.weight"].shape) == (20, 64, 1, 1)
    r50 = RetinaFace("resnet50").state_dict()
    assert tuple(r50["fpn.output3.0.weight"].shape) == (256, 2048, 1, 1)
    assert tuple(r50["body.layer2.0.conv2.weight"].shape) == (128, 128, 3, 3)
    assert tuple(r50["ClassHead.2.conv1x1.weight"].shape) == (4, 256, 1, 1)


@pytest.mark.parametrize("backbone", ["mobile0.25", "resnet50"])
def test_checkpoint_with_module_prefix_loads_strictly_and_runs(tmp_path, backbone):
    src = fill_deterministic(RetinaFace(backbone))
    ckpt = {f"module.{k}": v for k, v in src.state_dict().items()}  # as saved under DataParallel
    path = tmp_path / "retina.pth"
    torch.save(ckpt, path)
    name = "retinaface_resnet50" if backbone == "resnet50" else "retinaface_mobile0.25"
    det = get_detector(name, weights=path)
    for k, v in det.net.state_dict().items():
        assert torch.equal(v, src.state_dict()[k]), k
    det.conf_threshold = 0.0  # filler weights: keep everything to exercise decoding and NMS
    img = np.random.default_rng(0).random((70, 90, 3)).astype(np.float32)
    dets = det.detect(img)
    assert len(dets) > 0 and dets.landmarks.shape[1:] == (5, 2)
    assert np.isfinite(dets.boxes).all() and (np.diff(dets.scores) <= 0).all()


def test_wrong_checkpoint_is_refused(tmp_path):
    sd = RetinaFace("mobile0.25").state_dict()
    sd.pop("ssh1.conv3X3.0.weight")
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(Exception, match="ssh1.conv3X3.0.weight"):
        get_detector("retinaface_mobile0.25", weights=path)


def test_priors_order_and_count():
    h, w = 70, 90
    p = priors(h, w)
    n = sum(math.ceil(h / s) * math.ceil(w / s) * 2 for s in (8, 16, 32))
    assert p.shape == (n, 4)
    # first level, row 0: (col 0, size 16), (col 0, size 32), (col 1, size 16)
    np.testing.assert_allclose(p[:3], [[4, 4, 16, 16], [4, 4, 32, 32], [12, 4, 16, 16]])
    # first anchor of level 2 (stride 16, sizes 64/128) sits after all of level 1
    first2 = math.ceil(h / 8) * math.ceil(w / 8) * 2
    np.testing.assert_allclose(p[first2], [8, 8, 64, 64])
    net = RetinaFace("mobile0.25").eval()
    with torch.no_grad():
        loc, conf, landm = net(torch.zeros(1, 3, h, w))
    assert loc.shape == (1, n, 4) and conf.shape == (1, n) and landm.shape == (1, n, 10)


def test_decode_hand_values():
    anchors = np.array([[100.0, 50.0, 20.0, 20.0]])
    loc = np.array([[1.0, -1.0, 0.0, math.log(2) / 0.2]])
    landm = np.arange(10, dtype=np.float64)[None] / 10
    boxes, lms = decode(loc, landm, anchors)
    # centre (100 + 0.1*20, 50 - 0.1*20) = (102, 48); size (20, 40)
    np.testing.assert_allclose(boxes, [[92, 28, 112, 68]])
    np.testing.assert_allclose(lms[0, 1], [100 + 0.2 * 0.1 * 20, 50 + 0.3 * 0.1 * 20])
