"""The work behind the app's buttons: `AppServer.restore` / `AppServer.inpaint` (usable without a browser).

    server = AppServer(device="cpu")
    form = RestoreForm(next(iter(server.restore_models)), mode="aligned face", seed=12345)
    out = server.restore("face.png", form, report=lambda fraction, text: print(fraction, text))
    out["file"]   # the PNG written: byte for byte what `difface restore` writes; out["log"] names that command

Each request builds its options through `difface.config` (so every option is checked as on the command line),
runs a pipeline's in-memory method with a progress callback (per face and per denoising step, from the
pipeline's events), writes the result into a folder of its own under the work folder, and turns every refusal
into a `gr.Error` whose message names the upload as the user named it.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import gradio as gr
import numpy as np

from difface.app.catalogue import ModelCatalogue, ModelChoice, UnknownModel, autostart_available
from difface.app.progress import Progress, Report
from difface.commands.options import args_from_options
from difface.config import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_SEED,
    InpaintOptions,
    ModelOptions,
    OptionError,
    PhotoOptions,
    RestoreOptions,
    SamplingOptions,
    say_options,
)
from difface.core import DifFace
from difface.data.masks import detect_mask, load_mask, resize_nearest
from difface.images import (
    ImageReadError,
    LoadedImage,
    check_pixels,
    image_to_tensor,
    read_image,
    to_uint8,
    write_image,
)
from difface.pipeline.files import read_input, save_result
from difface.pipeline.inpaint import InpaintPipeline
from difface.pipeline.restoration import ImageResult, NonFiniteResult, RestorePipeline

log = logging.getLogger("difface")

SEED = DEFAULT_SEED
START_CHOICES = ("model default", "auto", "custom")
MODES = ("whole photo", "aligned face")
# Results older than this are deleted from the app's work folder (and Gradio's cache) while it runs.
KEEP_RESULTS_S = 3600



@dataclass(frozen=True)
class SamplingForm:
    """The sampling controls of a tab as the page gives them: model label, start choice (START_CHOICES), custom
    start step, eta, sampler, NFE, seed (numbers as floats or None; checked when the options are built)."""

    model: str
    start: str = "model default"
    start_custom: float | None = None
    eta: float | None = None
    sampler: str = "official"
    nfe: float | None = None
    seed: float | None = SEED


@dataclass(frozen=True)
class RestoreForm(SamplingForm):
    """The Restore tab's values: the sampling controls, the input mode (MODES) and the upscale of whole photos."""

    mode: str = MODES[0]
    upscale: float = 2


@dataclass(frozen=True)
class InpaintForm(SamplingForm):
    """The Inpaint tab's values: the sampling controls."""


class AppServer(ModelCatalogue):
    """The models an app serves (`ModelCatalogue`) and the work behind its buttons.

    restore_models / inpaint_models: the choices offered (None: the bundled model plus the official models found
    in the weights cache). Loaded models are kept (at most `keep_models` per task); `inpaint_unavailable` says why
    the Inpaint tab is off ("" when it is on). Results go to `work_dir` (None: a temporary folder, removed by
    `close`).
    """

    def __init__(self, device: str = "auto", dtype: str = "fp32", max_pixels: int = DEFAULT_MAX_PIXELS,
                 restore_models: list[ModelChoice] | None = None, inpaint_models: list[ModelChoice] | None = None,
                 work_dir: Path | None = None, keep_models: int = 2, backend: str = "torch"):
        # the last restoration pipeline: the next request reuses its detector and background upsampler
        self._restore_pipe: RestorePipeline | None = None
        # The first model of each tab is loaded now: a file that cannot be used is said at start.
        super().__init__(device=device, dtype=dtype, backend=backend, restore_models=restore_models,
                         inpaint_models=inpaint_models, keep_models=keep_models)
        self.max_pixels = max_pixels
        self.auto = autostart_available()
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="difface-app-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)

    def model(self, label: str, task: str) -> DifFace:
        """As `ModelCatalogue.model`; a kept pipeline whose model was freed goes too (no model outlives the
        catalogue's `keep_models`)."""
        loaded = super().model(label, task)
        if self._restore_pipe is not None and not any(self._restore_pipe.model is m for m in self._models.values()):
            self._restore_pipe = None
        return loaded

    def close(self) -> None:
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- requests ----------------------------------------------------------------------------------
    def restore(self, path: str | None, form: RestoreForm, report: Report = lambda f, t: None) -> dict:
        """Restore an uploaded file as `difface restore` would; gr.Error (a message for the page) for a bad input
        or option. Returns {"slider": (before, after), "faces": gallery items, "file": the PNG written,
        "log": the log line, "message": a note such as "no face found ..." or "", "seconds", "result"}."""
        if not path:
            raise refuse("Upload a photo or an aligned face first.")
        src = Path(path)
        label = form.model
        sampling = _sampling(form, self.auto)
        options = _options(lambda: RestoreOptions(
            model=self._model_options(label, "restoration"), sampling=sampling, aligned=form.mode == MODES[1],
            photo=PhotoOptions(upscale=_integer(form.upscale, "upscale")), max_pixels=self.max_pixels))
        report(0.0, "loading the model")
        pipe = self._restore_pipeline(self._load(label, "restoration"), options)
        report(0.0, "reading the image")
        image = _read(pipe, src)
        t0 = time.perf_counter()
        progress = Progress(report, pipe.plan)
        result = _run("restoration", lambda: pipe.restore_image(image, callback=progress))
        seconds = time.perf_counter() - t0
        dst = self._request_dir() / f"{src.stem}.png"
        _write(dst, image, result)
        after = _display(result.image)
        if result.crops is not None:
            faces = [item for k in range(result.faces) for item in (
                (to_uint8(result.crops[k]), f"face {k + 1}: found"),
                (to_uint8(result.restored[k]), f"face {k + 1}: restored"))]
        else:
            faces = [(to_uint8(image.rgb), "input"), (_display(result.estimate), "estimate f(y)"), (after, "result")]
        steps = sorted(set(result.start_steps))
        what = "aligned face restored" if options.aligned else f"{result.faces} face(s) restored"
        if result.skipped:
            what += f", {result.skipped} left as they were (larger than {pipe.max_face_size:g} px)"
        notes = f"; {result.message}" if result.message else ""
        log_line = (f"{src.name}: {what} in {seconds:.1f} s{notes}. {pipe.describe()}; "
                    f"start step(s) used: {', '.join(map(str, steps)) or '-'}; seed {options.sampling.seed}. "
                    f"Same as: {_same_as('restore', src, options)}")
        log.info("%s", log_line)
        return {"slider": (_display(image.rgb, result.image.shape[:2]), after), "faces": faces, "file": str(dst),
                "log": log_line, "message": result.message, "seconds": seconds, "result": result}

    def inpaint(self, path: str | None, painted: np.ndarray | None, mask_path: str | None, form: InpaintForm,
                report: Report = lambda f, t: None) -> dict:
        """Inpaint an uploaded face; the missing region is the painted area (an (H, W) bool array, any
        size), and/or a mask file (white = missing), else the official convention (black pixels). The mask is
        passed to the pipeline in memory; it is also written, for the page's download and the log's command."""
        if self.inpaint_unavailable:
            raise refuse(f"Inpainting is not available: {self.inpaint_unavailable}")
        if not path:
            raise refuse("Upload an aligned face first.")
        src = Path(path)
        label = form.model
        sampling = _sampling(form, auto=False)
        options = _options(lambda: InpaintOptions(model=self._model_options(label, "inpainting"), sampling=sampling,
                                                  max_pixels=self.max_pixels))
        req = self._request_dir()
        mask = _missing(src, painted, mask_path, self.max_pixels)
        mask_file = None if mask is None else req / f"{src.stem}_mask.png"
        if mask_file is not None:
            write_image(mask_file, np.repeat(mask[:, :, None], 3, axis=2))
        report(0.0, "loading the model")
        model = self._load(label, "inpainting")
        pipe = _options(lambda: InpaintPipeline(model, options, model.device))
        image = _read(pipe, src) if mask is None else _decode(src)
        t0 = time.perf_counter()
        progress = Progress(report, pipe.plan)
        result = _run("inpainting", lambda: pipe.inpaint_image(image, mask, callback=progress))
        seconds = time.perf_counter() - t0
        dst = req / f"{src.stem}.png"
        _write(dst, image, result)
        if mask is None:  # the official convention: the missing pixels are the black ones
            mask = detect_mask(image_to_tensor(image.rgb))[0, 0].numpy()
        hole = mask[:, :, None] > 0.5
        before = to_uint8(np.where(hole, 0.0, image.rgb))
        fill = np.where(hole, result.estimate, image.rgb)  # the estimator's fill of the hole, before diffusion
        panels = [(before, "input (missing region black)"), (_display(fill), "estimate (LaMa's fill)"),
                  (_display(result.image), "result")]
        shown = options if mask_file is None else replace(options, mask=str(mask_file))  # the mask the page offers
        log_line = (f"{src.name}: {hole.mean() * 100:.1f} % of the face inpainted in {seconds:.1f} s. "
                    f"{pipe.describe()}; seed {options.sampling.seed}. Same as: {_same_as('inpaint', src, shown)}")
        log.info("%s", log_line)
        return {"slider": (before, panels[2][0]), "faces": panels, "file": str(dst),
                "mask": None if mask_file is None else str(mask_file), "log": log_line, "seconds": seconds,
                "result": result, "missing": hole[:, :, 0]}

    # -- parts of a request ------------------------------------------------------------------------
    def _model_options(self, label: str, task: str) -> ModelOptions:
        try:
            return self.model_options(label, task)
        except UnknownModel as e:
            raise refuse(str(e)) from None

    def _load(self, label: str, task: str) -> DifFace:
        try:
            return self.model(label, task)
        except (FileNotFoundError, ValueError, OptionError) as e:
            raise refuse(f"{label} cannot be loaded: {e}") from None

    def _restore_pipeline(self, model: DifFace, options: RestoreOptions) -> RestorePipeline:
        """A pipeline for one request; the previous request's detector and background upsampler are reused
        when its model and those options are the same (RestorePipeline.with_options)."""
        last = self._restore_pipe
        if last is not None and last.model is model and last.options.model == options.model:
            pipe = _options(lambda: last.with_options(options))
        else:
            pipe = _options(lambda: RestorePipeline(model, options, model.device))
        self._restore_pipe = pipe
        return pipe

    def _request_dir(self) -> Path:
        """A new folder for one request's files; folders older than KEEP_RESULTS_S are removed."""
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


# -- helpers -----------------------------------------------------------------------------------------
def refuse(message: str) -> gr.Error:
    """A message for the page (it stays until closed), options the library names by field ("`dtype`") written
    as the page labels them; the server logs one line, not a traceback."""
    message = say_options(message, _UI_NAMES)
    log.info("refused: %s", message.splitlines()[0] if message else message)
    return gr.Error(message, duration=None, print_exception=False)


def _integer(value, name: str) -> int:
    if value is None or (isinstance(value, float) and not value.is_integer()):
        raise refuse(f"{name}: expected a whole number, got {value!r}")
    return int(value)


def _sampling(form: SamplingForm, auto: bool) -> SamplingOptions:
    start, start_custom, eta, sampler, nfe, seed = (form.start, form.start_custom, form.eta, form.sampler, form.nfe,
                                                    form.seed)
    if start == "auto" and not auto:
        raise refuse("start step 'auto' is not available in this copy of difface; choose a number")
    if start == "custom":
        start_step: int | str | None = _integer(start_custom, "start step")
    else:
        start_step = "auto" if start == "auto" else None
    return _options(lambda: SamplingOptions(
        start_step=start_step, eta=None if eta is None else float(eta), sampler=sampler,
        nfe=None if sampler == "official" or nfe is None else _integer(nfe, "NFE"),
        seed=SEED if seed is None else _integer(seed, "seed")))


# what the page calls the options an OptionError names (by their difface.config field names)
_UI_NAMES = {"start_step": "start step", "eta": "eta", "nfe": "NFE", "seed": "seed", "upscale": "upscale",
             "sampler": "sampler", "max_pixels": "pixel limit", "device": "device", "dtype": "precision"}
_APP_LIMIT = {"max_pixels": "the app's --max-pixels"}  # the server's limit, set when the app is started


def _options(make: Callable):
    """make() (options or a pipeline), an OptionError turned into a message naming the option as the page does."""
    try:
        return make()
    except OptionError as e:
        raise refuse(e.say(_UI_NAMES)) from None


def _run(task: str, work: Callable[[], ImageResult]) -> ImageResult:
    """work() (a pipeline's in-memory call); a failure becomes one line for the page."""
    try:
        return work()
    except NonFiniteResult as e:
        raise refuse(str(e)) from None
    except OptionError as e:  # the whole-photo detector or background upsampler, built on first use
        what = "background upsampler" if e.option == "bg_upsampler" else "face detector"
        raise refuse(f"the {what} cannot be used: {e.say(_UI_NAMES).split(': ', 1)[-1]}") from None
    except (RuntimeError, ValueError) as e:
        raise refuse(f"{task} failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _write(dst: Path, image: LoadedImage, result: ImageResult) -> None:
    """The result as `difface restore` / `difface inpaint` write it (the one writer, pipeline.files)."""
    save_result(dst, image, result)


def _same_as(command: str, src: Path, options) -> str:
    """The command line that gives the same file (the app's "Same as:" line), from the options; the input and
    the mask are named by their file names (as the page offers them for download)."""
    args = args_from_options(options)
    if "--mask" in args:
        k = args.index("--mask") + 1
        args[k] = Path(args[k]).name
    return shlex.join(["difface", command, src.name, "-o", "out"] + args)


def _missing(src: Path, painted: np.ndarray | None, mask_path: str | None, max_pixels: int) -> np.ndarray | None:
    """The (H, W) float32 {0, 1} mask (1 = missing) of an upload at its size: the painted area (resized nearest)
    and/or the white area of a mask file; None when neither is given (the black pixels are the hole)."""
    painted_any = painted is not None and bool(np.any(painted))
    if not painted_any and not mask_path:
        return None
    hw = _header_size(src, max_pixels)
    missing = np.zeros(hw, bool)
    if painted_any:
        missing |= _resize_nearest(np.asarray(painted, bool), hw)
    if mask_path:
        try:
            missing |= load_mask(Path(mask_path), hw, name=f"mask {Path(mask_path).name}") > 0.5
        except ValueError as e:
            raise refuse(_clean(str(e), Path(mask_path))) from None
    try:  # nothing known, or nothing missing, is refused as `difface inpaint --mask` refuses it
        return load_mask(missing, name=f"{src.name}: mask")
    except ValueError as e:
        raise refuse(str(e)) from None


def _clean(message: str, *paths: Path | None) -> str:
    """A message without the server's temporary folders: files are named as the user uploaded them."""
    for p in paths:
        if p is not None:
            message = message.replace(str(p), p.name)
    return message


def _read(pipe, src: Path) -> LoadedImage:
    """The upload decoded by the pipeline's reader (pixel limit from the header; inpainting: the hole checked)."""
    try:
        return read_input(pipe, src)
    except ImageReadError as e:
        text = _clean(str(e), src)
        if "no missing pixels" in text:
            text += ": paint the missing region with the brush, or upload a mask (white = missing)"
        raise refuse(say_options(text, _APP_LIMIT)) from None


def _decode(src: Path) -> LoadedImage:
    """The upload decoded (its pixel limit already checked from the header by `_header_size`)."""
    try:
        return read_image(src)
    except ImageReadError as e:
        raise refuse(_clean(str(e), src)) from None


def _header_size(src: Path, max_pixels: int) -> tuple[int, int]:
    """(H, W) of an upload, from its header (pixel limit checked), else from decoding it."""
    try:
        size = check_pixels(src, max_pixels)
        if size is None:
            return read_image(src).rgb.shape[:2]
    except ImageReadError as e:
        raise refuse(say_options(_clean(str(e), src), _APP_LIMIT)) from None
    return size[1], size[0]


def _resize_nearest(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if a.shape[:2] == tuple(hw):
        return a
    return resize_nearest(a.astype(np.float32), hw) > 0.5


def _display(rgb: np.ndarray, hw: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 RGB for the page, resized (bicubic) to hw for a side-by-side comparison."""
    if hw is not None and rgb.shape[:2] != tuple(hw):
        rgb = cv2.resize(rgb, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    return to_uint8(rgb)


def payload_path(payload) -> str | None:
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
        path = payload_path(layer)
        if not path:
            continue
        im = read_image(path)
        hit = im.alpha > 0 if im.alpha is not None else im.rgb.mean(axis=2) > 0.5
        painted = hit if painted is None else painted | _resize_nearest(hit, painted.shape)
    return painted


def check_upload(path: str, max_pixels: int) -> str:
    """"" when an upload is an image within the pixel limit, else the reason (the upload named as uploaded)."""
    try:
        _header_size(Path(path), max_pixels)
        read_image(path)
    except (gr.Error, ImageReadError) as e:
        return _clean(getattr(e, "message", None) or str(e), Path(path))
    return ""
