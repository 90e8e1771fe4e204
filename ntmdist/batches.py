"""Training batches from a tensor, ``(x, y)`` tensors, a map-style ``Dataset`` or a callable
``draw(batch_size, generator)``: each is turned into ``draw(generator) -> (x, y)`` (``y`` may be
``None``), drawing uniform indices with replacement from the loop's own generator, so that every
batch is a function of that generator's state (exact resume; :mod:`ntmdist.train`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

__all__ = ["Batch", "batch_sampler", "split_batch"]

Batch = tuple[Tensor, Tensor | None]


def split_batch(batch: Any) -> Batch:
    if torch.is_tensor(batch):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        return batch[0], (batch[1] if len(batch) == 2 else None)
    raise TypeError(f"a batch must be x or (x, y), got {type(batch).__name__}")


def batch_sampler(data: Any, batch_size: int) -> Callable[[torch.Generator], Batch]:
    """``draw(generator) -> (x, y)``: tensors and datasets by uniform indices (with
    replacement), callables ``draw(batch_size, generator)`` as they are."""
    if torch.is_tensor(data):
        data = (data,)
    if isinstance(data, (tuple, list)) and all(torch.is_tensor(v) for v in data):
        if len(data) not in (1, 2) or len(data[0]) == 0 or len({len(v) for v in data}) > 1:
            raise ValueError("tensor data must be x or (x, y), non-empty and of equal lengths")
        n = len(data[0])

        def draw_rows(g: torch.Generator) -> Batch:
            idx = torch.randint(n, (batch_size,), generator=g)
            return split_batch([v[idx] for v in data])

        return draw_rows
    if isinstance(data, Dataset):
        if not hasattr(data, "__len__") or len(data) == 0:
            raise ValueError("a Dataset must be non-empty and have a length (map-style)")
        n = len(data)

        def draw(g: torch.Generator) -> Batch:
            idx = torch.randint(n, (batch_size,), generator=g).tolist()
            return split_batch(default_collate([data[i] for i in idx]))

        return draw
    if callable(data):
        return lambda g: split_batch(data(batch_size, g))
    raise TypeError("data must be a tensor, (x, y), a Dataset or a callable draw(n, generator)")
