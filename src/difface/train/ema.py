"""Exponential moving average of a network's weights (as the official trainer).

After every optimizer step: ema = rate * ema + (1 - rate) * param for every floating-point
parameter and buffer, done as `ema.lerp_(param, 1 - rate)`; integer buffers (e.g. SwinIR's
`relative_position_index`, BatchNorm's `num_batches_tracked`) and BatchNorm running statistics
are copied, as the official trainer does.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

_COPIED = ("running_mean", "running_var", "num_batches_tracked")


class EMA:
    """Holds `shadow`, an eval-mode copy of the network whose weights are the running average."""

    def __init__(self, model: nn.Module, rate: float) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"EMA rate must lie in [0, 1), got {rate}")
        self.rate = float(rate)
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of `model` (same architecture, e.g. the DDP-unwrapped one) in."""
        current = model.state_dict()
        for name, avg in self.shadow.state_dict().items():
            new = current[name].detach()
            if avg.is_floating_point() and not name.endswith(_COPIED):
                avg.lerp_(new.to(avg.dtype), 1.0 - self.rate)
            else:
                avg.copy_(new)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(sd, strict=True)
