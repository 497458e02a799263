"""Device and dtype selection at the edge of the program (core code takes them from its inputs)."""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from difface import threads
from difface.names import DTYPE_NAMES

DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16)))  # precision name -> dtype


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 in hardware (AVX512_BF16 or AMX-BF16 flags, Linux /proc/cpuinfo);
    None where that cannot be read. Without it bf16 matmuls are emulated: about 10-20x slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return None
    return None


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps if available, else cpu; otherwise the named device.

    Raises ValueError saying why, and what would work, when the named device is not usable here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device: {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "this PyTorch build has no CUDA support" if torch.version.cuda is None else \
                "PyTorch sees no CUDA device (no NVIDIA GPU or driver)"
            raise ValueError(f"--device {name}: {build}; use --device cpu (or auto), or run on a machine with an "
                             "NVIDIA GPU and a CUDA build of PyTorch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ValueError(f"--device {name}: the Apple MPS backend is not available here (it needs an Apple "
                             "silicon Mac with a recent macOS); use --device cpu (or auto)")
    elif dev.type != "cpu":
        raise ValueError(f"--device {name}: unsupported device type; use auto, cpu, cuda, cuda:N or mps")
    return dev


def set_cpu_threads(requested: int = threads.AUTO) -> str:
    """Set torch's CPU threads for a run to `requested`, or (0) to the count difface.threads.choose finds (the
    cores not busy with other work, or the user's OMP_NUM_THREADS); returns the line that says so. The
    onnxruntime and OpenVINO runners take the same count (difface.backends)."""
    choice = threads.choose(requested)
    torch.set_num_threads(choice.threads)
    return choice.line()


@contextlib.contextmanager
def kept_threads():
    """torch's CPU thread count as it was before the block (a command run inside another program leaves it)."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast context for reduced precision; a no-op for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class ChannelsLast(nn.Module):
    """A network fed channels-last inputs; `.config` of the wrapped network stays reachable."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.config = getattr(net, "config", None)

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last), *args).contiguous()


def fast_module(net: nn.Module, *, channels_last: bool = False, compile: bool = False) -> nn.Module:
    """A faster stand-in for `net` with the same parameters; `net` itself is left as it was.

    channels_last: a copy of the network in channels-last memory layout, fed channels-last inputs (same
    outputs within float rounding, faster convolutions on CPU). compile: `torch.compile` with weight
    freezing for inference (set per call, not process-wide; minutes to compile on a CPU).
    """
    out = net
    if channels_last:
        out = ChannelsLast(copy.deepcopy(net).to(memory_format=torch.channels_last))
    if compile:
        out = torch.compile(out, options={"freezing": True})
    return out
