"""scripts/benchmarks/gpu_check.sh, dry-run on the CPU so that the prepared GPU check cannot rot."""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # kept out of the default run for its time; .ci/run runs it
def test_gpu_check_dry_run_on_cpu_writes_json_and_table(tmp_path):
    script = ROOT / "scripts" / "benchmarks" / "gpu_check.sh"
    r = subprocess.run(["bash", str(script), "--device", "cpu", "--quick", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["setting"] for s in report["settings"]] == ["eager fp32", "bf16 channels-last"]
    for s in report["settings"]:
        for b in ("1", "2"):
            pf = s["per_face_s"][b]
            assert 0 < pf["ddim_5"] < pf["fast"] < pf["ddim_10"] < pf["official_100"]
        assert s["restore_10nfe_s"]["1"] > 0
    assert report["settings"][0]["speedup_vs_eager_fp32_official"]["1"] == 1.0
    # fp32 on this CPU against the golden vectors of the official code (tests/test_models.py: atol 1e-4)
    for name, p in report["parity_fp32_vs_cpu_golden"].items():
        assert p["max_abs_diff"] < 1e-4, name
    reasons = {s["setting"]: s["reason"] for s in report["skipped"]}
    assert "CUDA graphs bf16" in reasons and "onnxruntime CUDA EP fp16" in reasons
    table = (tmp_path / "gpu_check.txt").read_text()
    assert "| eager fp32 |" in table and "parity" in table
