"""`torchrun -m difface restore` shards the inputs across processes; the results equal one process."""

import hashlib
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.png"))}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None or not torch.distributed.is_available(),
                    reason="torchrun / torch.distributed not available")
def test_two_processes_give_the_same_files_as_one(tmp_path, small_models):
    torch.save(small_models[0].state_dict(), tmp_path / "p.pth")
    torch.save(small_models[1].state_dict(), tmp_path / "e.pth")
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for k in range(5):
        cv2.imwrite(str(src / f"f{k}.png"), (rng.random((64, 64, 3)) * 255).astype(np.uint8))
    (src / "bad.png").write_bytes(b"")
    common = ["restore", str(src), "--aligned", "--prior", str(tmp_path / "p.pth"), "--estimator",
              str(tmp_path / "e.pth"), "--start-step", "3", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "difface", *common, "-o", str(tmp_path / "one")],
                         capture_output=True, text=True, env=env, timeout=300)
    two = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "difface", *common,
                          "-o", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 1 and two.returncode == 1, two.stderr[-2000:]  # bad.png fails in both
    assert "bad.png" in two.stderr and "restored 5 of 6" in two.stderr
    assert len(_digest(tmp_path / "one")) == 5
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
