"""Inpainter training: weighted L1, BatchNorm statistics, configs, validation, resume, torchrun."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from _train_utils import single_thread, write_images
from difface.cli import main
from difface.models import CONFIGS, FFCResNetGenerator, LamaConfig, build_from_config
from difface.train.batchnorm import GlobalBatchNormStats
from difface.train.checkpoint import load_checkpoint
from difface.train.config import DEFAULTS, dump_config, from_dict, load_config
from difface.train.run import build_dataset, build_model
from difface.train.samples import make_inpainter_sample_fn, masked_psnr
from difface.train.steps import make_inpainter_step, weighted_pixel_loss

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"
TINY_LAMA = {"ngf": 8, "n_blocks": 1}

_one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)


def tiny_inpainter(folder: Path, **over) -> dict:
    d = {
        "model": {"lama": dict(TINY_LAMA)},
        "data": {"folder": str(folder), "size": 32, "num_workers": 0, "flip": True},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "batch_size": 8, "micro_batch": 4, "ema_rate": 0.9,
                  "schedule": "constant"},
        "max_steps": 2, "log_every": 1, "sample_every": 0, "checkpoint_every": 0, "seed": 321,
    }
    for key, value in over.items():
        if isinstance(value, dict):
            d.setdefault(key, {}).update(value)
        else:
            d[key] = value
    return d


# --------------------------------------------------------------------------- loss


def _example():
    pred = torch.zeros(2, 3, 2, 2)
    pred[:, :, 0, 0] = torch.tensor([0.1, 0.2, 0.3])
    pred[:, 0, 0, 1] = 0.5
    pred[:, :, 1, 1] = 0.1
    gt = torch.zeros(2, 3, 2, 2)
    mask = torch.zeros(2, 1, 2, 2)
    mask[0, 0, 0, 0] = 1  # sample 0: the top-left pixel is missing; sample 1: nothing missing
    return pred, gt, mask


def test_weighted_l1_equals_hand_computation():
    pred, gt, mask = _example()
    # sample 0: w = [[10, 1], [1, 1]], sum 13; sum(w e) = 10 (0.1 + 0.2 + 0.3) + 0.5 + 0 + 0.3 = 6.8
    # sample 1: w = 1 everywhere, sum 4; sum(e) = 0.6 + 0.5 + 0.3 = 1.4
    torch.testing.assert_close(weighted_pixel_loss(pred, gt, mask), torch.tensor([6.8 / 13, 1.4 / 4]))
    # l2: sample 0: 10 (0.01 + 0.04 + 0.09) + 0.25 + 0.03 = 1.68; sample 1: 0.14 + 0.25 + 0.03 = 0.42
    torch.testing.assert_close(weighted_pixel_loss(pred, gt, mask, loss="l2"), torch.tensor([1.68 / 13, 0.42 / 4]))
    torch.testing.assert_close(weighted_pixel_loss(pred, gt, mask, hole_weight=1.0), torch.tensor([1.4 / 4] * 2))


class _Fixed(nn.Module):
    """Returns a fixed prediction and records what it was given."""

    def __init__(self, pred: torch.Tensor) -> None:
        super().__init__()
        self.pred, self.p = pred, nn.Parameter(torch.zeros(()))

    def forward(self, x):
        self.seen = x
        return self.pred[: len(x)] + self.p


def test_step_feeds_cat_lq_mask_and_sums_per_sample_losses():
    pred, gt, mask = _example()
    lq = torch.rand(2, 3, 2, 2) * (1 - mask)
    model = _Fixed(pred)
    out = make_inpainter_step()(model, {"lq": lq, "gt": gt, "mask": mask, "slot": torch.arange(2)}, 1)
    assert torch.equal(model.seen, torch.cat([lq, mask], 1))
    assert out.loss.item() == pytest.approx(6.8 / 13 + 1.4 / 4, rel=1e-6)
    assert out.metrics["l1_hole"].item() == pytest.approx(0.2, rel=1e-6)  # sample 0 only; sample 1 has no hole


def test_step_gradient_is_the_weighted_sign():
    # d loss / d pred = w sign(pred - gt) / sum(w): checked on the fixed prediction's shared offset p
    pred, gt, mask = _example()
    model = _Fixed(pred)
    out = make_inpainter_step()(model, {"lq": gt, "gt": gt, "mask": mask, "slot": torch.arange(2)}, 1)
    out.loss.backward()
    # values with pred > gt give +w, those with pred == gt give 0 (|.|' = 0 at 0):
    # sample 0: (10 * 3 + 1 * 1 + 1 * 3) / 13 = 34 / 13; sample 1: (3 + 1 + 3) / 4 = 7 / 4
    assert model.p.grad.item() == pytest.approx(34 / 13 + 7 / 4, rel=1e-6)


# --------------------------------------------------------------------------- BatchNorm statistics


def test_running_statistics_follow_the_global_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6))
    reference = copy.deepcopy(model).train()
    model.train()
    keeper = GlobalBatchNormStats(model)
    bn = model[1]
    x = [torch.randn(8, 4, 10, 10) * 3 + 1 for _ in range(2)]
    for batch in x:  # two optimizer steps, each in micro-batches of 3 + 3 + 2
        for s in (0, 3, 6):
            model(batch[s:s + 3])
        keeper.step()
        reference(batch)  # PyTorch's BatchNorm seeing the whole batch at once
    torch.testing.assert_close(bn.running_mean, reference[1].running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, reference[1].running_var, rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked) == int(reference[1].num_batches_tracked) == 2
    assert bn.momentum == 0.0
    keeper.remove()
    assert bn.momentum == 0.1
    before = bn.running_mean.clone()
    model(x[0])  # back to PyTorch's own update
    assert not torch.equal(bn.running_mean, before) and int(bn.num_batches_tracked) == 3


def test_ema_batchnorm_statistics_are_recomputed_for_the_averaged_weights(tmp_path):
    import torch.nn.functional as F

    from difface.distributed import DistInfo
    from difface.train.loop import build_state, calibrate_ema_batchnorm
    from difface.train.run import build_step

    folder = write_images(tmp_path / "imgs", 8)
    cfg = from_dict(tiny_inpainter(folder, optim={"micro_batch": None}))
    ds = build_dataset(cfg)
    state = build_state(build_model(cfg), cfg, DistInfo(0, 1, 0, torch.device("cpu")))
    shadow = state.ema.shadow
    with torch.no_grad():
        for p in shadow.parameters():  # averaged weights that differ from the live ones
            p.mul_(0.9)
    bn = shadow.model[1].bn_l
    bn.num_batches_tracked.fill_(7)
    assert calibrate_ema_batchnorm(state, build_step(cfg), ds, cfg, samples=8)
    # the first BatchNorm sees conv(reflect_pad(cat(lq, mask))) of the 8 samples of epoch 0 (one chunk of 8)
    order = np.random.default_rng([cfg.seed, 0]).permutation(8)
    x = torch.stack([torch.cat([ds.item(int(i), 0)["lq"], ds.item(int(i), 0)["mask"]]) for i in order])
    y = F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), shadow.model[1].ffc.convl2l.weight)
    torch.testing.assert_close(bn.running_mean, y.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(bn.running_var, y.var(dim=(0, 2, 3)), rtol=1e-4, atol=1e-6)
    assert int(bn.num_batches_tracked) == 7 and bn.momentum == 0.1 and not shadow.training
    live = state.model.model[1].bn_l
    assert not torch.equal(live.running_mean, bn.running_mean)  # the live network is untouched
    state.bn_stats.remove()


def test_eval_forwards_do_not_count():
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2)).train()
    keeper = GlobalBatchNormStats(model)
    model.eval()
    model(torch.randn(2, 3, 4, 4))
    keeper.step()
    assert int(model[1].num_batches_tracked) == 0 and torch.equal(model[1].running_mean, torch.zeros(2))
    assert not GlobalBatchNormStats(nn.Linear(2, 2))  # nothing to keep: the loop skips it


# --------------------------------------------------------------------------- configs


def test_official_default_and_yaml_hold_spec_5_4():
    for cfg in (DEFAULTS["inpainter"], load_config(CONFIG_DIR / "inpainter_lama256.yaml", "inpainter")):
        assert cfg.task == "inpainter" and cfg.model == CONFIGS["lama_inpainting256"] and cfg.image_size == 256
        o = cfg.optim
        assert (o.lr, o.weight_decay, o.schedule, o.eta_min, o.cosine_steps, o.batch_size, o.micro_batch,
                o.ema_rate) == (1e-4, 0.0, "cosine", 5e-6, 500_000, 64, 16, 0.999)
        assert (cfg.max_steps, cfg.loss, cfg.masks.kind, cfg.masks.hole_weight) == (500_000, "l1", "mixed", 10.0)
    assert load_config(CONFIG_DIR / "inpainter_lama256.yaml") == load_config(CONFIG_DIR / "inpainter_lama256.yaml",
                                                                              "inpainter")  # task from the model


def test_tiny64_config_builds_a_small_lama():
    cfg = load_config(CONFIG_DIR / "inpainter_tiny64.yaml", "inpainter")
    assert cfg.image_size == 64 and isinstance(cfg.model, LamaConfig)
    n = sum(p.numel() for p in build_from_config(cfg.model).parameters())
    assert 2e6 < n < 3e6
    assert cfg.optim.batch_size == 16


def test_config_errors_and_old_configs_unchanged(tmp_path):
    from difface.train.config import ConfigError

    with pytest.raises(ConfigError, match="needs a lama"):
        from_dict({"model": {"unet": {}}}, "inpainter")
    with pytest.raises(ConfigError, match="masks.kind"):
        from_dict({"masks": {"kind": "blobs"}}, "inpainter")
    with pytest.raises(ConfigError, match="not a multiple of 8"):
        from_dict({"data": {"size": 60}}, "inpainter")
    with pytest.raises(ConfigError, match="model.lama.n_blcks"):
        from_dict({"model": {"lama": {"n_blcks": 2}}})
    # prior / estimator configs do not grow a `masks` section (old checkpoints stay resumable)
    assert "masks" not in from_dict({}, "prior").to_dict() and "masks" not in from_dict({}, "estimator").to_dict()
    cfg = from_dict(tiny_inpainter(tmp_path, masks={"hole_weight": 4.0}))
    assert cfg.task == "inpainter" and from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


# --------------------------------------------------------------------------- validation


class _Gray(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        assert x.shape[1] == 4
        return torch.full((len(x), 3, *x.shape[2:]), 0.5) + self.p


def test_validation_metrics_by_hand(tmp_path):
    gt = torch.full((3, 3, 8, 8), 0.25)
    mask = torch.zeros(3, 1, 8, 8)
    mask[..., :4] = 1  # left half missing
    metrics = make_inpainter_sample_fn(gt, mask)(_Gray(), 7, tmp_path)
    # 8-bit grid: 0.25 -> 64 (63.75 rounded), 0.5 -> 128 (127.5, half to even); error 64 per channel
    assert metrics["psnr_hole"] == pytest.approx(10 * math.log10(255**2 / 64**2), abs=1e-4)
    assert metrics["psnr_raw"] == pytest.approx(10 * math.log10(255**2 / 64**2), abs=1e-4)
    assert metrics["psnr"] == pytest.approx(10 * math.log10(255**2 / (64**2 / 2)), abs=1e-4)  # known half exact
    assert metrics["l1_hole"] == pytest.approx(0.25)
    assert metrics["loss"] == pytest.approx(0.75)  # 3 channels x 0.25, weights cancel
    assert (tmp_path / "samples" / "step_00000007_val.png").is_file()
    assert torch.isnan(masked_psnr(gt[:1], gt[:1], torch.zeros(1, 1, 8, 8))).all()


# --------------------------------------------------------------------------- resume and torchrun


def _train(*args) -> int:
    return main(["train", "inpainter", *map(str, args), "--device", "cpu"])


@pytest.mark.slow  # 4-6 s: with the slow checks (the default run stays under 4 minutes)
def test_resume_continues_exactly(tmp_path):
    folder = write_images(tmp_path / "imgs", 12)
    cfg = from_dict(tiny_inpainter(folder, max_steps=4, checkpoint_every=2,
                                   data={"val_hq": str(folder), "val_count": 4}, sample_every=2))
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(dump_config(cfg))
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train("--config", cfg_file, "--out", straight) == 0
    assert _train("--config", cfg_file, "--out", split, "--max-steps", 2) == 0
    assert _train("--resume", split, "--max-steps", 4) == 0
    a = load_checkpoint(straight / "checkpoints" / "step_00000004.pt")
    b = load_checkpoint(split / "checkpoints" / "step_00000004.pt")
    for part in ("model", "ema"):  # weights and BatchNorm statistics, bit-identical
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), f"{part}.{k}"
    for k, sa in a["optimizer"]["state"].items():
        assert all(torch.equal(sa[n], b["optimizer"]["state"][k][n]) for n in ("step", "exp_avg", "exp_avg_sq"))
    assert int(a["model"]["model.1.bn_l.num_batches_tracked"]) == 4
    timing = ("steps_per_s", "samples_per_s")
    rows = [[{k: v for k, v in json.loads(s).items() if k not in timing}
             for s in (run / "train.jsonl").read_text().splitlines()] for run in (straight, split)]
    assert rows[0] == rows[1] and [r["step"] for r in rows[0]] == [1, 2, 3, 4]
    val = [[json.loads(s) for s in (run / "val.jsonl").read_text().splitlines()] for run in (straight, split)]
    assert val[0] == val[1] and [r["step"] for r in val[0]] == [2, 4]
    from difface.weights import load_network

    net = load_network(split / "inpainter.safetensors")
    assert isinstance(net, FFCResNetGenerator) and net.config == cfg.model
    for k, v in net.state_dict().items():
        assert torch.equal(v, b["ema"][k]), k


def test_dataset_and_model_of_the_config(tmp_path):
    folder = write_images(tmp_path / "imgs", 3)
    cfg = from_dict(tiny_inpainter(folder))
    item = build_dataset(cfg).item(0, 0)
    assert torch.equal(item["lq"], item["gt"] * (1 - item["mask"]))
    a, b = build_model(cfg), build_model(cfg)  # seeded init: identical on every rank
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None or not (dist.is_available() and dist.is_gloo_available()),
                    reason="torchrun or the gloo backend is not available")
def test_two_processes_equal_one(tmp_path):
    folder = write_images(tmp_path / "imgs", 10)
    # global batch 8 in micro-batches of 2 (BatchNorm normalises each micro-batch, so both runs use the
    # same groups); 3 steps cross an epoch end; flips, masks and EMA on.
    cfg = from_dict(tiny_inpainter(folder, optim={"micro_batch": 2}, max_steps=3))
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(dump_config(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "difface", "train", "inpainter",
           "--config", str(cfg_file), "--out", str(tmp_path / "two"), "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert _train("--config", cfg_file, "--out", tmp_path / "one") == 0
    two, one = load_checkpoint(tmp_path / "two"), load_checkpoint(tmp_path / "one")
    assert (two["step"], two["world_size"], one["world_size"]) == (3, 2, 1)
    # Same samples and masks; only the order of floating-point sums differs. Gradients that are
    # mathematically zero (the transposed convolutions' biases, cancelled by the BatchNorm after them)
    # are rounding noise that Adam turns into steps of +-lr: those weights are bounded by the summed lr
    # (3 steps, lr 5e-4, 1e-3, 1e-3 with the warm-up); the others agree to 2e-6.
    net = build_model(cfg)
    cancelled = {f"{n}.bias" for n, m in net.named_modules() if isinstance(m, nn.ConvTranspose2d)}
    assert len(cancelled) == 3
    for i, (name, _) in enumerate(net.named_parameters()):
        s1 = one["optimizer"]["state"][i]
        real = (s1["exp_avg_sq"] / (1 - 0.999**3)).sqrt() > 1e-8
        for part in ("model", "ema"):
            d = (one[part][name] - two[part][name]).abs()
            assert d.max().item() <= 2.5e-3 + 1e-7, f"{part}.{name}"
            if real.any() and name not in cancelled:
                assert d[real].max().item() < 2e-6, f"{part}.{name}"
    # BatchNorm running statistics: the same global-batch statistics. A BatchNorm right after a transposed
    # convolution sees that convolution's (free-running, see above) bias in its mean, within the same bound.
    after_bias = {f"model.{int(b.split('.')[1]) + 1}.running_mean" for b in cancelled}
    for part in ("model", "ema"):
        for k, v in one[part].items():
            if k.endswith(("running_mean", "running_var")):
                atol = 2.5e-3 if k in after_bias else 1e-5
                torch.testing.assert_close(two[part][k], v, rtol=1e-4, atol=atol, msg=f"{part}.{k}")
            elif k.endswith("num_batches_tracked"):
                assert int(v) == int(two[part][k]) == 3, k
    rows = [(tmp_path / r / "train.csv").read_text().splitlines() for r in ("one", "two")]
    col = rows[0][0].split(",").index("loss")
    assert len(rows[0]) == len(rows[1]) == 4
    for a, b in zip(rows[0][1:], rows[1][1:]):
        assert float(a.split(",")[col]) == pytest.approx(float(b.split(",")[col]), rel=1e-5)
    np.testing.assert_array_equal(*(np.array(r[0].split(",")) for r in rows))
