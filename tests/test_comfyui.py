"""The ComfyUI nodes of integrations/comfyui, loaded and called as ComfyUI loads and calls them.

ComfyUI itself is not installed here, and a run inside ComfyUI is not tested: these tests load the folder by
path as ComfyUI's custom-node loader does (a package from its __init__.py), check every node's declarations
(INPUT_TYPES, RETURN_TYPES, FUNCTION, ...) against the format ComfyUI reads, and call each node as ComfyUI's
executor does (an instance, getattr(node, FUNCTION)(**inputs), widget values taken from INPUT_TYPES' defaults).
ComfyUI's progress bar and cancel check are stood in for by fake `comfy` modules. What the nodes give is
compared with what `difface restore` / `difface inpaint` write for the same options and seed (PNG: within 1/255).
"""

from __future__ import annotations

import importlib.util
import inspect
import itertools
import re
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from difface.cli import main
from difface.config import DETECTORS, SAMPLERS, OptionError
from difface.face.detect import detect_faces, get_detector
from difface.images import read_image, write_image

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "integrations" / "comfyui"
EXAMPLES = ROOT / "examples"
SOCKETS = {"IMAGE", "MASK", "DIFFACE_MODEL"}  # input types that come from other nodes (no widget, no default)
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}
_names = itertools.count()


def load_package(name: str | None = None) -> types.ModuleType:
    """Import integrations/comfyui by path as ComfyUI does with a folder of custom_nodes/ (a package)."""
    name = name or f"difface_comfyui_test_{next(_names)}"
    spec = importlib.util.spec_from_file_location(name, PACKAGE / "__init__.py",
                                                  submodule_search_locations=[str(PACKAGE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def unload(module: types.ModuleType) -> None:
    for name in [n for n in sys.modules if n == module.__name__ or n.startswith(module.__name__ + ".")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def nodes():
    module = load_package()
    yield module.NODE_CLASS_MAPPINGS
    unload(module)


def widget_defaults(cls) -> dict:
    """The value of every widget input as a new node shows it: its "default", else a combo's first choice."""
    spec = cls.INPUT_TYPES()
    values = {}
    for section in ("required", "optional"):
        for name, (kind, *rest) in spec.get(section, {}).items():
            if isinstance(kind, list):
                values[name] = (rest[0] if rest else {}).get("default", kind[0])
            elif kind in WIDGETS:
                values[name] = rest[0]["default"]
    return values


def run_node(cls, **inputs):
    """Call a node as ComfyUI's executor does: an instance, its FUNCTION with the widget values and the given
    inputs; the result must be a tuple of RETURN_TYPES' length."""
    result = getattr(cls(), cls.FUNCTION)(**{**widget_defaults(cls), **inputs})
    assert isinstance(result, tuple) and len(result) == len(cls.RETURN_TYPES)
    return result


@pytest.fixture(scope="module")
def restorer(nodes):
    return run_node(nodes["DifFaceModelLoader"], model="bundled-64", device="cpu")[0]


@pytest.fixture(scope="module")
def inpainter(nodes):
    return run_node(nodes["DifFaceModelLoader"], model="bundled-64-inpaint", device="cpu")[0]


def as_batch(*rgbs: np.ndarray) -> torch.Tensor:
    """(H, W, 3) float arrays -> a ComfyUI IMAGE batch (B, H, W, 3)."""
    return torch.from_numpy(np.stack([np.asarray(r, np.float32) for r in rgbs]))


def damaged_face() -> np.ndarray:
    """The astronaut's aligned 64 px face, blurred and noised (fixed noise), quantized to 8 bits as a file."""
    rgb = read_image(EXAMPLES / "astronaut_face.png").rgb
    blurred = cv2.GaussianBlur(rgb, (0, 0), 1.2)
    noise = np.random.default_rng(3).normal(0, 0.04, rgb.shape).astype(np.float32)
    return np.round(np.clip(blurred + noise, 0, 1) * 255) / 255


# -- the declarations ComfyUI reads --------------------------------------------------------------------------------
def test_the_folder_loads_as_comfyui_loads_it_and_names_every_node(nodes):
    module = sys.modules[next(iter(nodes.values())).__module__.rsplit(".", 1)[0]]
    assert set(module.NODE_CLASS_MAPPINGS) == set(module.NODE_DISPLAY_NAME_MAPPINGS)
    assert set(nodes) == {"DifFaceModelLoader", "DifFaceRestore", "DifFaceInpaint"}
    assert all(isinstance(v, str) and v for v in module.NODE_DISPLAY_NAME_MAPPINGS.values())


@pytest.mark.parametrize("key", ["DifFaceModelLoader", "DifFaceRestore", "DifFaceInpaint"])
def test_every_node_declares_its_inputs_and_outputs_in_comfyui_format(nodes, key):
    cls = nodes[key]
    assert isinstance(inspect.getattr_static(cls, "INPUT_TYPES"), classmethod)
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional"} and spec["required"]
    for section in spec.values():
        for name, entry in section.items():
            assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, name
            kind, opts = entry[0], (entry[1] if len(entry) == 2 else {})
            assert isinstance(opts, dict), name
            if isinstance(kind, list):  # a combo: strings, its default among them
                assert kind and all(isinstance(c, str) for c in kind) and opts.get("default", kind[0]) in kind
            elif kind in ("INT", "FLOAT"):
                assert opts["min"] <= opts["default"] <= opts["max"], name
                assert isinstance(opts["default"], int if kind == "INT" else float), name
            elif kind in ("STRING", "BOOLEAN"):
                assert isinstance(opts["default"], str if kind == "STRING" else bool), name
            else:
                assert kind in SOCKETS and not opts, name
    assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
    assert isinstance(cls.RETURN_NAMES, tuple) and len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    assert isinstance(cls.CATEGORY, str) and cls.CATEGORY
    # FUNCTION takes every input by its name, and needs none that INPUT_TYPES does not require
    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    names = {n for section in spec.values() for n in section}
    assert names == set(params) - {"self"}
    needed = {n for n, p in params.items() if p.default is inspect.Parameter.empty and n != "self"}
    assert needed <= set(spec["required"])


def test_the_choices_are_difface_own_tables(nodes):
    spec = nodes["DifFaceRestore"].INPUT_TYPES()["required"]
    assert spec["sampler"][0] == list(SAMPLERS) and spec["detector"][0] == list(DETECTORS)
    loader = nodes["DifFaceModelLoader"].INPUT_TYPES()["required"]
    assert {"bundled-64", "bundled-64-inpaint", "official-512", "official-256-inpaint"} <= set(loader["model"][0])


def test_the_nodes_work_without_comfyui(nodes, restorer):
    if importlib.util.find_spec("comfy") is not None:
        pytest.skip("a `comfy` package is installed here")
    face = read_image(EXAMPLES / "astronaut_face.png").rgb
    image, report = run_node(nodes["DifFaceRestore"], image=as_batch(face), model=restorer, aligned=True,
                             start_step="0")
    assert image.shape == (1, 64, 64, 3) and image.dtype == torch.float32 and "start step 0" in report


def test_without_difface_the_folder_says_how_to_install_it(monkeypatch):
    for name in [n for n in sys.modules if n == "difface" or n.startswith("difface.")]:
        monkeypatch.setitem(sys.modules, name, None)  # import difface... now fails as if it were not installed
    message = "need the difface package in the Python that runs ComfyUI: install it with `pip install difface`"
    with pytest.raises(ModuleNotFoundError, match=message):
        load_package()


def test_the_registry_metadata_follows_the_comfy_registry_format():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text())
    project, comfy = meta["project"], meta["tool"]["comfy"]
    # node id: under 100 characters, letters/digits with single -, _ or . between, starting with a letter
    assert len(project["name"]) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", project["name"])
    assert "comfyui" not in project["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]) and project["description"]
    assert set(project["license"]) <= {"text", "file"} and len(project["license"]) == 1
    assert [d for d in project["dependencies"] if re.match(r"difface\b", d)]
    assert {"PublisherId", "DisplayName", "Icon"} <= set(comfy) and comfy["DisplayName"]


# -- results: the same as the command line -------------------------------------------------------------------------
FIXED = (["--start-step", "20", "--eta", "0.5", "--sampler", "ddim", "--nfe", "4", "--seed", "7"],
         dict(start_step="20", eta=0.5, sampler="ddim", nfe=4, seed=7))
DEFAULTS = ([], {})  # the model's defaults: start step auto, eta 0, the official loop, seed 12345
FITTED = (["--start-step", "100", "--eta", "0", "--sampler", "dpmpp2m", "--nfe", "6", "--schedule", "fitted"],
          dict(start_step="100", eta=0.0, sampler="dpmpp2m", nfe=6, schedule="fitted"))  # stored for the bundled prior


@pytest.mark.parametrize(("flags", "widgets"), [FIXED, DEFAULTS, FITTED], ids=["fixed-start", "defaults", "fitted"])
def test_aligned_faces_equal_difface_restore_aligned(nodes, restorer, tmp_path, flags, widgets):
    src = tmp_path / "in"
    src.mkdir()
    faces = [read_image(EXAMPLES / "astronaut_face.png").rgb, damaged_face()]
    for k, rgb in enumerate(faces):
        write_image(src / f"{k}.png", rgb)
    assert main(["restore", str(src), "-o", str(tmp_path / "out"), "--aligned", "--device", "cpu", *flags]) == 0
    image, _ = run_node(nodes["DifFaceRestore"], image=as_batch(*[read_image(src / f"{k}.png").rgb for k in (0, 1)]),
                        model=restorer, aligned=True, **widgets)
    for k in range(2):
        written = read_image(tmp_path / "out" / f"{k}.png").rgb
        assert np.abs(image[k].numpy() - written).max() <= 1 / 255 + 1e-6
    assert np.abs(image[1].numpy() - faces[1]).mean() > 0.005  # the damaged face was restored, not passed through


def test_a_whole_photo_keeps_its_size_and_changes_only_near_its_face(nodes, restorer, tmp_path):
    photo = read_image(EXAMPLES / "astronaut_lq.png").rgb
    image, report = run_node(nodes["DifFaceRestore"], image=as_batch(photo), model=restorer, upscale=1)
    assert image.shape == (1, *photo.shape) and "1 face(s) restored" in report
    out = image[0].numpy()
    boxes = detect_faces(photo, get_detector("mtcnn")).boxes
    assert len(boxes) == 1
    x1, y1, x2, y2 = boxes[0]
    side = max(x2 - x1, y2 - y1)  # the aligned crop reaches beyond the detector's box; one box side around it
    near = np.zeros(photo.shape[:2], bool)
    near[max(0, int(y1 - side)):int(y2 + side) + 1, max(0, int(x1 - side)):int(x2 + side) + 1] = True
    change = np.abs(out - photo).max(axis=2)
    assert change[~near].max() <= 1 / 255 and (~near).mean() > 0.4
    assert change[int(y1):int(y2), int(x1):int(x2)].mean() > 2 / 255
    # and it is what `difface restore PHOTO --upscale 1` writes
    assert main(["restore", str(EXAMPLES / "astronaut_lq.png"), "-o", str(tmp_path), "--upscale", "1",
                 "--device", "cpu"]) == 0
    assert np.abs(out - read_image(tmp_path / "astronaut_lq.png").rgb).max() <= 1 / 255 + 1e-6


def test_upscale_scales_a_whole_photo(nodes, restorer):
    photo = read_image(EXAMPLES / "astronaut_lq.png").rgb
    image, _ = run_node(nodes["DifFaceRestore"], image=as_batch(photo), model=restorer, upscale=2,
                        bg_upsampler="lanczos")
    assert image.shape == (1, 384, 384, 3)


def test_a_result_does_not_depend_on_the_batch(nodes, restorer):
    a, b = read_image(EXAMPLES / "astronaut_face.png").rgb, damaged_face()
    settings = dict(model=restorer, aligned=True, start_step="20", eta=1.0, sampler="ddim", nfe=3, seed=11)
    together, _ = run_node(nodes["DifFaceRestore"], image=as_batch(a, b), batch_size=2, **settings)
    alone, _ = run_node(nodes["DifFaceRestore"], image=as_batch(b), **settings)
    assert torch.allclose(together[1], alone[0], atol=1e-5)
    other_seed, _ = run_node(nodes["DifFaceRestore"], image=as_batch(b), **{**settings, "seed": 12})
    assert (other_seed[0] - alone[0]).abs().max() > 1e-3  # the seed matters, so the equality above says something


# -- inpainting ------------------------------------------------------------------------------------------------------
def test_inpainting_with_a_mask_equals_difface_inpaint_and_keeps_known_pixels(nodes, inpainter, tmp_path):
    face = EXAMPLES / "astronaut_face.png"
    mask_file = EXAMPLES / "astronaut_mask.png"
    flags = ["--sampler", "ddim", "--nfe", "5", "--seed", "5"]
    assert main(["inpaint", str(face), "--mask", str(mask_file), "-o", str(tmp_path), "--device", "cpu", *flags]) == 0
    rgb = read_image(face).rgb
    mask = torch.from_numpy(read_image(mask_file).rgb.mean(axis=2) > 0.5).float()[None]  # MASK (1, H, W), 1 = fill
    image, _ = run_node(nodes["DifFaceInpaint"], image=as_batch(rgb), model=inpainter, mask=mask, sampler="ddim",
                        nfe=5, seed=5)
    out, hole = image[0].numpy(), mask[0].numpy() > 0
    assert np.abs(out - read_image(tmp_path / "astronaut_face.png").rgb).max() <= 1 / 255 + 1e-6
    assert np.abs(out[~hole] - rgb[~hole]).max() <= 1e-6 and np.abs(out[hole] - rgb[hole]).mean() > 0.02


def test_inpainting_without_a_mask_fills_the_black_pixels_and_needs_some(nodes, inpainter):
    rgb = read_image(EXAMPLES / "astronaut_face.png").rgb * 0.9 + 0.05  # no pixel exactly black
    with pytest.raises(ValueError, match="image 1 has no exactly black pixel, and no MASK was given"):
        run_node(nodes["DifFaceInpaint"], image=as_batch(rgb), model=inpainter)
    with pytest.raises(ValueError, match="mask of image 1: the mask marks no pixel as missing"):
        run_node(nodes["DifFaceInpaint"], image=as_batch(rgb), model=inpainter, mask=torch.zeros(1, 64, 64))
    holed = rgb.copy()
    holed[20:40, 16:48] = 0  # the official convention: the exactly black pixels are missing
    image, report = run_node(nodes["DifFaceInpaint"], image=as_batch(holed), model=inpainter, sampler="ddim", nfe=3)
    out = image[0].numpy()
    assert "hole: 640 pixel(s) (15.6 % of the face)" in report
    assert np.array_equal(out[:20], holed[:20]) and out[20:40, 16:48].min(axis=2).mean() > 0.05


# -- bad options: difface's own messages, before any work ---------------------------------------------------------
BAD_RESTORE = [
    (dict(eta=1.5), r"^eta: must lie in \[0, 1\], got 1.5$"),
    (dict(start_step="soon"), r"^start_step: expected an integer or auto, got 'soon'$"),
    (dict(start_step="200"), r"^start_step: 200 means t = 800, beyond the t <= 499 this prior was trained on"),
    (dict(nfe=5), r"^nfe: applies to sampler"),
    (dict(upscale=9), r"^upscale: must be between 1 and 8, got 9$"),
    (dict(detector="eyes"), r"^detector: must be one of .*, got 'eyes'$"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_RESTORE, ids=[next(iter(b)) for b, _ in BAD_RESTORE])
def test_a_bad_restore_option_raises_difface_option_error(nodes, restorer, bad, message):
    not_an_image = torch.zeros(1, 8, 8, 5)  # options are checked first: this would fail later, differently
    with pytest.raises(OptionError, match=message):
        run_node(nodes["DifFaceRestore"], image=not_an_image, model=restorer, **bad)


BAD_LOADER = [
    (dict(dtype="fp8"), r"^dtype: must be one of fp32, bf16, fp16, got 'fp8'$"),
    (dict(device="tpu"), r"^device: "),
    (dict(model="custom (prior + estimator)"), r"^prior: model 'custom \(prior \+ estimator\)' loads the files"),
    (dict(model="custom (prior + estimator)", prior="iddpm-ffhq512"), r"^estimator: give both prior and estimator"),
    (dict(model="bundled-64", prior="x.pth", estimator="y.pth"), r"^prior: prior and estimator are read with"),
    (dict(steps="ddim0"), r"^steps: "),
]


@pytest.mark.parametrize(("bad", "message"), BAD_LOADER, ids=[str(i) for i in range(len(BAD_LOADER))])
def test_a_bad_loader_option_raises_difface_option_error(nodes, bad, message):
    with pytest.raises(OptionError, match=message):
        run_node(nodes["DifFaceModelLoader"], **bad)


def test_a_model_of_the_other_task_and_auto_inpainting_are_refused(nodes, restorer, inpainter):
    rgb = as_batch(read_image(EXAMPLES / "astronaut_face.png").rgb)
    with pytest.raises(OptionError, match="^model: .* is a inpainting model; DifFaceRestore needs a restoration"):
        run_node(nodes["DifFaceRestore"], image=rgb, model=inpainter, aligned=True)
    with pytest.raises(OptionError, match="^model: .* is a restoration model; DifFaceInpaint needs an inpainting"):
        run_node(nodes["DifFaceInpaint"], image=rgb, model=restorer)
    with pytest.raises(OptionError, match="^start_step: 'auto' chooses a start"):
        run_node(nodes["DifFaceInpaint"], image=rgb, model=inpainter, start_step="auto")


def test_an_image_that_is_no_comfyui_image_is_refused(nodes, restorer):
    with pytest.raises(ValueError, match=r"expected an IMAGE batch of shape \(B, H, W, 3\), got \(1, 8, 8, 4\)"):
        run_node(nodes["DifFaceRestore"], image=torch.zeros(1, 8, 8, 4), model=restorer, aligned=True)


# -- ComfyUI's progress bar and cancel button (fake `comfy` modules) ----------------------------------------------
class Cancelled(Exception):
    pass


@pytest.fixture
def fake_comfy(monkeypatch):
    """`comfy.utils.ProgressBar` and `comfy.model_management.throw_exception_if_processing_interrupted` as
    ComfyUI offers them to custom nodes, recording what the nodes do with them; the package loaded with them."""
    seen = types.SimpleNamespace(bars=[], checks=0, cancel_after=None)

    class ProgressBar:
        def __init__(self, total):
            self.total, self.values = total, []
            seen.bars.append(self)

        def update_absolute(self, value, total=None, preview=None):
            self.total = self.total if total is None else total
            self.values.append(value)

    def throw_exception_if_processing_interrupted():
        seen.checks += 1
        if seen.cancel_after is not None and seen.checks > seen.cancel_after:
            raise Cancelled

    comfy = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    management = types.ModuleType("comfy.model_management")
    utils.ProgressBar = ProgressBar
    management.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    comfy.utils, comfy.model_management = utils, management
    for name, module in (("comfy", comfy), ("comfy.utils", utils), ("comfy.model_management", management)):
        monkeypatch.setitem(sys.modules, name, module)
    package = load_package()
    yield package.NODE_CLASS_MAPPINGS, seen
    unload(package)


def test_progress_goes_to_comfyui_progress_bar_and_cancel_stops_the_run(fake_comfy, restorer):
    nodes, seen = fake_comfy
    faces = as_batch(read_image(EXAMPLES / "astronaut_face.png").rgb, damaged_face())
    settings = dict(model=restorer, aligned=True, start_step="20", sampler="ddim", nfe=3)
    run_node(nodes["DifFaceRestore"], image=faces, **settings)
    assert seen.bars[-1].total == 200 and seen.bars[-1].values == [100, 200]  # one step per image done
    assert seen.checks == 2 * 3  # at every denoising step of each image (batch_size 1: one image at a time)
    run_node(nodes["DifFaceRestore"], image=faces, batch_size=2, **settings)
    assert seen.bars[-1].values == [200]
    photos = as_batch(*[read_image(EXAMPLES / "astronaut_lq.png").rgb] * 2)
    run_node(nodes["DifFaceRestore"], image=photos, model=restorer, upscale=1, start_step="2")
    assert seen.bars[-1].values == [100, 200]  # one face per photo
    seen.cancel_after = seen.checks + 1
    with pytest.raises(Cancelled):
        run_node(nodes["DifFaceRestore"], image=faces, **settings)
