"""ONNX export, its cache, the onnxruntime / openvino backends and the torch-free restore script."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from difface import models
from difface.backends import RuntimeNet, check_backend
from difface.backends.onnx_export import cache_record, cached_export, file_sha256
from difface.cli import main
from difface.core import DifFace

ROOT = Path(__file__).resolve().parents[1]
_CHILD = "DIFFACE_TEST_OWN_PROCESS"
# Stated deviations (docs/onnx.md): fp32 graphs give the torch result within these, values in [0, 1].
BACKEND_ATOL = 1e-4
SCRIPT_ATOL = 1e-4


def _openvino_or_skip():
    if os.environ.get(_CHILD):  # the test's own process: the real check, which imports openvino
        try:
            check_backend("openvino")
        except Exception as e:  # noqa: BLE001 - the reason is the message
            pytest.fail(f"openvino was found by the parent process but does not import: {e}")
    elif importlib.util.find_spec("openvino") is None:  # never imported into the long pytest process
        pytest.skip("openvino is not installed here; CI installs it with the test extra (pip install openvino)")


def _ran_in_own_process(request) -> bool:
    """Run this test again in a pytest process of its own; True when that was done (and passed).

    OpenVINO loaded into the long pytest process makes a later fork of that process (a test's
    subprocess.run) die with SIGSEGV when DataLoader workers ran earlier in the session (seen on CI:
    exit 139). A command-line run loads one backend and forks nothing, so only the suite needs this.
    """
    if os.environ.get(_CHILD):
        return False
    env = dict(os.environ, **{_CHILD: "1"})
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--runslow",
                        request.node.nodeid], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " skipped" not in r.stdout, r.stdout[-2000:]
    return True


@pytest.fixture()
def onnx_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFACE_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "onnx"


def test_cache_reuses_a_matching_key_and_exports_again_when_it_differs(tmp_path):
    net = models.fill_deterministic(models.build("swinir_small"))
    root = tmp_path / "cache"
    path, reused = cached_export(net, root=root)
    assert not reused and path.is_file() and path.with_suffix(".json").is_file()
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    again, reused = cached_export(net, root=root)
    assert reused and again == path and (path.stat().st_mtime_ns, path.stat().st_ino) == stamp
    # another opset, other weights: other keys, new graphs; the first one stays
    p18, reused18 = cached_export(net, root=root, opset=18)
    other = models.fill_deterministic(models.build("swinir_small"), seed=1)
    p_other, reused_other = cached_export(other, root=root)
    assert not reused18 and not reused_other and len({path, p18, p_other}) == 3
    assert cache_record(p18)["key"]["opset"] == 18
    # a key file that does not match (here: damaged) means the graph is exported again, in place
    meta = path.with_suffix(".json")
    record = json.loads(meta.read_text())
    record["key"]["dtype"] = "fp16"
    meta.write_text(json.dumps(record))
    redone, reused = cached_export(net, root=root)
    assert redone == path and not reused and cache_record(path)["key"]["dtype"] == "fp32"
    assert not list(root.glob("*.part"))  # atomic writes leave no temporary files


def test_cache_key_holds_the_source_file_sha256(tmp_path):
    from difface.weights import save_network

    net = models.fill_deterministic(models.build("swinir_small"))
    src = tmp_path / "est.safetensors"
    save_network(net, src)
    path, _ = cached_export(net, source=src, root=tmp_path / "c")
    key = cache_record(path)["key"]
    assert key["source"] == "file" and key["source_sha256"] == file_sha256(src)
    assert key["config"] == json.loads(json.dumps(net.config.to_dict())) and key["dtype"] == "fp32"


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=pytest.mark.slow)])
def test_backend_matches_torch_on_filler_weights(small_models, onnx_cache, backend, request):
    if backend == "openvino":
        _openvino_or_skip()
        if _ran_in_own_process(request):
            return
    model = DifFace.from_modules(*small_models)
    y = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ref = model.restore(y, start_step=6, eta=0.5, seeds=[1, 2, 3])
    fast = model.with_backend(backend)
    assert isinstance(fast.prior, RuntimeNet) and isinstance(fast.estimator, RuntimeNet)
    out = fast.restore(y, start_step=6, eta=0.5, seeds=[1, 2, 3])
    assert (out.estimate - ref.estimate).abs().max() < BACKEND_ATOL
    assert (out.result - ref.result).abs().max() < BACKEND_ATOL
    # the raw UNet output too (eps of order 1)
    x, t = torch.randn(2, 3, 64, 64), torch.tensor([999, 3])
    with torch.no_grad():
        assert (fast.prior(x, t) - small_models[0](x, t)).abs().max() < 1e-4


def test_a_new_backend_is_one_runner_and_one_entry(small_models, onnx_cache, monkeypatch):
    """A runtime entered in RUNTIMES (here onnxruntime's runner under another name, counting its runs) is a
    `--backend` choice, passes the options' check and runs the networks."""
    from difface import backends, config
    from difface.cli import _command_parser, build_parser

    runs = []

    def build(path, dtype, device):
        run, desc = backends.ort_runner(path, device=device)
        return (lambda feeds: runs.append(1) or run(feeds)), f"counted {desc}"

    monkeypatch.setitem(backends.RUNTIMES, "counted", backends.Runtime(build, "onnxruntime", dtypes=("fp32",)))
    restore = _command_parser(build_parser(["restore"]), ["restore"])
    assert "counted" in next(a.choices for a in restore._actions if a.dest == "backend")
    assert "counted" in config.BACKEND_NAMES and config.ModelOptions(backend="counted").backend == "counted"
    model = DifFace.from_modules(*small_models)
    y = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = model.with_backend("counted").restore(y, start_step=3, eta=0.0, seeds=[1])
    assert len(runs) == 1 + 3  # the estimator once, the prior at each of the 3 steps
    assert (out.result - model.restore(y, start_step=3, eta=0.0, seeds=[1]).result).abs().max() < BACKEND_ATOL


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_backend_matches_torch_on_the_bundled_model(onnx_cache, backend, request):
    if backend == "openvino":
        _openvino_or_skip()
        if _ran_in_own_process(request):
            return
    y = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    model = DifFace.from_pretrained(device="cpu")
    ref = model.restore(y, start_step=20, eta=0.5, seeds=[4, 5]).result
    out = model.with_backend(backend).restore(y, start_step=20, eta=0.5, seeds=[4, 5]).result
    assert (out - ref).abs().max() < BACKEND_ATOL
    # inpainting: LaMa's FFTs run as DFT matrix products in the graph
    inp = DifFace.from_pretrained(task="inpainting", device="cpu")
    hole = y.clone()
    hole[:, :, 20:44, 16:48] = 0
    ref = inp.inpaint(hole, start_step=10, seeds=[4, 5]).result
    out = inp.with_backend(backend).inpaint(hole, start_step=10, seeds=[4, 5]).result
    assert (out - ref).abs().max() < BACKEND_ATOL


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """`difface export onnx` of the bundled model (its default settings: start step 20, eta 0)."""
    base = tmp_path_factory.mktemp("export")
    old = os.environ.get("DIFFACE_HOME")
    os.environ["DIFFACE_HOME"] = str(base / "home")
    try:
        assert main(["export", "onnx", "-o", str(base / "out")]) == 0
    finally:
        if old is None:
            os.environ.pop("DIFFACE_HOME")
        else:
            os.environ["DIFFACE_HOME"] = old
    return base / "out"


def test_export_writes_graphs_and_a_complete_manifest(exported):
    m = json.loads((exported / "manifest.json").read_text())
    model = DifFace.from_pretrained(device="cpu")
    assert m["task"] == "restoration" and m["image_size"] == 64
    for role in ("prior", "estimator"):
        f = m["files"][role]
        assert file_sha256(exported / f["file"]) == f["sha256"]
        assert f["inputs"][0]["shape"] == ["batch", 3, 64, 64] and f["inputs"][0]["range"]
    assert [i["name"] for i in m["files"]["prior"]["inputs"]] == ["x", "t"]
    assert m["files"]["prior"]["outputs"][0]["shape"] == ["batch", 6, 64, 64]
    s = m["sampling"]
    assert (s["sampler"], s["start_step"], s["start_t"], s["eta"]) == ("official", 20, 80, 0.0)
    assert [st["t"] for st in s["steps"]] == list(model.diffusion.timestep_map[:20][::-1])
    assert np.array_equal(m["schedule"]["respaced_alphas_cumprod"], model.diffusion.alphas_cumprod)
    assert len(m["schedule"]["betas"]) == 1000 and m["default_start_is_auto"] is True
    # dynamic batch: the graph runs at batch 3
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported / "prior.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": np.zeros((3, 3, 64, 64), np.float32), "t": np.array([1, 2, 3], np.int64)})[0]
    assert out.shape == (3, 6, 64, 64)


BLOCK_TORCH = """
import runpy, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name == "difface" or name.startswith("difface."):
            raise ImportError(f"{name} is blocked in this process")
        return None
sys.meta_path.insert(0, NoTorch())
try:
    import torch  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("torch imported")
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
assert "torch" not in sys.modules
"""


@pytest.mark.slow
def test_standalone_script_restores_without_torch(exported, tmp_path):
    face = (np.random.default_rng(3).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(face).save(tmp_path / "face.png")
    noise = np.random.default_rng(4).standard_normal((3, 64, 64)).astype(np.float32)
    np.save(tmp_path / "noise.npy", noise)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", BLOCK_TORCH, str(ROOT / "examples" / "onnx_restore.py"), str(exported),
                        str(tmp_path / "face.png"), "-o", str(tmp_path / "out.png"), "--noise",
                        str(tmp_path / "noise.npy"), "--save-npy", str(tmp_path / "out.npy")],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "out.npy")
    # the torch pipeline with the same q_sample noise (eta 0: no other noise is used)
    model = DifFace.from_pretrained(device="cpu")
    y = torch.from_numpy(face.astype(np.float32) / 255).permute(2, 0, 1)[None]
    draws = iter([torch.from_numpy(noise)[None]])
    ref = model.restore(y, start_step=20, eta=0.0, noise_fn=lambda x: next(draws, torch.zeros_like(x))).result[0]
    assert np.abs(got - ref.numpy()).max() < SCRIPT_ATOL
    png = np.asarray(Image.open(tmp_path / "out.png")).astype(int)
    assert np.abs(png - np.round(ref.permute(1, 2, 0).numpy() * 255)).max() <= 1


def test_missing_backend_is_named_with_the_pip_command_before_any_input(tmp_path):
    code = ("import sys\n"
            "class NoOV:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'openvino':\n"
            "            raise ImportError('openvino is blocked')\n"
            "sys.meta_path.insert(0, NoOV())\n"
            "from difface.cli import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    missing = tmp_path / "does-not-exist.png"
    r = subprocess.run([sys.executable, "-c", code, "restore", str(missing), "--aligned", "-o", str(tmp_path / "o"),
                        "--backend", "openvino"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "--backend" in r.stderr and "pip install openvino" in r.stderr
    assert "does-not-exist" not in r.stderr  # the option is refused before the inputs are looked at


@pytest.mark.slow  # kept out of the default run for its time; .ci/run runs it
def test_app_server_runs_its_models_through_the_backend(onnx_cache, tmp_path):
    from difface.app import AppServer

    server = AppServer(device="cpu", backend="onnxruntime", work_dir=tmp_path)
    label = next(iter(server.restore_models))
    model = server.model(label, "restoration")
    assert isinstance(model.prior, RuntimeNet) and isinstance(model.estimator, RuntimeNet)


def test_export_command_filler_networks_and_few_step_plan(tmp_path, onnx_cache):
    out = tmp_path / "fx"
    assert main(["export", "onnx", "--filler", "unet_small,swinir_small", "--sampler", "ddim", "--nfe", "5",
                 "--eta", "0.5", "-o", str(out)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    s = m["sampling"]
    assert (s["sampler"], s["start_step"], s["start_t"], s["nfe"]) == ("ddim", 100, 400, 5)
    assert [st["t"] for st in s["steps"]] == [400, 320, 240, 160, 80]
    assert s["steps"][-1]["sigma"] == 0.0 and s["steps"][-1]["c_x0"] == 1.0  # the last step lands on x0
    assert all(st["sigma"] > 0 for st in s["steps"][:-1])
    assert m["files"]["prior"]["source"] == "parameters"  # no weights file: keyed by the parameters' SHA-256
    assert main(["export", "onnx", "--filler", "unet_small", "-o", str(tmp_path / "bad")]) == 2
