"""`difface export enhancer`: one ONNX face-enhancer file, run by hosts that never import torch.

The file is checked against its torch module (`Enhancer`), the module against the ordinary `DifFace.restore` path
with the same noise and the band merge, and the file inside facefusion's own, unmodified face-enhancer code and
through ReActor's ONNX restore steps (done here as its nodes.py does them)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import textwrap
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from difface import models
from difface.cli import main
from difface.config import DEFAULT_SEED, SamplingOptions
from difface.core import DifFace
from difface.diffusion.sampling import replay_noise
from difface.enhancer import LICENCES, Enhancer, export_enhancer, resize_matrix
from difface.face import band
from difface.face.align import align_faces
from difface.face.photo import find_faces

from conftest import SHARED_DATA, shared_data

ROOT = Path(__file__).resolve().parents[1]
THIRDPARTY = SHARED_DATA.parent / "thirdparty"
FACEFUSION = THIRDPARTY / "facefusion-33cc6b40.tar.gz"
NFE = 3  # the test file: three DDIM evaluations (the default is 10; the eval script runs the default)
MAD_LIMIT = 1 / 255  # mean absolute difference, [0, 1] scale, the file against its torch module


@pytest.fixture(scope="module")
def bundled():
    return DifFace.from_pretrained(device="cpu")


@pytest.fixture(scope="module")
def reference(bundled):
    """The torch module of the test file's settings (as the command below builds them)."""
    return Enhancer(bundled, SamplingOptions(None, None, "ddim", NFE, DEFAULT_SEED, "even"))


@pytest.fixture(scope="module")
def enhancer_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("enhancer") / "difface-enhancer.onnx"
    assert main(["export", "enhancer", "--nfe", str(NFE), "-o", str(path)]) == 0
    return path


def _api(enh: Enhancer, crop01: np.ndarray) -> np.ndarray:
    """The module on an (H, W, 3) RGB crop in [0, 1] -> (512, 512, 3) in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(crop01, np.float32)).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = enh(x * 2 - 1)
    return ((y[0].permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)


def _crop512(path: Path) -> np.ndarray:
    """An image file resized to a 512 crop, RGB float32 in [0, 1] on the 8-bit grid (as a host's crop is)."""
    im = Image.open(path).convert("RGB").resize((512, 512), Image.BICUBIC)
    return np.asarray(im, np.float32) / 255


def _synthetic() -> np.ndarray:
    """A smooth face-like pattern with some noise: ellipse, eyes, mouth."""
    yy, xx = np.mgrid[0:512, 0:512] / 512.0
    face = ((xx - 0.5) ** 2 / 0.1 + (yy - 0.5) ** 2 / 0.16 < 1).astype(np.float32)
    img = np.stack([0.3 + 0.5 * face, 0.25 + 0.4 * face, 0.2 + 0.3 * face], -1)
    for cx in (0.38, 0.62):
        img[((xx - cx) ** 2 + (yy - 0.45) ** 2) < 0.002] = 0.1
    img[(np.abs(xx - 0.5) < 0.08) & (np.abs(yy - 0.7) < 0.01)] = [0.6, 0.2, 0.2]
    img += np.random.default_rng(0).normal(0, 0.03, img.shape).astype(np.float32)
    return (np.round(img.clip(0, 1) * 255) / 255).astype(np.float32)


# -- the torch module is DifFace ----------------------------------------------------------------------------------
def test_resize_matrices_are_the_band_resize():
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    down = resize_matrix(512, 64)
    assert torch.allclose(down @ x @ down.T, band.resize(x, (64, 64)), atol=1e-5)
    y = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    up = resize_matrix(64, 512)
    assert torch.allclose(up @ y @ up.T, band.resize(y, (512, 512)), atol=1e-5)


def test_module_equals_difface_restore_with_the_same_noise(bundled, reference):
    """DifFace.restore at the model size with the enhancer's noise replayed, then the band merge: the same crop."""
    crop = torch.from_numpy(_crop512(ROOT / "examples" / "astronaut_lq.png")).permute(2, 0, 1)[None]
    seen = band.resize(crop, (64, 64))
    st = reference.settings
    out = bundled.restore(seen, start_step=st.start_step, eta=st.eta, sampler=st.sampler, nfe=st.nfe,
                          noise_fn=replay_noise(reference.noise))
    expected = band.merge_band(crop, out.result, seen)
    with torch.no_grad():
        got = reference(crop * 2 - 1) * 0.5 + 0.5
    assert float((got - expected).abs().max()) < 1e-4
    assert float((got - crop).abs().mean()) > 2 / 255  # it restored something


def test_noise_is_fixed_by_the_seed(bundled, reference):
    again = Enhancer(bundled, reference.settings)
    other = Enhancer(bundled, SamplingOptions(None, None, "ddim", NFE, DEFAULT_SEED + 1, "even"))
    assert len(reference.noise) == 1  # eta 0: only q_sample draws
    assert torch.equal(again.noise[0], reference.noise[0])
    assert not torch.equal(other.noise[0], reference.noise[0])
    crop = _synthetic()
    assert np.array_equal(_api(again, crop), _api(reference, crop))
    assert np.abs(_api(other, crop) - _api(reference, crop)).mean() > 1e-4


def test_auto_start_and_bad_options_are_refused_naming_the_option(tmp_path, capsys):
    assert main(["export", "enhancer", "--start-step", "auto", "-o", str(tmp_path / "a.onnx")]) == 2
    assert "--start-step" in capsys.readouterr().err
    assert main(["export", "enhancer", "-o", str(tmp_path / "a.pth")]) == 2
    assert "-o: host programs load .onnx files" in capsys.readouterr().err
    assert main(["export", "enhancer", "--start-step", "1", "--nfe", "6", "-o", str(tmp_path / "a.onnx")]) == 2
    assert "--nfe" in capsys.readouterr().err
    assert main(["export", "enhancer", "--eta", "2", "-o", str(tmp_path / "a.onnx")]) == 2
    assert "--eta" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


# -- the file ------------------------------------------------------------------------------------------------------
def test_file_shares_the_weights_between_steps(enhancer_file, bundled):
    networks = sum(p.numel() * 4 for net in (bundled.prior, bundled.estimator) for p in net.parameters())
    size = enhancer_file.stat().st_size
    assert networks < size < networks + 0.9 * networks  # NFE = 3 unrolled copies would be 3x
    model = onnx.load(str(enhancer_file))
    names = [i.name for i in model.graph.initializer]
    convs = [f"prior.{k}" for k, v in bundled.prior.named_parameters() if v.ndim == 4]
    assert len(convs) > 20 and all(names.count(k) == 1 for k in convs)  # each convolution's weights once
    stored = sum(onnx.numpy_helper.to_array(i).nbytes for i in model.graph.initializer)
    assert stored < 1.2 * networks
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["difface.licence"] == LICENCES["bundled"]
    settings = json.loads(meta["difface.settings"])
    assert settings | {"start_step": 20, "start_t": 80, "eta": 0.0, "sampler": "ddim", "nfe": NFE} == settings
    assert set(json.loads(meta["difface.source_sha256"])) == {"prior", "estimator"}


CHILD = textwrap.dedent("""
    import json, sys
    sys.modules["torch"] = None  # a host without torch: importing it would fail
    import numpy as np
    import onnxruntime as ort
    path, inp, out = sys.argv[1:4]
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    io = {"inputs": [(i.name, i.type, i.shape) for i in s.get_inputs()],
          "outputs": [(o.name, o.type, o.shape) for o in s.get_outputs()],
          "meta": s.get_modelmeta().custom_metadata_map}
    y = s.run(None, {"input": np.load(inp)})[0]
    np.save(out, y)
    print(json.dumps(io))
""")


def test_file_runs_in_a_process_without_torch(enhancer_file, reference, tmp_path):
    crop = _crop512(ROOT / "examples" / "astronaut_face.png")
    np.save(tmp_path / "in.npy", (crop.transpose(2, 0, 1)[None] * 2 - 1).astype(np.float32))
    r = subprocess.run([sys.executable, "-c", CHILD, str(enhancer_file), str(tmp_path / "in.npy"),
                        str(tmp_path / "out.npy")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    io = json.loads(r.stdout.strip().splitlines()[-1])
    assert io["inputs"] == [["input", "tensor(float)", [1, 3, 512, 512]]]
    assert io["outputs"][0] == ["output", "tensor(float)", [1, 3, 512, 512]]
    assert "non-commercial" in io["meta"]["difface.licence"]
    y = np.load(tmp_path / "out.npy")
    assert y.dtype == np.float32 and y.shape == (1, 3, 512, 512)
    got = (y[0].transpose(1, 2, 0) + 1) / 2
    assert np.abs(got - _api(reference, crop)).mean() <= MAD_LIMIT / 10


def _check_file_on(path: Path, reference: Enhancer, faces: list[tuple[str, np.ndarray]]) -> None:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for name, crop in faces:
        y = s.run(None, {"input": (crop.transpose(2, 0, 1)[None] * 2 - 1).astype(np.float32)})[0]
        got = ((y[0].transpose(1, 2, 0) + 1) / 2).clip(0, 1)
        ref = _api(reference, crop)
        assert np.abs(got - ref).mean() <= MAD_LIMIT, name
        assert np.abs(ref - crop).mean() > 1 / 255, name  # the face was changed


def test_file_matches_the_module_on_example_faces(enhancer_file, reference):
    _check_file_on(enhancer_file, reference, [
        ("astronaut_face", _crop512(ROOT / "examples" / "astronaut_face.png")),
        ("astronaut_lq", _crop512(ROOT / "examples" / "astronaut_lq.png")), ("synthetic", _synthetic())])


def test_file_matches_the_module_on_real_faces(enhancer_file, reference):
    lq = shared_data("real-world", "ffhq-pairs-gpen", "lq")  # skips, saying why, where the data is absent
    _check_file_on(enhancer_file, reference, [(p.stem, _crop512(p)) for p in sorted(lq.glob("*.png"))[:3]])


# -- hosts ---------------------------------------------------------------------------------------------------------
def _astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()  # public domain (NASA), RGB uint8 512x512


def test_facefusion_enhances_a_photo_with_the_file(enhancer_file, reference, tmp_path):
    if not FACEFUSION.is_file():
        pytest.skip(f"facefusion's source snapshot is absent ({FACEFUSION.name} under ../shared/thirdparty)")
    with tarfile.open(FACEFUSION) as tar:
        tar.extractall(tmp_path / "ff", filter="data")
    ff = next(p.parent.parent for p in (tmp_path / "ff").glob("*/facefusion/__init__.py"))
    rgb = _astronaut()
    dets = find_faces(rgb.astype(np.float32) / 255, "mtcnn", largest_face=True)
    assert len(dets) == 1
    points = np.asarray(dets.landmarks, np.float64).reshape(5, 2)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    model = tmp_path / "models" / "difface-enhancer.onnx"  # as docs/integrations.md installs it, with its .hash
    model.parent.mkdir()
    shutil.copy(enhancer_file, model)
    model.with_suffix(".hash").write_text(format(zlib.crc32(model.read_bytes()), "08x"))
    driver = ROOT / "scripts" / "maintainer" / "facefusion_enhance.py"
    r = subprocess.run([sys.executable, str(driver), str(ff), str(model),
                        str(tmp_path / "photo.png"), json.dumps(points.tolist()), str(tmp_path / "out")], cwd=ff,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"weight_input": False, "hash_valid": True}
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB")).astype(np.int16)
    diff = np.abs(out - rgb.astype(np.int16)).max(-1)
    x0, y0, x1, y1 = np.asarray(dets.boxes[0][:4]).astype(int)
    assert diff[y0:y1, x0:x1].mean() > 1.0  # the face was enhanced and pasted back
    assert diff[:, :40].max() == 0 and diff[-40:, :].max() == 0  # far from the face nothing changed
    crop_in = np.load(tmp_path / "out_in.npy")  # what facefusion gave the file: (1, 3, 512, 512) in [-1, 1]
    crop_out = np.load(tmp_path / "out_out.npy")  # what the file gave back: (3, 512, 512)
    assert crop_in.dtype == np.float32 and crop_in.shape == (1, 3, 512, 512) and crop_out.shape == (3, 512, 512)
    api = _api(reference, (crop_in[0].transpose(1, 2, 0) + 1) / 2)
    assert np.abs((crop_out.transpose(1, 2, 0) + 1) / 2 - api).mean() <= MAD_LIMIT


def test_reactor_onnx_restore_steps(enhancer_file, reference):
    """ReActor's ONNX face restore, done here as its nodes.py does it: the ComfyUI image (RGB float) x 255 as BGR,
    aligned by its helper to the 512 FFHQ template (difface's alignment: the same template), the crop's channels
    reversed, / 255, normalised to [-1, 1], NCHW float32 as `input` (a `weight` input would get [1.0]); the first
    output's first item clipped to [-1, 1], back to [0, 255], rounded, uint8, BGR."""
    rgb = _astronaut().astype(np.float32) / 255
    dets = find_faces(rgb, "mtcnn", largest_face=True)
    crop_rgb, _ = align_faces(rgb, np.asarray(dets.landmarks, np.float64).reshape(-1, 5, 2), 512)
    cropped_face = crop_rgb[0][:, :, ::-1] * 255.0  # BGR float in [0, 255], as the helper's warp gives
    session = ort.InferenceSession(str(enhancer_file), providers=["CPUExecutionProvider"])
    feed = {}
    for i in session.get_inputs():
        if i.name == "input":
            x = (cropped_face[:, :, ::-1] / 255.0 - 0.5) / 0.5
            feed["input"] = x.transpose(2, 0, 1)[None].astype(np.float32)
        if i.name == "weight":
            feed["weight"] = np.array([1], dtype=np.double)
    assert list(feed) == ["input"]
    out = session.run(None, feed)[0][0]
    restored = ((np.clip(out, -1, 1) + 1) / 2).transpose(1, 2, 0)
    restored = (restored * 255.0).round().astype(np.uint8)[:, :, ::-1]
    assert restored.shape == (512, 512, 3) and restored.dtype == np.uint8
    api = _api(reference, feed["input"][0].transpose(1, 2, 0) * 0.5 + 0.5)
    assert np.abs(restored[:, :, ::-1] / 255.0 - api).mean() <= MAD_LIMIT
    assert np.abs(restored[:, :, ::-1] / 255.0 - crop_rgb[0]).mean() > 1 / 255


def _narrow_512_pair():
    """The official 512 networks' layout (seven UNet levels, attention at 32/16/8; SwinIR with the 8x unshuffle) at a
    fraction of their width, filler weights: a 512 px model that exports in seconds. The full-width file is checked
    face by face by scripts/evaluations/eval_enhancer_512.py (docs/integrations.md)."""
    from dataclasses import replace as dc_replace

    unet = dc_replace(models.CONFIGS["unet_ffhq512"], model_channels=32, num_res_blocks=1, num_head_channels=64,
                      channel_mult=(1, 1, 1, 1, 2, 2, 2))
    swin = dc_replace(models.CONFIGS["swinir_restoration512"], embed_dim=12, depths=(1, 1), num_heads=(2, 2))
    return (models.fill_deterministic(models.build_from_config(c)) for c in (unet, swin))


@pytest.mark.slow
def test_a_512_model_file_is_difface_without_a_band_merge(tmp_path):
    """A 512 px model (the official layout, narrow, filler weights): no resizing, the file against DifFace.restore's
    result."""
    prior, est = _narrow_512_pair()
    model = DifFace.from_modules(prior, est, name="filler weights (official 512 layout, narrow)")
    enh = Enhancer(model, SamplingOptions(None, None, "ddim", 1, DEFAULT_SEED, "even"))
    assert not enh.band and enh.settings.start_step == 100 and enh.settings.eta == 0.5
    crop = _crop512(ROOT / "examples" / "astronaut_lq.png")
    x = torch.from_numpy(crop).permute(2, 0, 1)[None]
    st = enh.settings
    expected = model.restore(x, start_step=st.start_step, eta=st.eta, sampler=st.sampler, nfe=st.nfe,
                             noise_fn=replay_noise(enh.noise)).result[0].permute(1, 2, 0).numpy()
    api = _api(enh, crop)
    assert np.abs(api - expected).max() < 1e-4
    info = export_enhancer(enh, tmp_path / "filler512.onnx")
    stored = sum(p.numel() * 4 for net in (prior, est) for p in net.parameters())
    stored += sum(n.numel() * 4 for n in enh.noise)
    assert stored < info["bytes"] < stored + 2**21  # the weights and the fixed noise, once each
    assert info["metadata"]["difface.licence"] == LICENCES["filler"]
    s = ort.InferenceSession(info["path"], providers=["CPUExecutionProvider"])
    y = s.run(None, {"input": (crop.transpose(2, 0, 1)[None] * 2 - 1).astype(np.float32)})[0]
    assert np.abs((y[0].transpose(1, 2, 0) + 1) / 2 - api).mean() <= MAD_LIMIT
