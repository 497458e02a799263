"""Two processes under torchrun (gloo, CPU) train the same weights as one process."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import torch
import torch.distributed as dist

from _train_utils import single_thread, tiny_config, write_images
from difface.cli import main
from difface.train.checkpoint import load_checkpoint
from difface.train.config import dump_config
from difface.train.run import build_model

_one_thread = pytest.fixture(scope="module", autouse=True)(single_thread)

pytestmark = pytest.mark.skipif(
    shutil.which("torchrun") is None or not (dist.is_available() and dist.is_gloo_available()),
    reason="torchrun or the gloo backend is not available",
)


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    folder = write_images(tmp_path / "imgs", 10)
    # global batch 8: one process runs 4 micro-batches of 2, each of two processes runs 2 (no_sync
    # on the first); 3 steps cross an epoch end; EMA on.
    cfg = tiny_config("prior", folder, data={"flip": True}, optim={"micro_batch": 2}, max_steps=3)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(dump_config(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "difface", "train", "prior",
           "--config", str(cfg_file), "--out", str(tmp_path / "two"), "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert main(["train", "prior", "--config", str(cfg_file), "--out", str(tmp_path / "one"), "--device", "cpu"]) == 0
    two = load_checkpoint(tmp_path / "two")
    one = load_checkpoint(tmp_path / "one")
    assert (two["step"], two["world_size"], one["world_size"]) == (3, 2, 1)
    # Same samples, timesteps and noise per sample; only the order of floating-point sums differs
    # (micro-batch sums, gradient all-reduce). Where a gradient is mathematically zero (conv biases
    # followed by a one-channel-per-group GroupNorm, invisible to the loss) it is rounding noise
    # that Adam normalises to steps of +-lr, so those weights are only bounded by the summed lr.
    # Tolerances: weights with an RMS gradient above 1e-8 within 2e-6 (0.2% of lr = 1e-3), all
    # weights within the summed lr of the 3 steps (2.5e-3), Adam's first moments within 1e-3 rel.
    names = [n for n, _ in build_model(cfg).named_parameters()]
    for i, name in enumerate(names):
        s1, s2 = one["optimizer"]["state"][i], two["optimizer"]["state"][i]
        real = (s1["exp_avg_sq"] / (1 - 0.999**3)).sqrt() > 1e-8
        torch.testing.assert_close(s1["exp_avg"], s2["exp_avg"], rtol=1e-3, atol=1e-9)
        for part in ("model", "ema"):
            d = (one[part][name] - two[part][name]).abs()
            assert d.max().item() <= 2.5e-3, f"{part}.{name}"
            if real.any():
                assert d[real].max().item() < 2e-6, f"{part}.{name}"
    log_one = (tmp_path / "one" / "train.csv").read_text().splitlines()
    log_two = (tmp_path / "two" / "train.csv").read_text().splitlines()
    assert len(log_one) == len(log_two) == 4
    loss_col = log_one[0].split(",").index("loss")
    for a, b in zip(log_one[1:], log_two[1:]):
        assert float(a.split(",")[loss_col]) == pytest.approx(float(b.split(",")[loss_col]), rel=1e-5)
