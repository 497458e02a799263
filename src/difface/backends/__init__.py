"""Runtime backends for DifFace's network forwards: torch (eager / bf16 / channels-last / compile),
onnxruntime and openvino.

`check_backend(name)` says, before any work, whether a backend can run here (BackendUnavailable names
the pip command otherwise); `backend_network(net, backend, ...)` returns an `nn.Module` stand-in whose
forward runs the network's cached ONNX graph (difface.backends.onnx_export) through that runtime, so
`difface.core.DifFace` and the samplers stay as they are. Tensors cross as float32 numpy arrays on the
CPU; outputs come back as float32 tensors on the input's device.

Precision: onnxruntime runs the fp32 graph (an fp16 graph on CUDA with dtype "fp16"); openvino runs the
fp32 graph with its inference precision hint set from the dtype (bf16 where the CPU supports it: OpenVINO
falls back to fp32 where it does not, and `describe()` says which precision it runs).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from difface import weights
from difface.backends.onnx_export import cached_export
from difface.threads import passive as threads_wait_passively

# onnxruntime execution providers, most preferred first, used when present (DIFFACE_ORT_PROVIDERS overrides)
ORT_PREFERENCE = ("CUDAExecutionProvider", "CoreMLExecutionProvider", "DmlExecutionProvider", "CPUExecutionProvider")


class BackendUnavailable(RuntimeError):
    """A backend that is not installed or cannot run here; the message says how to get it."""


def ort_providers(device: torch.device | str = "cpu") -> list[str]:
    """onnxruntime execution providers to use: DIFFACE_ORT_PROVIDERS (comma list) or the preferred ones present
    (GPU providers only when `device` is not the CPU)."""
    import onnxruntime as ort

    present = ort.get_available_providers()
    env = os.environ.get("DIFFACE_ORT_PROVIDERS")
    if env:
        wanted = [p.strip() for p in env.split(",") if p.strip()]
        missing = [p for p in wanted if p not in present]
        if missing:
            raise BackendUnavailable(f"DIFFACE_ORT_PROVIDERS names {', '.join(missing)}, not present in this "
                                     f"onnxruntime ({', '.join(present)}); for CUDA: pip install onnxruntime-gpu")
        return wanted
    cpu_only = torch.device(device).type == "cpu"
    return [p for p in ORT_PREFERENCE if p in present and (not cpu_only or p == "CPUExecutionProvider")]


Runner = Callable[[Sequence[np.ndarray]], np.ndarray]


def ort_runner(path: str | os.PathLike, *, device: torch.device | str = "cpu", threads: int | None = None,
               providers: Sequence[str] | None = None) -> tuple[Runner, str]:
    """(run(inputs) -> first output, description) for an onnxruntime session on the graph at `path`."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or torch.get_num_threads())
    opts.inter_op_num_threads = 1
    if threads_wait_passively():  # the OpenMP policy in force (difface.threads): waiting threads sleep
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    provs = list(providers) if providers is not None else ort_providers(device)
    sess = ort.InferenceSession(str(path), opts, providers=provs)
    names = [i.name for i in sess.get_inputs()]

    def run(inputs: Sequence[np.ndarray]) -> np.ndarray:
        return sess.run(None, dict(zip(names, inputs, strict=True)))[0]

    return run, f"onnxruntime {ort.__version__} ({', '.join(sess.get_providers())})"


def ov_runner(path: str | os.PathLike, *, dtype: str = "fp32", threads: int | None = None) -> tuple[Runner, str]:
    """(run(inputs) -> first output, description) for an OpenVINO CPU model compiled from the graph at `path`.

    dtype sets the inference precision hint: fp32 -> f32, bf16 -> bf16, fp16 -> f16."""
    import openvino as ov

    core = ov.Core()
    hint = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}[dtype]
    config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    actual = str(compiled.get_property("INFERENCE_PRECISION_HINT"))

    def run(inputs: Sequence[np.ndarray]) -> np.ndarray:
        res = request.infer(list(inputs))
        return np.array(res[compiled.output(0)])

    return run, f"openvino {ov.__version__} (CPU, inference precision {actual})"


# (ONNX graph path, dtype, device) -> (run(inputs) -> first output, description)
RunnerBuilder = Callable[[Path, str, "torch.device | str"], tuple[Runner, str]]


def _ort_build(path: Path, dtype: str, device: torch.device | str) -> tuple[Runner, str]:
    return ort_runner(path, device=device)


def _ov_build(path: Path, dtype: str, device: torch.device | str) -> tuple[Runner, str]:
    return ov_runner(path, dtype=dtype)


@dataclass(frozen=True)
class Runtime:
    """One place the network forwards can run (the `backend` option names it).

    build: the runner of its exported ONNX graph (None: torch runs the module itself, so channels-last and
    compile apply); module: the import it needs (None: nothing beyond torch); pip: how to install it;
    dtypes: the precisions it runs on any device (the fp32 graph); gpu_dtypes: precisions it runs only when the
    tensors are on a GPU, from a graph exported at that precision; refusals: precision -> why it is refused,
    written after "`backend` " (field names in backticks, difface.config.say_options).
    """

    build: RunnerBuilder | None
    module: str | None = None
    pip: str = ""
    dtypes: tuple[str, ...] = ("fp32", "bf16", "fp16")
    gpu_dtypes: tuple[str, ...] = ()
    refusals: Mapping[str, str] = field(default_factory=dict)

    def refusal(self, dtype: str, device: torch.device | str | None = None) -> str | None:
        """Why this runtime cannot run `dtype` (on `device`; None: on some device), or None when it can."""
        if dtype in self.dtypes or (dtype in self.gpu_dtypes and (device is None
                                                                 or torch.device(device).type != "cpu")):
            return None
        return self.refusals.get(dtype, f"{dtype} is not a precision it runs")


# Where the network forwards can run: adding one is a runner builder and an entry here.
RUNTIMES: dict[str, Runtime] = {
    "torch": Runtime(build=None),
    "onnxruntime": Runtime(
        _ort_build, "onnxruntime", "pip install onnxruntime  (NVIDIA GPUs: pip install onnxruntime-gpu)",
        dtypes=("fp32",), gpu_dtypes=("fp16",),
        refusals={"fp16": "onnxruntime `dtype` fp16 needs a GPU (CUDA execution provider); use fp32 on a CPU",
                  "bf16": "onnxruntime runs fp32 (or fp16 on a GPU); for bf16 use `backend` torch or openvino"}),
    "openvino": Runtime(_ov_build, "openvino", "pip install openvino  (or: pip install 'difface[openvino]')"),
}
# the names (difface.config re-exports this tuple as BACKEND_NAMES: the table owns it)
BACKENDS = tuple(RUNTIMES)


def check_backend(name: str) -> None:
    """Raise ValueError for an unknown backend, BackendUnavailable (with the pip command) for a missing one."""
    if name not in RUNTIMES:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(RUNTIMES)}")
    rt = RUNTIMES[name]
    if rt.module is None:
        return
    try:
        importlib.import_module(rt.module)
    except ImportError as e:
        raise BackendUnavailable(f"the {name} backend is not installed here ({e}): {rt.pip}") from None


def available_backends() -> list[str]:
    """The backends that can run here, in table order."""
    out = []
    for b in RUNTIMES:
        try:
            check_backend(b)
        except BackendUnavailable:
            continue
        out.append(b)
    return out


class RuntimeNet(nn.Module):
    """An `nn.Module` stand-in for a network whose forward runs elsewhere (onnxruntime, openvino).

    forward(x (B, C, S, S) float, *ints (B,)) -> (B, C_out, S, S) float32 on x's device. `.config` is the
    original network's; one empty parameter gives `.parameters()` / `.device` something to report.
    """

    def __init__(self, run: Runner, config, description: str, input_dtype: np.dtype = np.float32):
        super().__init__()
        self._run, self.config, self.description, self._dtype = run, config, description, input_dtype
        self.anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        feeds = [x.detach().float().cpu().numpy().astype(self._dtype, copy=False)]
        feeds += [r.detach().cpu().numpy().astype(np.int64) for r in rest]
        out = self._run(feeds)
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(self.anchor.device)

    def extra_repr(self) -> str:
        return self.description


def backend_network(net: nn.Module, backend: str, *, dtype: str = "fp32", device: torch.device | str = "cpu",
                    source: str | os.PathLike | None = None, image_size: int | None = None,
                    cache_root: str | os.PathLike | None = None) -> nn.Module:
    """`net` running through `backend` ("torch": net itself). The graph comes from the export cache
    (exported on first use; `source`: the weights file, for the cache key)."""
    check_backend(backend)
    rt = RUNTIMES[backend]
    if rt.build is None:
        return net
    why = rt.refusal(dtype, device)
    if why:
        raise BackendUnavailable(f"`backend` {why}")
    graph_dtype = dtype if dtype in rt.gpu_dtypes else "fp32"
    path, _ = cached_export(net, source=source, dtype=graph_dtype, image_size=image_size, root=cache_root)
    run, desc = rt.build(path, dtype, device)
    stand_in = RuntimeNet(run, net.config, desc, np.float16 if graph_dtype == "fp16" else np.float32)
    return stand_in.to(device)


def source_file(name_or_path: str | os.PathLike | None) -> Path | None:
    """The local file of a weights name or path, when it is there (None otherwise)."""
    if name_or_path is None:
        return None
    try:
        return weights.resolve(name_or_path, allow_download=False)
    except (OSError, KeyError):
        return None


__all__ = ["BACKENDS", "RUNTIMES", "BackendUnavailable", "Runtime", "RuntimeNet",
           "available_backends", "backend_network", "check_backend",
           "ort_providers", "ort_runner", "ov_runner", "source_file"]

