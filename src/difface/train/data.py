"""Batches that do not depend on the number of processes.

The training stream is one sequence of global positions g = 0, 1, 2, ...; position g is image
perm_e[g mod N] of epoch e = g div N, with perm_e = default_rng([seed, e]).permutation(N).
Global step k (1-based) takes positions (k-1)B ... kB-1 (B = global batch), and process r of K
takes the contiguous slice r B/K ... (r+1) B/K - 1 of them. So every global step sees the same
samples whatever K is, and resuming at step k only needs k. Each item carries its `slot`
(position inside the global batch), which keys the per-sample randomness of the step functions.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


class StreamSampler(Sampler):
    """Yields, for steps start_step+1 ... max_steps, this rank's list of (index, epoch, slot) keys."""

    def __init__(self, num_items: int, batch_size: int, rank: int, world_size: int, seed: int,
                 start_step: int, max_steps: int) -> None:
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by {world_size} processes")
        self.n, self.batch, self.seed = num_items, batch_size, seed
        self.per_rank = batch_size // world_size
        self.rank, self.start, self.stop = rank, start_step, max_steps

    @lru_cache(maxsize=2)  # noqa: B019 - one sampler per run; caches the current and next epoch
    def permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def keys(self, step: int) -> list[tuple[int, int, int]]:
        """(index, epoch, slot) of this rank's samples at global step `step` (1-based)."""
        out = []
        for j in range(self.rank * self.per_rank, (self.rank + 1) * self.per_rank):
            g = (step - 1) * self.batch + j
            epoch = g // self.n
            out.append((int(self.permutation(epoch)[g % self.n]), epoch, j))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start + 1, self.stop + 1):
            yield self.keys(step)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


class KeyedItems(Dataset):
    """Maps a key (index, epoch, slot) to the dataset's item for that epoch, as a dict.

    Tensor items become {"image": x}; dict items keep their keys. Added: "slot" and "skipped" (1 when
    the file at `index` is unreadable and the dataset gave the next readable item instead).
    """

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> dict:
        index, epoch, slot = key
        item = self.dataset.item(index, epoch)
        item = dict(item) if isinstance(item, dict) else {"image": item}
        item.pop("name", None)
        item["slot"] = slot
        item["skipped"] = int(index in self.dataset.failed)
        return item


def make_loader(dataset, sampler: StreamSampler, num_workers: int, pin_memory: bool) -> DataLoader:
    """DataLoader over KeyedItems(dataset) with one batch per global step for this rank."""
    return DataLoader(
        KeyedItems(dataset), batch_sampler=sampler, num_workers=num_workers, pin_memory=pin_memory,
        persistent_workers=num_workers > 0, prefetch_factor=2 if num_workers > 0 else None,
        worker_init_fn=_worker_init if num_workers > 0 else None,
    )


def _worker_init(worker_id: int) -> None:
    # Items take their randomness from explicit per-item generators; one thread per worker keeps
    # the workers from competing with the training process for cores.
    torch.set_num_threads(1)
