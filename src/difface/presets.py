"""`--preset fast|official`: the settings a preset stands for on this machine, and the line that says so.

"official" is the paper's path and today's default: torch eager fp32, the official respaced loop.
"fast" is the fastest combination measured to meet the quality gates (docs/speed.md, "Quality of `--preset
fast`": PSNR-Y/SSIM-Y vs the truth no lower than the official loop's, NIQE within 0.3, at eta 0 also 35 dB to its
result; bundled model, 100 held-out validation faces):
  - sampler: decided once the model is loaded (difface.fastplan), and said then in a second line: per task,
    kind of start and eta, the few-step setting measured to keep the official loop's quality (the paper's
    default t = 400, eta 0.5: ddim_extrap with 2 evaluations), on the schedule fitted for this prior where one is
    stored (the bundled prior: FAST_SAMPLER
    with FAST_NFE evaluations from t = 400 at eta 0, docs/results/fast_preset_eval6.json: 41.8 dB to the
    official loop, NIQE 9.38 against 9.05), else on the generic schedule (log-SNR positions of the linear
    1000-step chain, difface.schedules) mapped to the start, at fixed or automatic starts; the official loop
    where nothing was measured or nothing met the gates, for a prior on another noise schedule, and where the
    official loop makes no more evaluations from the start;
  - networks: on a CPU with bf16 instructions (AVX512_BF16 / AMX) torch bf16 channels-last (2.0x per
    forward there); on a CPU without them (bf16 is emulated, ~10x slower) onnxruntime fp32 when installed
    (1.3-1.9x on the 512 UNet), else torch fp32 channels-last (1.18x, within 1e-4 of eager); on CUDA torch
    fp32 (GPU precisions are not measured yet: scripts/benchmarks/gpu_check.sh).
Options given explicitly replace the preset's parts (`explicit`), and the line names them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields

import torch

from difface.backends import RUNTIMES, available_backends
from difface.config import (
    DEFAULT_NFE,
    DEFAULT_RUN_PRESET,
    MODELS,
    ModelOptions,
    PhotoOptions,
    SamplingOptions,
)
from difface.device import cpu_has_native_bf16
from difface.fastplan import MEASURED_FALLBACK

FAST_SAMPLER = "dpmpp2m"
FAST_NFE = 6
FALLBACK = MEASURED_FALLBACK  # without explicit sampling options: difface.fastplan decides once the model is loaded
# what a preset sets: option name -> its official value (the defaults of difface.config's options, read from the
# classes: no options object is made at import)
OFFICIAL_VALUES = {name: {f.name: f.default for f in fields(cls)}[name]
                   for cls, names in ((ModelOptions, ("backend", "dtype", "fast")),
                                      (SamplingOptions, ("sampler", "nfe", "schedule")),
                                      (PhotoOptions, ("bg_upsampler",))) for name in names}


@dataclass(frozen=True)
class Machine:
    """What the fast preset depends on: the device kind, CPU bf16 instructions, installed backends."""

    device: str = "cpu"  # "cpu" or "cuda" (mps: as cpu without bf16)
    native_bf16: bool | None = None
    backends: tuple[str, ...] = ("torch",)

    @classmethod
    def detect(cls, device: str = "auto") -> Machine:
        if device == "auto":
            kind = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            kind = "cuda" if device.startswith("cuda") else "cpu"
        return cls(kind, cpu_has_native_bf16(), tuple(available_backends()))


@dataclass(frozen=True)
class Resolved:
    """The options of a preset after the explicit ones, plus the fallback of schedule "fitted" and the line."""

    options: dict
    fallback: str | None
    line: str | None


# (condition on the machine, the networks' settings: backend / dtype / fast, why): the first row that holds applies
NetworkRule = tuple[Callable[[Machine], bool], Mapping[str, object], str]


@dataclass(frozen=True)
class RunPreset:
    """One `--preset`: networks, rows of (condition, settings, why) per machine kind, the first that holds is used
    (none: the official networks and nothing said); settings: the other options it sets (keys of OFFICIAL_VALUES)."""

    networks: tuple[NetworkRule, ...] = ()
    settings: Mapping[str, object] = field(default_factory=dict)


FAST_NETWORKS: tuple[NetworkRule, ...] = (
    (lambda m: m.device == "cuda", {"backend": "torch", "dtype": "fp32", "fast": False},
     "CUDA: GPU precisions not measured yet"),
    (lambda m: bool(m.native_bf16), {"backend": "torch", "dtype": "bf16", "fast": True},
     "this CPU has bf16 instructions"),
    (lambda m: "onnxruntime" in m.backends, {"backend": "onnxruntime", "dtype": "fp32", "fast": False},
     "no bf16 instructions on this CPU"),
    (lambda m: True, {"backend": "torch", "dtype": "fp32", "fast": True},
     "no bf16 instructions on this CPU, onnxruntime not installed"),
)
# Every run preset: adding one is one entry here (`--preset` choices and difface.config.RUN_PRESETS read the table).
RUN_PRESET_TABLE: dict[str, RunPreset] = {
    DEFAULT_RUN_PRESET: RunPreset(),
    "fast": RunPreset(FAST_NETWORKS, {"sampler": FAST_SAMPLER, "nfe": FAST_NFE, "schedule": "fitted",
                                      "bg_upsampler": "lanczos"}),
}


def resolve(name: str, explicit: dict, machine: Machine, upscale: float | None = None) -> Resolved:
    """Options (keys of OFFICIAL_VALUES) for preset `name` with `explicit` (option -> value given on the command line,
    None entries ignored) replacing its parts. ValueError for an unknown preset. line: None for "official"
    without explicit options that differ (today's default path, printed as before). upscale: the run's
    --upscale (only for the line). The fast preset upscales the background with Lanczos (at --upscale 1: keeps
    it as it is) unless --bg-upsampler is given: Real-ESRGAN x2 of a 1.1 MP photo costs about as much as 4 faces
    of the fast preset, and no backend makes it cheaper on a CPU (docs/speed-details.md, whole photos)."""
    if name not in RUN_PRESET_TABLE:
        raise ValueError(f"`preset` must be one of {', '.join(RUN_PRESET_TABLE)}, got {name!r}")
    preset = RUN_PRESET_TABLE[name]
    given = {k: v for k, v in explicit.items() if v is not None and k in OFFICIAL_VALUES}
    if not preset.networks:
        return Resolved({**OFFICIAL_VALUES, **preset.settings, **given}, None, None)
    nets, why = next((dict(settings), why) for holds, settings, why in preset.networks if holds(machine))
    lanczos = preset.settings.get("bg_upsampler") == "lanczos" and "bg_upsampler" not in given
    opts = {**OFFICIAL_VALUES, **nets, **preset.settings}
    if "backend" in given and "fast" not in given:  # channels-last is a torch option, and pays on a CPU
        opts["fast"] = given["backend"] == "torch" and machine.device == "cpu"
    if "backend" in given and "dtype" not in given and opts["dtype"] == "bf16" and \
            RUNTIMES[given["backend"]].refusal("bf16") is not None:
        opts["dtype"] = "fp32"  # onnxruntime runs fp32 on a CPU
    if given.get("sampler") == "official":
        opts.update(nfe=None, schedule="even")
    opts.update(given)
    fallback = FALLBACK if opts["schedule"] == "fitted" and not {"nfe", "sampler", "schedule"} & set(given) else None
    backend = opts["backend"] + (f" {opts['dtype']}" + (" channels-last" if opts["fast"] else ""))
    if opts["sampler"] == "official":
        steps = "official loop"
    elif fallback:
        steps = "the sampler measured for the model, start and eta (said once the model is loaded)"
    elif opts["schedule"] == "fitted":
        steps = f"{opts['sampler']} {opts['nfe'] or DEFAULT_NFE} NFE (fitted schedule)"
    else:
        steps = f"{opts['sampler']} {opts['nfe'] or DEFAULT_NFE} NFE (even schedule)"
    line = f"preset {name}: backend {backend} ({why}), {steps}"
    if lanczos:
        line += (", background kept as it is (`upscale` 1)" if upscale == 1 else ", background Lanczos") + \
            " (Real-ESRGAN x2 costs about 20 UNet forwards a megapixel: `bg_upsampler` realesrgan)"
    if given:
        line += "; given explicitly: " + ", ".join(f"`{k}`" if v is True else f"`{k}` {v}" for k, v in given.items())
    return Resolved(opts, fallback, line)


def resolve_args(args) -> Resolved:
    """The preset's options for parsed arguments (argparse.Namespace, whose preset-controlled options are None when
    not given): `resolve` on this machine, and for the bundled model on a CPU its backend (bundled_cpu_backend);
    logs the preset's line. Reads the arguments and never writes them: the caller builds its options from them
    with these values (difface.commands.options)."""
    explicit = {k: getattr(args, k, None) for k in OFFICIAL_VALUES}
    name = getattr(args, "preset", None) or DEFAULT_RUN_PRESET
    preset = RUN_PRESET_TABLE.get(name)
    machine = Machine.detect(getattr(args, "device", "auto")) if preset and preset.networks else Machine()
    res = resolve(name, explicit, machine, upscale=getattr(args, "upscale", None))
    options = dict(res.options)
    prior, estimator = getattr(args, "prior", None), getattr(args, "estimator", None)
    named = MODELS.get(getattr(args, "model", None) or "")
    if named is not None and not named.bundled:  # a named model's weights, as if given as files
        prior, estimator = named.prior, named.estimator
    if not preset.networks and explicit.get("backend") is None and bundled_cpu_backend(
            prior, estimator, device=getattr(args, "device", "auto"),
            dtype=explicit.get("dtype"), fast=explicit.get("fast"), compile=getattr(args, "compile", False),
            inpainting=hasattr(args, "mask")):
        options["backend"] = BUNDLED_CPU_BACKEND
        logging.getLogger("difface").info("%s", BUNDLED_CPU_LINE)
    if res.line:
        logging.getLogger("difface").info("%s", res.line)
    return Resolved(options, res.fallback, res.line)


# The bundled small model's restorations on a CPU run through onnxruntime when it is installed and no backend,
# precision or torch option is given: under the same threads it is the fastest backend measured for this
# model, and its results stay within float32 rounding of torch's (docs/speed-details.md, "On a busy machine").
# The Python API keeps torch unless asked; `--backend torch` gives the exact reference.
BUNDLED_CPU_BACKEND = "onnxruntime"
BUNDLED_CPU_LINE = ("backend onnxruntime for the bundled model on a CPU (results within 1e-6 of torch fp32; "
                    "`backend` torch for the exact reference)")


def bundled_cpu_backend(prior: str | None, estimator: str | None, *, device: str = "auto", dtype: str | None = None,
                       fast: bool | None = None, compile: bool = False, inpainting: bool = False) -> str | None:
    """BUNDLED_CPU_BACKEND when a command line with these options runs the bundled restoration model on a CPU with
    no precision other than fp32, no channels-last, no compile, and that backend is installed; else None (torch)."""
    if prior is not None or estimator is not None or inpainting or dtype not in (None, "fp32") or fast or compile:
        return None
    if device == "auto":
        mps = getattr(torch.backends, "mps", None)
        on_cpu = not torch.cuda.is_available() and not (mps is not None and mps.is_available())
    else:
        on_cpu = device == "cpu"
    return BUNDLED_CPU_BACKEND if on_cpu and BUNDLED_CPU_BACKEND in available_backends() else None


def app_networks(name: str, backend: str | None, dtype: str | None, device: str = "auto") -> tuple[str, str]:
    """(backend, dtype) of `difface app --preset NAME`: the preset's networks (channels-last and the sampler are
    not options of the app), the explicit ones replacing them; logs the preset's line for "fast"."""
    preset = RUN_PRESET_TABLE.get(name)
    machine = Machine.detect(device) if preset and preset.networks else Machine()
    res = resolve(name, {"backend": backend, "dtype": dtype}, machine)
    if res.line:
        nets = f"backend {res.options['backend']} {res.options['dtype']}"
        logging.getLogger("difface").info("preset %s: %s (the sampler is chosen on the page)", name, nets)
    return res.options["backend"], res.options["dtype"]
