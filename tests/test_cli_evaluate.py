"""`difface evaluate`: pairing, table, JSON/CSV rows, skipped metrics, checked against scikit-image."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from difface.cli import main
from difface.metrics.runner import pair_files, pair_key

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """gt/000K.png: astronaut crops; pred/restored_000K.png: noisy copies (uint8 arrays kept for references)."""
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "cache"))  # no LPIPS/FID weights anywhere
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    rng = np.random.default_rng(0)
    astro = data.astronaut()
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    arrays = {}
    for k, (y, x) in enumerate([(0, 0), (100, 200), (300, 50)]):
        gt = astro[y:y + 200, x:x + 112]  # two 96x96 NIQE blocks
        pred = np.clip(gt + rng.normal(0, 10, gt.shape), 0, 255).round().astype(np.uint8)
        cv2.imwrite(str(tmp_path / "gt" / f"000{k}.png"), gt[..., ::-1])
        cv2.imwrite(str(tmp_path / "pred" / f"restored_000{k}.png"), pred[..., ::-1])
        arrays[f"000{k}"] = (pred, gt)
    (tmp_path / "pred" / "restored_0009.png").write_bytes((tmp_path / "pred" / "restored_0000.png").read_bytes())
    return tmp_path, arrays


def test_pair_key_rules():
    assert pair_key("ffhq_00001", None) == "ffhq_00001"
    assert pair_key("ffhq_00001", r"(\d+)$") == "00001"
    assert pair_key("00001", r"(?:ffhq_)?(\d+)") == "00001"
    assert pair_key("abc", r"(\d+)$") is None


def test_evaluate_cli_scores_files_and_rows(folders, capsys):
    root, arrays = folders
    rc = main(["evaluate", "--pred", str(root / "pred"), "--gt", str(root / "gt"), "--pair-regex", r"(\d+)$",
               "--metrics", "psnr,ssim_y,niqe,lpips,fid", "--json", str(root / "out.json"),
               "--csv", str(root / "out.csv"), "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "skipped lpips: needs alexnet-owt-7be5be79.pth" in out and "--alexnet" in out
    assert "skipped fid: needs pt_inception-2015-12-05-6726825d.pth" in out
    doc = json.loads((root / "out.json").read_text())
    names = [r["name"] for r in doc["images"]]
    assert names == ["0000", "0001", "0002"]  # restored_0009 has no ground truth
    ref_psnr = [peak_signal_noise_ratio(g, p, data_range=255) for p, g in arrays.values()]
    ref_ssim = [structural_similarity(rgb2ycbcr(g)[..., 0], rgb2ycbcr(p)[..., 0], gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=False, data_range=255) for p, g in arrays.values()]
    np.testing.assert_allclose([r["psnr"] for r in doc["images"]], ref_psnr, atol=1e-9)
    np.testing.assert_allclose([r["ssim_y"] for r in doc["images"]], ref_ssim, atol=1e-7)
    assert doc["means"]["psnr"] == pytest.approx(np.mean(ref_psnr), abs=1e-9)
    assert f"{np.mean(ref_psnr):.4f}" in out
    with open(root / "out.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == names and set(rows[0]) == {"name", "pred", "gt", "psnr", "ssim_y", "niqe"}
    assert float(rows[1]["psnr"]) == pytest.approx(ref_psnr[1], rel=1e-5)


def test_evaluate_cli_without_gt_runs_no_reference_metrics(folders, capsys):
    root, _ = folders
    rc = main(["evaluate", "--pred", str(root / "pred"), "--metrics", "niqe,psnr", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "skipped psnr: needs ground truth" in out and "niqe" in out


def test_evaluate_cli_errors(folders, capsys):
    root, _ = folders
    assert main(["evaluate", "--pred", str(root / "pred"), "--metrics", "psnr,bogus"]) == 2
    assert main(["evaluate", "--pred", str(root / "nowhere"), "--metrics", "niqe"]) == 2
    assert main(["evaluate", "--pred", str(root / "pred"), "--gt", str(root / "gt"), "--metrics", "psnr"]) == 1


def test_ffhq_gpen_pairs_psnr_y():
    root = DATA / "real-world" / "ffhq-pairs-gpen"
    if not root.is_dir():
        pytest.skip(f"{root} not found (shared data folder absent)")
    pairs, warnings = pair_files(root / "lq", root / "hq", r"(\d+)$")
    assert [p.key for p in pairs] == ["00000", "00001", "00002", "00003"]
    assert len(warnings) == 1 and warnings[0].startswith("6 ground truth(s)")  # hq has 10 faces, lq 4
    from difface.metrics.psnr_ssim import psnr

    p = pairs[0]
    pred, gt = (cv2.imread(str(f))[..., ::-1] for f in (p.pred, p.gt))
    ref = peak_signal_noise_ratio(rgb2ycbcr(gt)[..., 0], rgb2ycbcr(pred)[..., 0], data_range=255)
    assert psnr(pred / 255.0, gt / 255.0, y_channel=True) == pytest.approx(ref, abs=1e-9)


def _filler(module, seed: int):
    import math

    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.ndim > 1:
                p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2.0 / p[0].numel()))
    return module


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.slow  # 4-6 s: with the slow checks (the default run stays under 4 minutes)
def test_evaluate_cli_with_filler_weights(folders, capsys):
    """LPIPS, FID and ArcFace through the CLI on their real code, weights given as files."""
    import torch

    from difface.metrics.fid import FIDInceptionV3
    from difface.metrics.lpips import LPIPS

    pytest.importorskip("onnx", reason="the filler ArcFace network is exported with 'onnx' (test extra)")
    pytest.importorskip("onnxruntime", reason="ArcFace runs through onnxruntime (extras test/metrics)")
    root, _ = folders
    alex = {k.removeprefix("net."): v for k, v in _filler(LPIPS("alex"), 0).state_dict().items()
            if k.startswith("net.")}
    torch.save(alex, root / "alexnet.pth")
    torch.save(_filler(FIDInceptionV3(), 1).state_dict(), root / "inception.pth")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.Flatten(), torch.nn.Linear(4 * 14 * 14, 8))
    torch.onnx.export(net.eval(), (torch.zeros(1, 3, 112, 112),), str(root / "arc.onnx"), dynamo=False,
                      input_names=["x"], output_names=["e"], dynamic_axes={"x": {0: "n"}, "e": {0: "n"}})
    common = ["--metrics", "lpips,fid,ids,deg", "--alexnet", str(root / "alexnet.pth"), "--inception",
              str(root / "inception.pth"), "--arcface", str(root / "arc.onnx"), "--no-progress"]
    # Identical folders: zero distances, unit similarity.
    assert main(["evaluate", "--pred", str(root / "gt"), "--gt", str(root / "gt"), "--json", str(root / "same.json"),
                 *common]) == 0
    same = json.loads((root / "same.json").read_text())["means"]
    assert abs(same["lpips"]) < 1e-6 and abs(same["fid"]) < 1e-6 * 2048
    assert same["ids"] == pytest.approx(1.0, abs=1e-9) and same["deg"] == pytest.approx(0.0, abs=1e-3)
    # Restored vs ground truth, FID against statistics computed once from --ref-dir and cached.
    stats = root / "ref_stats.npz"
    assert main(["evaluate", "--pred", str(root / "pred"), "--gt", str(root / "gt"), "--pair-regex", r"(\d+)$",
                 "--ref-dir", str(root / "gt"), "--ref-stats", str(stats), "--json", str(root / "diff.json"),
                 *common]) == 0
    diff = json.loads((root / "diff.json").read_text())
    assert diff["skipped"] == {} and diff["means"]["lpips"] > 1e-4 and diff["means"]["fid"] > 0
    assert 0 < diff["means"]["deg"] < 180 and diff["means"]["ids"] < 1
    with np.load(stats) as z:
        assert z["mu"].shape == (2048,) and z["sigma"].shape == (2048, 2048)
