"""Shared fixtures: golden data, shared test data location, small filled models."""

from __future__ import annotations

import json
import os
from pathlib import Path

from difface import threads

# The CLI's rule for CPU threads (difface.threads), capped at 2 as before (the test networks are small), and idle
# threads that sleep: set before torch loads its OpenMP runtime, and inherited by the commands the tests run
# (in process: the CLI respects OMP_NUM_THREADS, so its results match the suite's; in subprocesses likewise).
os.environ["OMP_NUM_THREADS"] = str(min(2, threads.choose().threads))
threads.prepare_environment()
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from difface import hub  # noqa: E402
from difface.cli import main  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.fixture(autouse=True, scope="session")
def _own_weights_cache(tmp_path_factory):
    """The suite's weights cache is a folder of its own (subprocesses inherit it): tests never read what a user
    cached nor leave files (downloads, the one-time Real-ESRGAN note's marker) in ~/.cache/difface.
    A DIFFACE_HOME set by the caller is kept."""
    if "DIFFACE_HOME" in os.environ:
        yield
        return
    os.environ["DIFFACE_HOME"] = str(tmp_path_factory.mktemp("difface-home"))
    try:
        yield
    finally:
        os.environ.pop("DIFFACE_HOME", None)


@pytest.fixture(autouse=True)
def _registry_unchanged():
    """No test leaves an entry of its own in the weights registry (difface.hub.REGISTRY): what a test adds
    (through the `registered` fixture, which takes it out again) or changes is put back, and the test fails."""
    before = dict(hub.REGISTRY)
    yield
    after = dict(hub.REGISTRY)
    if after != before:
        hub.REGISTRY.clear()
        hub.REGISTRY.update(before)
        left = sorted(n for n in after if after[n] != before.get(n)) + sorted(set(before) - set(after))
        pytest.fail(f"the test left the weights registry changed: {left}; use the `registered` fixture")


@pytest.fixture
def registered():
    """`add(entry)`: weights.register for this test only; the entry is taken out of the registry afterwards (an
    entry it replaced is put back)."""
    added: list[tuple[str, hub.WeightsEntry | None]] = []

    def add(entry: hub.WeightsEntry) -> hub.WeightsEntry:
        added.append((entry.name, hub.REGISTRY.get(entry.name)))
        return hub.register(entry)

    yield add
    for name, old in reversed(added):
        if old is None:
            hub.REGISTRY.pop(name, None)
        else:
            hub.REGISTRY[name] = old


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow opt-in checks")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow check: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def run_cli(args, capsys) -> tuple[int, str]:
    """`difface ARGS` in this process: (exit status, what it wrote to stderr and stdout)."""
    try:
        status = main([str(a) for a in args])
    except SystemExit as e:
        status = e.code
    captured = capsys.readouterr()
    return status, captured.err + captured.out


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "golden" / f"{name}.npz") as f:
        return {k: f[k] for k in f.files}


def manifest(name: str) -> dict:
    return json.loads((FIXTURES / "manifests" / f"{name}.json").read_text())


def shared_data(*parts: str) -> Path:
    """Path under ../shared/data; skips the test with the reason when it is absent."""
    p = SHARED_DATA.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared test data not found at {p} (research-only images are not in the repository)")
    return p


@pytest.fixture(scope="session")
def small_models():
    from difface.models import build, fill_deterministic

    return fill_deterministic(build("unet_small")), fill_deterministic(build("swinir_small"))
