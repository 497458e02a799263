"""BatchNorm running statistics that depend on the global batch only (for LaMa's BatchNorm layers).

In train mode PyTorch updates `running_mean` / `running_var` at every forward call, i.e. once per
micro-batch and per process: the result would depend on the micro-batch layout and the number of
processes, and DDP ranks would drift apart. `GlobalBatchNormStats` switches that update off
(momentum 0) and instead, once per optimizer step, folds in the statistics of the *whole global
batch* of the step (all micro-batches of all processes):

    mean = E[x], var = E[(x - mean)^2] * N / (N - 1)      (per channel; N = samples x H x W)
    running = (1 - momentum) * running + momentum * stat, num_batches_tracked += 1

which is what the official trainer's SyncBatchNorm did with one forward of the global batch per
step. The statistics used for *normalising* during training stay per micro-batch
(PyTorch's BatchNorm): the gradient depends on `optim.micro_batch`, not on the number of processes
as long as each process's share is a whole number of micro-batches.

`recompute_statistics` gives averaged (EMA) weights statistics of their own before they are
validated or exported (the official trainer copied the live network's, see the function).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from difface.distributed import all_reduce_sum


class GlobalBatchNormStats:
    """Attach to a model's BatchNorm layers (see module docstring); `step()` after the backward passes of
    an optimizer step; `remove()` restores the layers' own momentum and detaches the hooks."""

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        self.momentum = [m.momentum for m in self.layers]
        self._sums: list[torch.Tensor | None] = [None] * len(self.layers)  # float64 (3, C): n, n*mean, n*E[x^2]
        self._counters: list[int | None] = [None] * len(self.layers)
        self._hooks = []
        for i, m in enumerate(self.layers):
            m.momentum = 0.0
            self._hooks.append(m.register_forward_pre_hook(self._recorder(i)))

    def __bool__(self) -> bool:
        return bool(self.layers)

    def _recorder(self, i: int):
        def record(module: _BatchNorm, args: tuple) -> None:
            if not module.training:
                return
            x = args[0]
            if self._counters[i] is None:
                self._counters[i] = int(module.num_batches_tracked)
            with torch.no_grad():
                dims = [d for d in range(x.ndim) if d != 1]
                var, mean = (t.double() for t in torch.var_mean(x.detach().float(), dim=dims, unbiased=False))
                n = x.numel() // x.shape[1]
                add = torch.stack([torch.full_like(mean, n), mean * n, (var + mean.square()) * n])
                self._sums[i] = add if self._sums[i] is None else self._sums[i] + add

        return record

    @torch.no_grad()
    def step(self) -> None:
        """Fold this step's global-batch statistics into the running statistics (all processes agree)."""
        live = [i for i, s in enumerate(self._sums) if s is not None]
        if not live:
            return
        packed = all_reduce_sum(torch.cat([self._sums[i].flatten() for i in live]))
        offset = 0
        for i in live:
            m = self.layers[i]
            c = m.running_mean.numel()
            n, s1, s2 = packed[offset:offset + 3 * c].view(3, c)
            offset += 3 * c
            mean = s1 / n
            var = (s2 / n - mean.square()).clamp_min(0) * (n / (n - 1).clamp_min(1))
            count = self._counters[i] + 1
            f = self.momentum[i] if self.momentum[i] is not None else 1.0 / count
            m.running_mean.mul_(1 - f).add_(mean.to(m.running_mean), alpha=f)
            m.running_var.mul_(1 - f).add_(var.to(m.running_var), alpha=f)
            m.num_batches_tracked.fill_(count)
            self._sums[i], self._counters[i] = None, None

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        for m, mom in zip(self.layers, self.momentum):
            m.momentum = mom
        self._hooks = []


@torch.no_grad()
def recompute_statistics(model: nn.Module, run_batches: Callable[[nn.Module], None]) -> int:
    """Recompute the running statistics of `model`'s BatchNorm layers for its current weights.

    The statistics are reset, then `run_batches(model)` makes forward passes with the model in train
    mode (under no_grad); each layer's running mean / variance becomes the plain average of the
    per-batch mean / unbiased variance over those passes. `num_batches_tracked` keeps its old value
    and the model is left in eval mode. Returns the number of BatchNorm layers (0: nothing done).

    Used for the EMA weights: the EMA copies the live network's statistics (as the official
    trainer does), which belong to the live weights, not to the averaged ones.
    """
    layers = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    try:
        run_batches(model)
    finally:
        for m, (momentum, count) in zip(layers, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)
        model.eval()
    return len(layers)
