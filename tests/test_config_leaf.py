"""difface.config is a leaf: importing it loads no torch, OpenCV or numpy (the CLI and tools can read the options,
defaults and named models without them), and the names it shares with the heavy modules are theirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_importing_config_loads_no_torch_opencv_or_numpy():
    code = ("import sys, difface.config as c; c.check_model('bundled-64', 'restoration'); c.MODELS['official-512']; "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'cv2', 'numpy')); "
            "assert not heavy, heavy; print('ok')")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_the_shared_names_are_those_of_the_heavy_modules():
    from difface import backends, config, device, images, names
    from difface.diffusion import solvers
    from difface.face import detect

    assert backends.BACKENDS == tuple(backends.RUNTIMES) == config.BACKEND_NAMES  # the runtime table's names
    assert tuple(device.DTYPES) == names.DTYPE_NAMES == config.DTYPES
    assert images.OUTPUT_FORMATS is names.OUTPUT_FORMATS and images.DEFAULT_QUALITY == config.DEFAULT_QUALITY
    assert detect.DEFAULT_DETECTOR == config.DEFAULT_DETECTOR and config.DETECTORS == tuple(detect.DETECTORS)
    assert solvers.OFFICIAL is names.OFFICIAL is config.OFFICIAL and solvers.DEFAULT_NFE is config.DEFAULT_NFE
    assert config.SAMPLERS is solvers.SAMPLERS and config.SOLVERS is solvers.SOLVERS
