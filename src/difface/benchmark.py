"""Speed and memory of DifFace's networks under different settings, measured in one process.

Every run measures the eager fp32 setting first, so every speed-up is a ratio within the same run
(machines drift by ~10% between runs). Speed does not depend on the weights: networks are filled
with the deterministic filler unless weights are given.
"""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from difface import models
from difface.backends import RUNTIMES, BackendUnavailable, backend_network, check_backend
from difface.device import DTYPES, autocast, fast_module


@dataclass(frozen=True)
class Setting:
    dtype: str = "fp32"
    batch: int = 1
    channels_last: bool = False
    compile: bool = False

    @property
    def label(self) -> str:
        parts = [self.dtype, f"b{self.batch}"]
        parts += ["channels_last"] if self.channels_last else []
        parts += ["compile"] if self.compile else []
        return "+".join(parts)


@dataclass
class Result:
    setting: str
    batch: int
    step_s: float  # one prior evaluation, per batch
    step_per_face_s: float
    estimator_s: float
    compile_s: float
    peak_mem_mb: float
    max_abs_diff_vs_fp32: float | None = None
    speedup_vs_eager_fp32: float | None = None

    def face_seconds(self, nfe: int) -> float:
        """Estimated seconds per face for one estimator pass plus `nfe` prior evaluations."""
        return (self.estimator_s + nfe * self.step_s) / self.batch


def _time(fn: Callable[[], torch.Tensor], device: torch.device, reps: int) -> float:
    """Median seconds of `fn` over `reps` runs (after one warm-up call)."""
    fn()
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (Linux: KiB)


def _measure(prior, estimator, s: Setting, device: torch.device, reps: int, size: int):
    """(prior output, prior step s, estimator s, compile s) for one setting."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(s.batch, 3, size, size, generator=g) * 2 - 1).to(device)
    t = torch.full((s.batch,), 396, dtype=torch.long, device=device)
    net_p = fast_module(prior, channels_last=s.channels_last, compile=s.compile)
    net_e = fast_module(estimator, channels_last=s.channels_last, compile=s.compile)
    dt = DTYPES[s.dtype]

    def run_prior() -> torch.Tensor:
        with autocast(device, dt):
            return net_p(x, t)

    def run_est() -> torch.Tensor:
        with autocast(device, dt):
            return net_e((x + 1) / 2)

    compile_s = 0.0
    with torch.inference_mode():
        if s.compile:
            t0 = time.perf_counter()
            run_prior()
            run_est()
            compile_s = time.perf_counter() - t0
        out = run_prior().float()
        step = _time(run_prior, device, reps)
        est = _time(run_est, device, reps)
    return out, step, est, compile_s


def benchmark(
    prior_name: str = "unet_ffhq512",
    estimator_name: str = "swinir_restoration512",
    settings: list[Setting] | None = None,
    *,
    device: torch.device | str = "cpu",
    reps: int = 3,
    prior: torch.nn.Module | None = None,
    estimator: torch.nn.Module | None = None,
    log: Callable[[str], None] = print,
) -> list[Result]:
    """Measure each setting (eager fp32 at batch 1 is always measured first, as the baseline)."""
    device = torch.device(device)
    prior = prior if prior is not None else models.fill_deterministic(models.build(prior_name))
    estimator = estimator if estimator is not None else models.fill_deterministic(models.build(estimator_name))
    prior, estimator = prior.to(device).eval(), estimator.to(device).eval()
    size = prior.config.image_size
    base = Setting()
    todo = [base] + [s for s in (settings or []) if s != base]
    results: list[Result] = []
    ref_out: dict[int, torch.Tensor] = {}
    for s in todo:
        out, step, est, compile_s = _measure(prior, estimator, s, device, reps, size)
        if s.channels_last:  # restore the default layout for the next setting
            prior.to(memory_format=torch.contiguous_format)
            estimator.to(memory_format=torch.contiguous_format)
        r = Result(s.label, s.batch, step, step / s.batch, est, compile_s, _peak_mb(device))
        if s.batch in ref_out:
            r.max_abs_diff_vs_fp32 = float((out - ref_out[s.batch]).abs().max())
        elif s.dtype == "fp32" and not s.compile and not s.channels_last:
            ref_out[s.batch] = out
        r.speedup_vs_eager_fp32 = results[0].step_per_face_s / r.step_per_face_s if results else 1.0
        results.append(r)
        log(f"{r.setting:32} step {r.step_s:8.3f} s  per face {r.step_per_face_s:8.3f} s  "
            f"estimator {r.estimator_s:7.3f} s  x{r.speedup_vs_eager_fp32:.2f}")
    return results


def results_table(results: list[Result], nfe: int = 100) -> str:
    head = (f"{'setting':32} {'step s':>9} {'step/face s':>12} {'estim. s':>9} {'face s':>9} "
            f"{'speed-up':>9} {'max|d|':>9} {'compile s':>10} {'peak MB':>9}")
    rows = [head, "-" * len(head)]
    for r in results:
        d = "" if r.max_abs_diff_vs_fp32 is None else f"{r.max_abs_diff_vs_fp32:.1e}"
        rows.append(
            f"{r.setting:32} {r.step_s:9.3f} {r.step_per_face_s:12.3f} {r.estimator_s:9.3f} "
            f"{r.face_seconds(nfe):9.1f} {r.speedup_vs_eager_fp32:8.2f}x {d:>9} {r.compile_s:10.1f} "
            f"{r.peak_mem_mb:9.0f}"
        )
    rows.append(f"(face s = estimator + {nfe} prior evaluations, per face)")
    return "\n".join(rows)


def as_dicts(results: list[Result]) -> list[dict]:
    return [asdict(r) for r in results]


# -- backends x precisions, interleaved ------------------------------------------------------------------
BACKEND_SETTINGS = (("torch", "fp32", False), ("torch", "bf16", False), ("torch", "bf16", True),
                    ("onnxruntime", "fp32", False), ("openvino", "fp32", False), ("openvino", "bf16", False))


@dataclass
class BackendResult:
    """One backend x precision: min seconds of one UNet and one estimator forward at batch `batch`, the peak
    RSS while it set up and ran its first forwards, and the largest |difference| of the UNet output from
    eager fp32 (same input, same weights)."""

    backend: str
    dtype: str
    channels_last: bool
    batch: int
    unet_s: float
    estimator_s: float
    unet_vs_eager: float
    estimator_vs_eager: float
    max_abs_diff_vs_fp32: float | None
    setup_s: float
    peak_rss_mb: float
    runtime: str = ""

    @property
    def label(self) -> str:
        return f"{self.backend} {self.dtype}" + (" channels-last" if self.channels_last else "")


def _rss_mb(field: str = "VmHWM") -> float:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS counter of this process (Linux; elsewhere the process peak is reported)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def benchmark_backends(
    prior_name: str = "unet_ffhq512",
    estimator_name: str = "swinir_restoration512",
    settings: list[tuple[str, str, bool]] | None = None,
    *,
    batch: int = 1,
    rounds: int = 3,
    skip_unavailable: bool = True,
    log: Callable[[str], None] = print,
) -> list[BackendResult]:
    """Every (backend, dtype, channels_last) of `settings` (default BACKEND_SETTINGS; eager torch fp32 always
    first) on the CPU: set up each (ONNX export through the cache, session, compilation) and run its first
    forwards, then time `rounds` rounds in which every setting runs one UNet and one estimator forward in
    turn (interleaved: load swings hit all settings alike); each setting's figure is its minimum."""
    device = torch.device("cpu")
    prior = models.fill_deterministic(models.build(prior_name)).eval()
    estimator = models.fill_deterministic(models.build(estimator_name)).eval()
    size = prior.config.image_size
    est_in = 4 if isinstance(estimator.config, models.LamaConfig) else 3
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    y = torch.rand(batch, est_in, size, size, generator=g)
    t = torch.full((batch,), 396, dtype=torch.long)
    base = ("torch", "fp32", False)
    todo = [base] + [s for s in (settings or BACKEND_SETTINGS) if s != base]
    runs: list[tuple[tuple[str, str, bool], Callable, Callable, float, float, str, torch.Tensor]] = []
    for backend, dtype, cl in todo:
        try:
            check_backend(backend)
        except BackendUnavailable as e:
            if not skip_unavailable:
                raise
            log(f"skipped {backend}: {e}")
            continue
        _reset_peak_rss()
        t0 = time.perf_counter()
        own = RUNTIMES[backend].build is None  # torch runs the modules themselves
        if own:
            net_p, net_e = fast_module(prior, channels_last=cl), fast_module(estimator, channels_last=cl)
            runtime = f"torch {torch.__version__}"
        else:
            net_p = backend_network(prior, backend, dtype=dtype, image_size=size)
            net_e = backend_network(estimator, backend, dtype=dtype, image_size=size)
            runtime = net_p.description
        dt = DTYPES[dtype] if own else torch.float32

        def run_p(net=net_p, dt=dt) -> torch.Tensor:
            with torch.inference_mode(), autocast(device, dt):
                return net(x, t).float()

        def run_e(net=net_e, dt=dt) -> torch.Tensor:
            with torch.inference_mode(), autocast(device, dt):
                return net(y).float()

        out = run_p()
        run_e()
        setup = time.perf_counter() - t0
        runs.append(((backend, dtype, cl), run_p, run_e, setup, _rss_mb(), runtime, out))
        log(f"set up {backend} {dtype}{' channels-last' if cl else ''}: {setup:.1f} s ({runtime})")
    times = {i: ([], []) for i in range(len(runs))}
    for r in range(rounds):
        for i, (_, run_p, run_e, *_rest) in enumerate(runs):
            t0 = time.perf_counter()
            run_p()
            t1 = time.perf_counter()
            run_e()
            times[i][0].append(t1 - t0)
            times[i][1].append(time.perf_counter() - t1)
        log(f"round {r + 1} of {rounds} done")
    ref = runs[0][6]
    results = []
    for i, ((backend, dtype, cl), _, _, setup, rss, runtime, out) in enumerate(runs):
        up, ue = min(times[i][0]), min(times[i][1])
        results.append(BackendResult(backend, dtype, cl, batch, up, ue, 0.0, 0.0,
                                     None if i == 0 else float((out - ref).abs().max()), setup, rss, runtime))
    for r in results:
        r.unet_vs_eager, r.estimator_vs_eager = results[0].unet_s / r.unet_s, results[0].estimator_s / r.estimator_s
    return results


def backend_table(results: list[BackendResult]) -> str:
    """Markdown table of benchmark_backends results."""
    rows = ["| backend, precision | UNet forward (s) | vs eager fp32 | estimator forward (s) | vs eager fp32 | "
            "max abs diff of the UNet output vs eager fp32 | set-up (s) | peak RSS (MB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        d = "" if r.max_abs_diff_vs_fp32 is None else f"{r.max_abs_diff_vs_fp32:.1e}"
        rows.append(f"| {r.label} | {r.unet_s:.3f} | {r.unet_vs_eager:.2f}x | {r.estimator_s:.3f} | "
                    f"{r.estimator_vs_eager:.2f}x | {d} | {r.setup_s:.1f} | {r.peak_rss_mb:.0f} |")
    return "\n".join(rows)
