"""The models a web app offers, by menu label, and their loading (no Gradio here: usable without the app's extra).

    models = ModelCatalogue(device="cpu")                 # the named models (difface.config.MODELS) it can load
    label = next(iter(models.restore_models))
    model = models.model(label, "restoration")            # a DifFace, loaded once (DifFace.from_pretrained)
    eta, start, about = models.defaults(label, "restoration")

Every model is loaded through `DifFace.from_pretrained`, as the command line loads it; at most `keep_models`
loaded models are kept per task (the least recently used is freed first). Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from dataclasses import dataclass

from difface.config import DEFAULT_MODEL, MODELS, ModelOptions, OptionError
from difface.core import DifFace, bundled_model_paths
from difface.weights import local_path

# The bundled model of each task: its menu label (difface.config.MODELS)
BUNDLED = {task: MODELS[name].label for task, name in DEFAULT_MODEL.items()}


@dataclass(frozen=True)
class ModelChoice:
    """A model the app offers: a label for the menu and the weights (both None: the bundled model); `model`: the
    name in difface.config.MODELS when it is a named model (its own defaults apply)."""

    label: str
    prior: str | None = None
    estimator: str | None = None
    model: str | None = None


class UnknownModel(ValueError):
    """A menu label the catalogue does not offer; the message lists those it does."""


def named_choice(name: str) -> ModelChoice:
    """The menu entry of a named model of MODELS."""
    e = MODELS[name]
    return ModelChoice(e.label or name, e.prior, e.estimator, model=name)


def _cached(name: str) -> bool:
    return all(local_path(w).is_file() for w in MODELS[name].weights)


def official_models(task: str) -> list[ModelChoice]:
    """The named models of `task` with downloadable weights that are all in the weights cache (never downloaded
    by the app), in the table's order."""
    return [named_choice(n) for n, e in MODELS.items() if e.task == task and not e.bundled and _cached(n)]


def default_models(task: str) -> list[ModelChoice]:
    """The menu of `task`, from difface.config.MODELS: the task's default model (the bundled one) first, then the
    other bundled ones and those whose weights are in the weights cache, in the table's order."""
    names = sorted((n for n, e in MODELS.items() if e.task == task and (e.bundled or _cached(n))),
                   key=lambda n: n != DEFAULT_MODEL[task])
    return [named_choice(n) for n in names]


def autostart_available() -> bool:
    """True when `--start-step auto` exists in this copy of difface (difface.autostart)."""
    try:
        return importlib.util.find_spec("difface.autostart") is not None
    except (ImportError, ValueError):
        return False


class ModelCatalogue:
    """The models offered per task (menu label -> ModelChoice) and those loaded (device, precision and backend
    as given). restore_models / inpaint_models: the choices (None: `default_models`). The first usable model of
    each task is loaded at construction, dropping those before it that fail; ValueError when no restoration model
    is left; `inpaint_unavailable` says why inpainting is off ("" when it is on)."""

    def __init__(self, device: str = "auto", dtype: str = "fp32", backend: str = "torch",
                 restore_models: list[ModelChoice] | None = None, inpaint_models: list[ModelChoice] | None = None,
                 keep_models: int = 2):
        # OptionError for a bad dtype or a missing backend, before anything loads
        ModelOptions(device=device, dtype=dtype, backend=backend)
        self.device, self.dtype, self.backend, self.keep_models = device, dtype, backend, keep_models
        self.restore_models = {m.label: m for m in (default_models("restoration") if restore_models is None
                                                    else restore_models)}
        self.inpaint_models = {m.label: m for m in (default_models("inpainting") if inpaint_models is None
                                                    else inpaint_models)}
        self._models: OrderedDict[tuple, DifFace] = OrderedDict()
        self._lock = threading.RLock()
        why = self._check_models("restoration")
        if not self.restore_models:
            raise ValueError(f"no restoration model to serve: {why}")
        why = self._check_models("inpainting")
        self.inpaint_unavailable = "" if self.inpaint_models else why

    def choices(self, task: str) -> dict[str, ModelChoice]:
        """The menu of `task` ("restoration" or "inpainting"): label -> ModelChoice, in menu order."""
        return self.restore_models if task == "restoration" else self.inpaint_models

    def _check_models(self, task: str) -> str:
        """Drop the bundled model when it is not installed, load the first usable model of `task` (dropping
        those before it that fail); returns the reasons models were dropped."""
        choices = self.choices(task)
        reasons = []
        for label, m in list(choices.items()):
            if m.prior is None and m.estimator is None:
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

    def model_options(self, label: str, task: str) -> ModelOptions:
        """The ModelOptions of a menu label (UnknownModel for a label not offered)."""
        choices = self.choices(task)
        if label not in choices:
            raise UnknownModel(f"unknown model {label!r}; choose one of: {', '.join(choices)}")
        m = choices[label]
        if m.model is not None and m.model != DEFAULT_MODEL[task]:  # the default: the options' own default (None)
            return ModelOptions(device=self.device, dtype=self.dtype, backend=self.backend, model=m.model)
        return ModelOptions(m.prior, m.estimator, device=self.device, dtype=self.dtype, backend=self.backend)

    def model(self, label: str, task: str) -> DifFace:
        """The loaded model of a menu label (loaded on first use; ValueError/FileNotFoundError if it cannot)."""
        mo = self.model_options(label, task)
        key = (task, mo.model, mo.prior, mo.estimator)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            model = DifFace.from_pretrained(mo.model, prior=mo.prior, estimator=mo.estimator, task=task,
                                            device=mo.device, dtype=mo.dtype, backend=mo.backend, steps=mo.steps)
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
