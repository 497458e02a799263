import json

import pytest
import torch

from difface.benchmark import Setting, benchmark
from difface.cli import main
from difface.core import DifFace


def test_benchmark_measures_baseline_first(capsys):
    res = benchmark("unet_small", "swinir_small", [Setting(channels_last=True)], reps=1, log=lambda s: None)
    assert [r.setting for r in res] == ["fp32+b1", "fp32+b1+channels_last"]
    assert res[0].speedup_vs_eager_fp32 == 1.0 and res[0].max_abs_diff_vs_fp32 is None
    assert res[1].max_abs_diff_vs_fp32 < 1e-4  # same parameters, same fp32 output
    assert res[1].face_seconds(10) == pytest.approx(res[1].estimator_s + 10 * res[1].step_s)


@pytest.mark.slow  # bf16 is emulated (about 10x slower) on CPUs without bf16 instructions, like CI's
def test_benchmark_measures_baseline_first_and_reports_deviation(capsys):
    res = benchmark("unet_small", "swinir_small", [Setting(dtype="bf16"), Setting(channels_last=True)],
                    reps=1, log=lambda s: None)
    assert [r.setting for r in res] == ["fp32+b1", "bf16+b1", "fp32+b1+channels_last"]
    assert res[0].speedup_vs_eager_fp32 == 1.0 and res[0].max_abs_diff_vs_fp32 is None
    assert res[2].max_abs_diff_vs_fp32 < 1e-4  # same parameters, same fp32 output
    assert 1e-4 < res[1].max_abs_diff_vs_fp32 < 0.5  # bf16 differs, but not wildly
    assert all(r.step_s > 0 and r.estimator_s > 0 and r.peak_mem_mb > 0 for r in res)
    assert res[1].face_seconds(10) == pytest.approx(res[1].estimator_s + 10 * res[1].step_s)


def test_benchmark_command_writes_json(tmp_path):
    status = main(["benchmark", "--prior", "unet_small", "--estimator", "swinir_small", "--dtype", "fp32",
                   "--batch", "1,2", "--reps", "1", "--device", "cpu", "--json", str(tmp_path / "b.json")])
    assert status == 0
    data = json.loads((tmp_path / "b.json").read_text())
    assert [r["setting"] for r in data["results"]] == ["fp32+b1", "fp32+b2"]


def test_channels_last_restoration_equals_eager(small_models):
    y = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ref = DifFace.from_modules(*small_models).restore(y, start_step=3, seeds=[1]).result
    before = {k: v.clone() for k, v in small_models[0].state_dict().items()}
    fast = DifFace.from_modules(*small_models).optimized(channels_last=True)
    out = fast.restore(y, start_step=3, seeds=[1]).result
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    # the caller's networks are left as they were (no in-place layout change, no global setting)
    assert all(v.is_contiguous() and torch.equal(v, before[k]) for k, v in small_models[0].state_dict().items())
    assert fast.prior is not small_models[0]


def test_few_step_sampler_runs_nfe_evaluations(small_models):
    calls = []
    model = DifFace.from_modules(*small_models)
    y = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = model.restore(y, seeds=[0, 1], sampler="dpmpp2m", nfe=4, callback=calls.append)
    assert [c["t"] for c in calls] == [400, 300, 200, 100]
    assert out.result.shape == y.shape and 0 <= out.result.min() and out.result.max() <= 1


@pytest.mark.slow  # kept out of the default run for its time; .ci/run runs it
def test_backend_table_runs_every_backend_against_eager_fp32(tmp_path):
    """In a process of its own: OpenVINO's and onnxruntime's thread pools loaded beside torch's made a later
    test of the same pytest process crash (SIGSEGV in a torch training step, seen on this 2-core machine)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, DIFFACE_HOME=str(tmp_path / "home"))
    run = subprocess.run([sys.executable, "-m", "difface", "benchmark", "--backend", "all", "--prior", "unet_small",
                          "--estimator", "swinir_small", "--dtype", "fp32", "--reps", "1", "--json",
                          str(tmp_path / "b.json")], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    rows = json.loads((tmp_path / "b.json").read_text())["results"]
    assert (rows[0]["backend"], rows[0]["dtype"], rows[0]["unet_vs_eager"]) == ("torch", "fp32", 1.0)
    others = {r["backend"]: r for r in rows[1:]}
    assert "onnxruntime" in others
    for r in others.values():  # fp32 graphs: the UNet output of eager fp32 within float rounding
        assert r["max_abs_diff_vs_fp32"] < 1e-4 and r["unet_s"] > 0 and r["peak_rss_mb"] > 0


def test_benchmark_of_a_restore_command_counts_its_evaluations(tmp_path, capsys):
    """`--command`: the command's own path (its options, its start-of-run line), per warm face, in eager fp32
    forwards of its prior timed between the faces. (The figures are timings: only their bookkeeping is checked.)"""
    from PIL import Image

    faces = tmp_path / "faces"
    faces.mkdir()
    for k in range(4):
        Image.fromarray((torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(k)) * 255).byte().numpy()
                        ).save(faces / f"{k}.png")
    base = f"restore {faces} -o {tmp_path / 'never'} --aligned --backend torch --threads 1 --eta 0 --start-step 4"
    status = main(["benchmark", "--command", base, "--command", base + " --sampler ddim --nfe 2",
                   "--json", str(tmp_path / "c.json")])
    assert status == 0
    rows = json.loads((tmp_path / "c.json").read_text())["results"]
    assert [r["faces"] for r in rows] == [3, 3]  # the first face warms up and is left out
    for r in rows:
        assert len(r["face_runs_s"]) == 3 and len(r["unit_runs_s"]) == 4  # a unit after every face, warm-up included
        assert r["face_s"] > 0 and r["unit_s"] > 0
        assert r["forwards_per_face"] == pytest.approx(r["face_s"] / r["unit_s"])
    assert "sampler ddim with 2 evaluations" in rows[1]["line"] and "sampler" not in rows[0]["line"]
    assert not (tmp_path / "never").exists()  # the command's -o folder is not written
    assert main(["benchmark", "--command", f"inpaint {faces} -o x"]) == 2
    assert "a `restore` command line is measured" in capsys.readouterr().out
