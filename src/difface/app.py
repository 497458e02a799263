"""`difface app`: a local web app (Gradio) for restoring and inpainting faces.

    from difface.app import AppServer, build_app
    server = AppServer(device="auto")                      # loads the bundled model(s)
    demo = build_app(server)                               # a gr.Blocks with the Restore and Inpaint tabs
    demo.queue(default_concurrency_limit=1).launch(server_name="127.0.0.1")

What a user can count on: the app runs the pipeline of `difface restore` / `difface inpaint` on the
uploaded file as it is (read by the same reader, never re-encoded by the browser or by Gradio), so
the same settings and seed give the same pixels, and the PNG offered for download is byte for byte
the file the command writes. Nothing is fetched from the internet (no CDN, no web fonts, analytics
off); one job runs at a time and the others wait in a visible queue; a bad upload gives a readable
message and the app goes on serving.

The models are injectable (`AppServer(restore_models=..., inpaint_models=...)`, or `--prior/--estimator`
and `--inpaint-prior/--inpaint-estimator` of the command), so an app can serve any weights files.
"""

from __future__ import annotations

import os

# Gradio reads this when it is imported: keep its telemetry and version check off (an offline app).
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import importlib.util  # noqa: E402
import logging  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections import OrderedDict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from difface.commands.options import args_from_options  # noqa: E402
from difface.config import DEFAULT_SEED, SAMPLERS  # noqa: E402
from difface.data.masks import detect_mask, load_mask, resize_nearest  # noqa: E402
from difface.device import DTYPES  # noqa: E402
from difface.face.detect import get_detector  # noqa: E402
from difface.face.photo import make_bg_upsampler  # noqa: E402
from difface.images import (  # noqa: E402
    ImageReadError,
    LoadedImage,
    check_pixels,
    image_to_tensor,
    read_image,
    to_uint8,
    write_image,
)
from difface.pipeline import (  # noqa: E402
    DEFAULT_MAX_PIXELS,
    InpaintOptions,
    InpaintPipeline,
    ModelOptions,
    NonFiniteResult,
    OptionError,
    PhotoOptions,
    RestoreOptions,
    RestorePipeline,
    SamplingOptions,
    read_input,
    save_result,
)
from difface.restore import DifFace, bundled_model_paths  # noqa: E402
from difface.weights import local_path  # noqa: E402

log = logging.getLogger("difface")

# Largest upload Gradio accepts (its own check, before our pixel limit reads the header): a 50 MP
# PNG, the default pixel limit, is 75 to 150 MB.
MAX_FILE_SIZE = "200mb"
SEED = DEFAULT_SEED
START_CHOICES = ("model default", "auto", "custom")
MODES = ("whole photo", "aligned face")
# Results older than this are deleted from the app's work folder (and Gradio's cache) while it runs.
KEEP_RESULTS_S = 3600


@dataclass(frozen=True)
class ModelChoice:
    """A model the app offers: a label for the menu and the weights (both None: the bundled model)."""

    label: str
    prior: str | None = None
    estimator: str | None = None


def official_models(task: str) -> list[ModelChoice]:
    """The official models whose files are in the weights cache (never downloaded by the app)."""
    pairs = {"restoration": [("official DifFace 512 px (iddpm-ffhq512 + swinir-ffhq512)", "iddpm-ffhq512",
                              "swinir-ffhq512")],
             "inpainting": [("official DifFace 256 px (iddpm-ffhq256 + lama-inpainting256)", "iddpm-ffhq256",
                             "lama-inpainting256")]}[task]
    return [ModelChoice(label, p, e) for label, p, e in pairs
            if local_path(p).is_file() and local_path(e).is_file()]


BUNDLED = {"restoration": "bundled small model (64 px)", "inpainting": "bundled small inpainter (64 px)"}


def default_models(task: str) -> list[ModelChoice]:
    """The bundled model of `task` and the official models found in the weights cache."""
    return [ModelChoice(BUNDLED[task])] + official_models(task)


def autostart_available() -> bool:
    """True when `--start-step auto` exists in this copy of difface (difface.autostart)."""
    try:
        return importlib.util.find_spec("difface.autostart") is not None
    except (ImportError, ValueError):
        return False


# -- pipelines that report progress ------------------------------------------------------------------
class _Counter:
    """Per-step and per-face progress of one request, reported to a `report(fraction, text)` function."""

    def __init__(self, report: Callable[[float, str], None], sampler: str, nfe: int | None, faces: int = 1):
        self.report, self.sampler, self.nfe = report, sampler, nfe or 10
        self.faces, self.face, self.total, self._n = faces, 0, None, 1

    def start_face(self, n: int) -> None:
        self.total, self._n = None, n
        self.report(self.face / max(self.faces, 1), f"face {self.face + 1} of {self.faces}: estimator")

    def end_face(self) -> None:
        self.face += self._n

    def step(self, info: dict) -> None:
        i = int(info["i"])
        if self.sampler == "official":  # the respaced loop counts down: the first index is start - 1
            if self.total is None:
                self.total = i + 1
            done = self.total - i
        else:
            self.total, done = self.nfe, i + 1
        frac = (self.face + done / self.total * self._n) / max(self.faces, 1)
        self.report(min(frac, 1.0), f"face {self.face + 1} of {self.faces}: denoising step {done} of {self.total}")


class _CountingDetector:
    """A face detector that remembers how many faces it found (the denominator of the per-face progress)."""

    def __init__(self, inner, counter: _Counter):
        self.inner, self.counter = inner, counter
        self.name = getattr(inner, "name", "detector")

    def detect(self, rgb):
        dets = self.inner.detect(rgb)
        self.counter.faces = max(len(dets), 1)
        return dets

    def __getattr__(self, name):
        return getattr(self.inner, name)


class _ProgressRestorePipeline(RestorePipeline):
    """RestorePipeline whose face restorations report per face and per denoising step."""

    counter: _Counter | None = None

    def restore_faces(self, x: torch.Tensor, callback=None):
        c = self.counter
        if c is None:
            return super().restore_faces(x, callback=callback)
        c.start_face(len(x))
        out = super().restore_faces(x, callback=c.step)
        c.end_face()
        return out


class _ProgressInpaintPipeline(InpaintPipeline):
    counter: _Counter | None = None

    def inpaint_faces(self, x: torch.Tensor, mask: torch.Tensor | None = None, callback=None):
        c = self.counter
        if c is None:
            return super().inpaint_faces(x, mask, callback=callback)
        c.start_face(len(x))
        out = super().inpaint_faces(x, mask, callback=c.step)
        c.end_face()
        return out


# -- the server: loaded models and request handling ---------------------------------------------------
class AppServer:
    """The models an app serves and the work behind its buttons (usable without a browser).

    restore_models / inpaint_models: the choices offered (None: the bundled model plus the official
    models found in the weights cache). Loaded models are kept (at most `keep_models` per task);
    `inpaint_unavailable` says why the Inpaint tab is off ("" when it is on).
    """

    def __init__(self, device: str = "auto", dtype: str = "fp32", max_pixels: int = DEFAULT_MAX_PIXELS,
                 restore_models: list[ModelChoice] | None = None, inpaint_models: list[ModelChoice] | None = None,
                 work_dir: Path | None = None, keep_models: int = 2, backend: str = "torch"):
        # OptionError for a bad dtype or a missing backend, before anything loads
        ModelOptions(device=device, dtype=dtype, backend=backend)
        self.device, self.dtype, self.max_pixels, self.keep_models = device, dtype, max_pixels, keep_models
        self.backend = backend
        self.restore_models = {m.label: m for m in (default_models("restoration") if restore_models is None
                                                    else restore_models)}
        self.inpaint_models = {m.label: m for m in (default_models("inpainting") if inpaint_models is None
                                                    else inpaint_models)}
        self._models: OrderedDict[tuple, DifFace] = OrderedDict()
        self._photo_parts: dict[tuple, tuple] = {}
        self._lock = threading.RLock()
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="difface-app-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.auto = autostart_available()
        # The first model of each tab is loaded now: a file that cannot be used is said at start.
        why = self._check_models("restoration")
        if not self.restore_models:
            raise ValueError(f"no restoration model to serve: {why}")
        why = self._check_models("inpainting")
        self.inpaint_unavailable = "" if self.inpaint_models else why

    def _check_models(self, task: str) -> str:
        """Drop the bundled model when it is not installed, load the first usable model of `task` (dropping
        those before it that fail); returns the reasons models were dropped."""
        choices = self.restore_models if task == "restoration" else self.inpaint_models
        reasons = []
        for label, m in list(choices.items()):
            if m.prior is None:
                try:
                    bundled_model_paths(task)
                except FileNotFoundError as e:
                    del choices[label]
                    what = "inpainter" if task == "inpainting" else "model"
                    reasons.append(f"no bundled {what} is installed with this copy of difface ({type(e).__name__})")
        for label in list(choices):
            try:
                self.model(label, task)
                break
            except (FileNotFoundError, ValueError, OptionError) as e:
                del choices[label]
                reasons.append(f"{label}: {e}")
        return "; ".join(reasons) or f"no {task} model was given"

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- models ------------------------------------------------------------------------------------
    def model_options(self, label: str, task: str) -> ModelOptions:
        choices = self.restore_models if task == "restoration" else self.inpaint_models
        if label not in choices:
            raise _err(f"unknown model {label!r}; choose one of: {', '.join(choices)}")
        m = choices[label]
        return ModelOptions(m.prior, m.estimator, device=self.device, dtype=self.dtype, backend=self.backend)

    def model(self, label: str, task: str) -> DifFace:
        """The loaded model of a menu label (loaded on first use; ValueError/FileNotFoundError if it cannot)."""
        mo = self.model_options(label, task)
        key = (task, mo.prior, mo.estimator)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            model = DifFace.from_pretrained(prior=mo.prior, estimator=mo.estimator, task=task, device=mo.device,
                                            dtype=mo.dtype, backend=mo.backend, steps=mo.steps)
            self._models[key] = model
            same_task = [k for k in self._models if k[0] == task]
            while len(same_task) > self.keep_models:  # free the least recently used model of this task
                del self._models[same_task.pop(0)]
            return model

    def defaults(self, label: str, task: str) -> tuple[float, int, str]:
        """(default eta, default start step, one line describing the model) of a menu label."""
        m = self.model(label, task)
        t = int(m.diffusion.timestep_map[m.default_start_step])
        start = (f"default start step auto (per image; start step {m.default_start_step} of ddim250, t = {t}, "
                 "when fixed)" if m.default_start == "auto" else
                 f"default start step {m.default_start_step} of ddim250 (t = {t} of 1000)")
        return m.default_eta, m.default_start_step, (
            f"{m.name}: {m.image_size} x {m.image_size} px; {start}, eta {m.default_eta:g}")

    def _detector_and_background(self, photo: PhotoOptions, device: torch.device, dtype: torch.dtype):
        """The whole-photo detector and background upsampler, built once (as `difface restore` builds them)."""
        key = (photo.detector, photo.bg_upsampler, str(device), dtype)
        if key not in self._photo_parts:
            self._photo_parts[key] = (get_detector(photo.detector, device=str(device)),
                                      make_bg_upsampler(photo.bg_upsampler, device, dtype))
        return self._photo_parts[key]

    # -- requests ----------------------------------------------------------------------------------
    def _request_dir(self) -> Path:
        now = time.time()
        # made again if it went away (a /tmp cleaner such as systemd-tmpfiles removes folders left untouched)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        for old in self.work_dir.iterdir():
            try:
                if now - old.stat().st_mtime > KEEP_RESULTS_S:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:
                pass
        d = self.work_dir / uuid.uuid4().hex[:12]
        d.mkdir(parents=True)
        return d

    def restore(self, path: str | None, mode: str, label: str, start: str, start_custom: float | None,
                eta: float | None, sampler: str, nfe: float | None, seed: float | None, upscale: float,
                report: Callable[[float, str], None] = lambda f, t: None) -> dict:
        """Restore an uploaded file as `difface restore` would; gr.Error (a message for the page) for a bad input
        or option. Returns {"slider": (before, after), "faces": gallery items, "file": the PNG written,
        "log": the log line, "message": a note such as "no face found ..." or "", "seconds", "result"}."""
        if not path:
            raise _err("Upload a photo or an aligned face first.")
        src = Path(path)
        aligned = mode == MODES[1]
        sampling = _sampling(start, start_custom, eta, sampler, nfe, seed, self.auto)
        try:
            options = RestoreOptions(model=self.model_options(label, "restoration"), sampling=sampling,
                                     photo=PhotoOptions(upscale=_integer(upscale, "upscale")), aligned=aligned,
                                     max_pixels=self.max_pixels)
        except OptionError as e:
            raise _err(_option_message(e)) from None
        report(0.0, "loading the model")
        model = self._load(label, "restoration")
        counter = _Counter(report, options.sampling.sampler, options.sampling.nfe)
        detector = bg = None
        if not aligned:
            try:
                detector, bg = self._detector_and_background(options.photo, model.device, DTYPES[self.dtype])
            except (ImportError, FileNotFoundError, ValueError, RuntimeError) as e:
                raise _err(f"the face detector cannot be used: {e}") from None
            detector = _CountingDetector(detector, counter)
        try:
            pipe = _ProgressRestorePipeline(model, options, model.device, detector=detector, bg_upsampler=bg)
        except OptionError as e:
            raise _err(_option_message(e)) from None
        pipe.counter = counter
        report(0.0, "reading the image")
        image = _read(pipe, src)
        t0 = time.perf_counter()
        try:
            result = pipe.restore_image(image)
        except NonFiniteResult as e:
            raise _err(str(e)) from None
        except (RuntimeError, ValueError) as e:
            raise _err(f"restoration failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        seconds = time.perf_counter() - t0
        dst = self._request_dir() / f"{src.stem}.png"
        save_result(dst, image, result)
        before = _display(image.rgb, result.image.shape[:2])
        after = _display(result.image)
        faces = []
        if result.crops is not None:
            for k in range(result.faces):
                faces += [(to_uint8(result.crops[k]), f"face {k + 1}: found"),
                          (to_uint8(result.restored[k]), f"face {k + 1}: restored")]
        else:
            faces = [(to_uint8(image.rgb), "input"), (_display(result.estimate), "estimate f(y)"), (after, "result")]
        steps = sorted(set(result.start_steps))
        cli = ["difface", "restore", src.name, "-o", "out"] + args_from_options(options)
        what = f"{result.faces} face(s) restored" if not aligned else "aligned face restored"
        if result.skipped:
            what += f", {result.skipped} left as they were (larger than {pipe.max_face_size:g} px)"
        notes = f"; {result.message}" if result.message else ""
        log_line = (f"{src.name}: {what} in {seconds:.1f} s{notes}. {pipe.describe()}; "
                    f"start step(s) used: {', '.join(map(str, steps)) or '-'}; seed {options.sampling.seed}. "
                    f"Same as: {shlex.join(cli)}")
        log.info("%s", log_line)
        return {"slider": (before, after), "faces": faces, "file": str(dst), "log": log_line,
                "message": result.message, "seconds": seconds, "result": result}

    def inpaint(self, path: str | None, painted: np.ndarray | None, mask_path: str | None, label: str,
                start: str, start_custom: float | None, eta: float | None, sampler: str, nfe: float | None,
                seed: float | None, report: Callable[[float, str], None] = lambda f, t: None) -> dict:
        """Inpaint an uploaded face; the missing region is the painted area (an (H, W) bool array, any
        size), and/or a mask file (white = missing), else the official convention (black pixels)."""
        if self.inpaint_unavailable:
            raise _err(f"Inpainting is not available: {self.inpaint_unavailable}")
        if not path:
            raise _err("Upload an aligned face first.")
        src = Path(path)
        sampling = _sampling(start, start_custom, eta, sampler, nfe, seed, auto=False)
        req = self._request_dir()
        mask_file = None
        painted_any = painted is not None and bool(np.any(painted))
        if painted_any or mask_path:
            hw = _header_size(src, self.max_pixels)
            missing = np.zeros(hw, bool)
            if painted_any:
                missing |= _resize_nearest(np.asarray(painted, bool), hw)
            if mask_path:
                try:
                    missing |= load_mask(Path(mask_path), hw, name=f"mask {Path(mask_path).name}") > 0.5
                except ValueError as e:
                    raise _err(_clean(str(e), Path(mask_path))) from None
            mask_file = req / f"{src.stem}_mask.png"
            write_image(mask_file, np.repeat(missing[:, :, None].astype(np.float32), 3, axis=2))
        try:
            options = InpaintOptions(model=self.model_options(label, "inpainting"), sampling=sampling,
                                     mask=None if mask_file is None else str(mask_file), max_pixels=self.max_pixels)
        except OptionError as e:
            raise _err(_option_message(e)) from None
        report(0.0, "loading the model")
        model = self._load(label, "inpainting")
        try:
            pipe = _ProgressInpaintPipeline(model, options, model.device)
        except OptionError as e:
            raise _err(_option_message(e)) from None
        pipe.counter = _Counter(report, options.sampling.sampler, options.sampling.nfe)
        image = _read(pipe, src, mask_file)
        mask = pipe.mask_for(src, image.rgb.shape[:2])
        t0 = time.perf_counter()
        try:
            result = pipe.inpaint_image(image, mask)
        except NonFiniteResult as e:
            raise _err(str(e)) from None
        except (RuntimeError, ValueError) as e:
            raise _err(f"inpainting failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
        seconds = time.perf_counter() - t0
        dst = req / f"{src.stem}.png"
        save_result(dst, image, result)
        if mask is None:  # the official convention: the missing pixels are the black ones

            mask = detect_mask(image_to_tensor(image.rgb))[0, 0].numpy()
        hole = mask[:, :, None] > 0.5
        before = to_uint8(np.where(hole, 0.0, image.rgb))
        after = _display(result.image)
        fill = np.where(hole, result.estimate, image.rgb)  # the estimator's fill of the hole, before diffusion
        panels = [(before, "input (missing region black)"), (_display(fill), "estimate (LaMa's fill)"),
                  (after, "result")]
        cli = ["difface", "inpaint", src.name, "-o", "out"] + args_from_options(options)
        if mask_file is not None:  # the file the page's download offers, by its name
            cli[cli.index("--mask") + 1] = mask_file.name
        log_line = (f"{src.name}: {hole.mean() * 100:.1f} % of the face inpainted in {seconds:.1f} s. "
                    f"{pipe.describe()}; seed {options.sampling.seed}. Same as: {shlex.join(cli)}")
        log.info("%s", log_line)
        return {"slider": (before, after), "faces": panels, "file": str(dst),
                "mask": None if mask_file is None else str(mask_file), "log": log_line, "seconds": seconds,
                "result": result, "missing": hole[:, :, 0]}

    def _load(self, label: str, task: str) -> DifFace:
        try:
            return self.model(label, task)
        except (FileNotFoundError, ValueError, OptionError) as e:
            raise _err(f"{label} cannot be loaded: {e}") from None


# -- helpers -----------------------------------------------------------------------------------------
def _err(message: str) -> gr.Error:
    """A message for the page (it stays until closed); the server logs one line, not a traceback."""
    log.info("refused: %s", message.splitlines()[0] if message else message)
    return gr.Error(message, duration=None, print_exception=False)


def _integer(value, name: str) -> int:
    if value is None or (isinstance(value, float) and not value.is_integer()):
        raise _err(f"{name}: expected a whole number, got {value!r}")
    return int(value)


def _sampling(start: str, start_custom, eta, sampler: str, nfe, seed, auto: bool) -> SamplingOptions:
    if start == "auto" and not auto:
        raise _err("start step 'auto' is not available in this copy of difface; choose a number")
    if start == "custom":
        start_step: int | str | None = _integer(start_custom, "start step")
    else:
        start_step = "auto" if start == "auto" else None
    try:
        return SamplingOptions(start_step=start_step, eta=None if eta is None else float(eta), sampler=sampler,
                               nfe=None if sampler == "official" or nfe is None else _integer(nfe, "NFE"),
                               seed=SEED if seed is None else _integer(seed, "seed"))
    except OptionError as e:
        raise _err(_option_message(e)) from None


_UI_NAMES = {"--start-step": "start step", "--eta": "eta", "--nfe": "NFE", "--seed": "seed", "--upscale": "upscale",
             "--sampler": "sampler", "--max-pixels": "pixel limit", "--device": "device", "--dtype": "precision"}


def _option_message(e: OptionError) -> str:
    return f"{_UI_NAMES.get(e.option, e.option)}: {e.message}"


def _clean(message: str, *paths: Path | None) -> str:
    """A message without the server's temporary folders: files are named as the user uploaded them."""
    for p in paths:
        if p is not None:
            message = message.replace(str(p), p.name)
    return message


def _read(pipe, src: Path, mask_file: Path | None = None) -> LoadedImage:
    try:
        return read_input(pipe, src)
    except ImageReadError as e:
        text = _clean(str(e), src, mask_file)
        if "no missing pixels" in text:
            text += ": paint the missing region with the brush, or upload a mask (white = missing)"
        raise _err(text.replace("--max-pixels", "the app's --max-pixels")) from None


def _header_size(src: Path, max_pixels: int) -> tuple[int, int]:
    """(H, W) of an upload, from its header (pixel limit checked), else from decoding it."""
    try:
        size = check_pixels(src, max_pixels)
        if size is None:
            return read_image(src).rgb.shape[:2]
    except ImageReadError as e:
        raise _err(_clean(str(e), src)) from None
    return size[1], size[0]


def _resize_nearest(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if a.shape[:2] == tuple(hw):
        return a

    return resize_nearest(a.astype(np.float32), hw) > 0.5


def _display(rgb: np.ndarray, hw: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 RGB for the page, resized (bicubic) to hw for a side-by-side comparison."""
    if hw is not None and rgb.shape[:2] != tuple(hw):
        import cv2

        rgb = cv2.resize(rgb, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    return to_uint8(rgb)


def _path(payload) -> str | None:
    """The uploaded file of an image component's raw value (events run with preprocess=False, so that the
    file reaches our reader untouched: Gradio's preprocessing would decode, and for some modes re-encode,
    it, and a file that is not an image would fail there without a readable message)."""
    if isinstance(payload, dict):
        return payload.get("path")
    return payload if isinstance(payload, str) else None


def mask_from_editor(value) -> np.ndarray | None:
    """The painted area of a raw gr.ImageEditor value: (H, W) bool, True where any layer has paint."""
    if not isinstance(value, dict):
        return None
    painted = None
    for layer in value.get("layers") or []:
        path = _path(layer)
        if not path:
            continue
        im = read_image(path)
        hit = im.alpha > 0 if im.alpha is not None else im.rgb.mean(axis=2) > 0.5
        painted = hit if painted is None else painted | _resize_nearest(hit, painted.shape)
    return painted


# -- the page ----------------------------------------------------------------------------------------
INTRO = """# difface
Blind face restoration and inpainting with **DifFace**, running on this machine: nothing is uploaded
anywhere. Every setting is that of `difface restore` / `difface inpaint`; the same settings and seed give
the same pixels as the command line, and the log line says which command."""


def build_app(server: AppServer) -> gr.Blocks:
    """The Gradio page: a Restore tab and an Inpaint tab (or why inpainting is not available)."""
    with gr.Blocks(title="difface", analytics_enabled=False, delete_cache=(600, KEEP_RESULTS_S)) as demo:
        gr.Markdown(INTRO)
        with gr.Tab("Restore", id="restore"):
            _restore_tab(server)
        with gr.Tab("Inpaint", id="inpaint"):
            _inpaint_tab(server)
    return demo


def _progress_reporter(progress: gr.Progress) -> Callable[[float, str], None]:
    return lambda frac, text: progress(frac, desc=text)


def _sampling_controls(server: AppServer, task: str, labels: list[str], starts: tuple[str, ...], prefix: str):
    eta0, start0, about = server.defaults(labels[0], task)
    model = gr.Dropdown(labels, value=labels[0], label="model", elem_id=f"{prefix}_model")
    about_md = gr.Markdown(about, elem_id=f"{prefix}_about")
    with gr.Row():
        start = gr.Radio(list(starts), value="model default", label="start step",
                         info="where the estimate is diffused to; larger: more realistic, less faithful",
                         elem_id=f"{prefix}_start")
        start_custom = gr.Number(value=start0, precision=0, minimum=0, label="custom start step (of ddim250)",
                                 elem_id=f"{prefix}_start_custom")
    eta = gr.Slider(0.0, 1.0, value=eta0, step=0.05, label="eta", info="DDIM eta: lower is more faithful",
                    elem_id=f"{prefix}_eta")
    with gr.Row():
        sampler = gr.Dropdown(list(SAMPLERS), value="official", label="sampler", elem_id=f"{prefix}_sampler",
                              info="official: one network evaluation per step; ddim / dpmpp2m: NFE evaluations")
        nfe = gr.Number(value=10, precision=0, minimum=1, label="NFE (ddim / dpmpp2m)", interactive=False,
                        elem_id=f"{prefix}_nfe")
    seed = gr.Number(value=SEED, precision=0, label="seed", elem_id=f"{prefix}_seed")

    def on_model(label, progress=gr.Progress()):
        progress(0.0, desc=f"loading {label}")
        try:
            eta_d, start_d, text = server.defaults(label, task)
        except (FileNotFoundError, ValueError, OptionError) as e:
            raise _err(f"{label} cannot be loaded: {e}") from None
        return gr.update(value=eta_d), gr.update(value=start_d), text

    model.change(on_model, model, [eta, start_custom, about_md], concurrency_id="model", api_visibility="private")
    sampler.change(lambda s: gr.update(interactive=s != "official"), sampler, nfe, queue=False,
                   api_visibility="private")
    return model, start, start_custom, eta, sampler, nfe, seed


def _restore_tab(server: AppServer) -> None:
    labels = list(server.restore_models)
    starts = START_CHOICES if server.auto else tuple(c for c in START_CHOICES if c != "auto")
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.Image(type="filepath", image_mode=None, format="png", label="photo or aligned face",
                              sources=["upload", "clipboard"], elem_id="restore_input", height=320)
            mode = gr.Radio(list(MODES), value=MODES[0], label="input",
                            info="whole photo: faces are found, restored and pasted back; aligned face: a face "
                            "crop on the FFHQ template", elem_id="restore_mode")
            model, start, start_custom, eta, sampler, nfe, seed = _sampling_controls(
                server, "restoration", labels, starts, "restore")
            upscale = gr.Slider(1, 8, value=2, step=1, label="upscale (whole photos)", elem_id="restore_upscale")
            run = gr.Button("Restore", variant="primary", elem_id="restore_run")
        with gr.Column(scale=2):
            slider = gr.ImageSlider(label="before / after", format="png", type="numpy", elem_id="restore_slider",
                                    interactive=False, max_height=640)
            log_box = gr.Textbox(label="log", lines=3, interactive=False, elem_id="restore_log")
            download = gr.DownloadButton("Download the result (PNG)", value=None, visible=True,
                                         interactive=False, elem_id="restore_download")
            faces = gr.Gallery(label="faces: found and restored (photos) / input, estimate, result (aligned)",
                               format="png", columns=4, height="auto", object_fit="contain", fit_columns=False,
                               elem_id="restore_faces",
                               interactive=False)

    def on_restore(image, mode_v, model_v, start_v, custom, eta_v, sampler_v, nfe_v, seed_v, upscale_v,
                   progress=gr.Progress()):
        out = server.restore(_path(image), mode_v, model_v, start_v, custom, eta_v, sampler_v, nfe_v, seed_v,
                             upscale_v, report=_progress_reporter(progress))
        if out["message"]:
            gr.Warning(out["message"])
        return out["slider"], out["log"], gr.update(value=out["file"], interactive=True), out["faces"]

    inputs = [upload, mode, model, start, start_custom, eta, sampler, nfe, seed, upscale]
    run.click(on_restore, inputs, [slider, log_box, download, faces], concurrency_id="model", preprocess=False,
              api_visibility="private")

    # The scripting API (gradio_client): plain values in, a file path and the log line out (README, "The app's API").
    api_file = gr.File(visible=False, label="result")
    api_log = gr.Textbox(visible=False, label="log")

    def restore(image, mode="whole photo", model=None, start_step="model default", custom_start_step=None,
                eta=None, sampler="official", nfe=None, seed=SEED, upscale=2, progress=gr.Progress()):
        """Restore a photo (mode "whole photo") or an aligned face (mode "aligned face") as `difface restore`
        would: returns (the restored PNG, the log line naming the same command)."""
        out = server.restore(_path(image), mode, model or labels[0], start_step, custom_start_step, eta, sampler,
                             nfe, seed, upscale, report=_progress_reporter(progress))
        return out["file"], out["log"]

    gr.Button(visible=False).click(restore, inputs, [api_file, api_log], api_name="restore", concurrency_id="model",
                                   preprocess=False)


def _inpaint_tab(server: AppServer) -> None:
    if server.inpaint_unavailable:
        gr.Markdown("**Inpainting is not available** in this app: " + server.inpaint_unavailable.strip()
                    .replace("\n", "; ") + "\n\nStart the app with `--inpaint-prior FILE --inpaint-estimator FILE` "
                    "to serve your own inpainting model (`difface train inpainter`), or download the official "
                    "one: `difface weights download iddpm-ffhq256 lama-inpainting256`.",
                    elem_id="inpaint_unavailable")
        return
    labels = list(server.inpaint_models)
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.Image(type="filepath", image_mode=None, format="png", label="aligned face",
                              sources=["upload", "clipboard"], elem_id="inpaint_input", height=240)
            editor = gr.ImageEditor(label="paint the missing region (white brush)", type="numpy", format="png",
                                    sources=[], transforms=[], layers=False, elem_id="inpaint_editor",
                                    brush=gr.Brush(default_size=12, colors=["#ffffff"], color_mode="fixed"),
                                    eraser=gr.Eraser(default_size=12), height=420, canvas_size=(512, 512))
            mask_upload = gr.Image(type="filepath", image_mode=None, format="png",
                                   label="or a mask (white = missing; optional)", sources=["upload"],
                                   elem_id="inpaint_mask", height=160)
            model, start, start_custom, eta, sampler, nfe, seed = _sampling_controls(
                server, "inpainting", labels, ("model default", "custom"), "inpaint")
            run = gr.Button("Inpaint", variant="primary", elem_id="inpaint_run")
        with gr.Column(scale=2):
            slider = gr.ImageSlider(label="before / after", format="png", type="numpy", elem_id="inpaint_slider",
                                    interactive=False, max_height=640)
            log_box = gr.Textbox(label="log", lines=3, interactive=False, elem_id="inpaint_log")
            with gr.Row():
                download = gr.DownloadButton("Download the result (PNG)", interactive=False,
                                             elem_id="inpaint_download")
                download_mask = gr.DownloadButton("Download the mask (PNG)", interactive=False,
                                                  elem_id="inpaint_download_mask")
            panels = gr.Gallery(label="input, estimate, result", format="png", columns=3, height="auto",
                                object_fit="contain", fit_columns=False, elem_id="inpaint_panels", interactive=False)

    def on_upload(upload_v):
        path = _path(upload_v)
        if not path:
            return None
        try:  # only an image within the pixel limit goes to the editor; the Inpaint button names the problem
            _header_size(Path(path), server.max_pixels)

            read_image(path)
        except (gr.Error, ImageReadError) as e:
            gr.Warning(_clean(getattr(e, "message", None) or str(e), Path(path)))
            return None
        return {"background": path, "layers": [], "composite": None}

    upload.change(on_upload, upload, editor, concurrency_limit=None, api_visibility="private", preprocess=False)

    def on_inpaint(image, edited, mask_v, model_v, start_v, custom, eta_v, sampler_v, nfe_v, seed_v,
                   progress=gr.Progress()):
        try:
            painted = mask_from_editor(edited)
        except ImageReadError as e:
            raise _err(f"the painted layer cannot be read: {e}") from None
        out = server.inpaint(_path(image), painted, _path(mask_v), model_v, start_v, custom, eta_v, sampler_v,
                             nfe_v, seed_v, report=_progress_reporter(progress))
        mask_btn = gr.update(value=out["mask"], interactive=out["mask"] is not None)
        return out["slider"], out["log"], gr.update(value=out["file"], interactive=True), mask_btn, out["faces"]

    run.click(on_inpaint, [upload, editor, mask_upload, model, start, start_custom, eta, sampler, nfe, seed],
              [slider, log_box, download, download_mask, panels], concurrency_id="model", preprocess=False,
              api_visibility="private")

    api_file = gr.File(visible=False, label="result")
    api_mask = gr.File(visible=False, label="mask")
    api_log = gr.Textbox(visible=False, label="log")

    def inpaint(image, mask=None, model=None, start_step="model default", custom_start_step=None, eta=None,
                sampler="official", nfe=None, seed=SEED, progress=gr.Progress()):
        """Inpaint an aligned face as `difface inpaint` would; the missing region is the white area of `mask`
        (optional: without one, the black pixels of the image). Returns (the PNG, the mask PNG or None, the log)."""
        out = server.inpaint(_path(image), None, _path(mask), model or labels[0], start_step, custom_start_step,
                             eta, sampler, nfe, seed, report=_progress_reporter(progress))
        return out["file"], out["mask"], out["log"]

    gr.Button(visible=False).click(inpaint, [upload, mask_upload, model, start, start_custom, eta, sampler, nfe, seed],
                                   [api_file, api_mask, api_log], api_name="inpaint", concurrency_id="model",
                                   preprocess=False)


def launch(demo: gr.Blocks, host: str = "127.0.0.1", port: int = 7860, *, block: bool = True,
           auth: Callable[[str, str], bool] | None = None, max_file_size: str = MAX_FILE_SIZE):
    """Serve the page: one job at a time (the others see their place in the queue), no SSR node server,
    uploads up to max_file_size (refused by the server, before storing, beyond it); `auth` ((user, password) ->
    bool): every page, API call and file needs a login. Returns (app, local_url) when block is False."""
    demo.queue(default_concurrency_limit=1)
    app, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                              inbrowser=False, share=False, ssr_mode=False, max_file_size=max_file_size,
                              show_error=True, pwa=False, mcp_server=False, enable_monitoring=False, auth=auth,
                              auth_message="difface: log in with the user and password the app was started with")
    if block:
        demo.block_thread()
    return app, url
