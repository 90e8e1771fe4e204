"""Batches from a tensor, ``(x, y)`` tensors, a map-style ``Dataset`` or a callable
``draw(batch_size, generator)``.

For training, each is turned into ``draw(generator) -> (x, y)`` (``y`` may be ``None``), drawing
uniform indices with replacement from the loop's own generator, so that every batch is a
function of that generator's state (exact resume; :func:`ntmdist.training.fit`). Held-out data
(a tensor, ``(x, y)`` or a ``Dataset``) is read once in order, in batches, by
:func:`in_order`.

Example:
    >>> x = torch.arange(5.0)[:, None]
    >>> [tuple(b[0].flatten().tolist()) for b in in_order(x, 2)]
    [(0.0, 1.0), (2.0, 3.0), (4.0,)]
    >>> data_length((x, x)), data_length(lambda n, g: x)
    (5, None)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

__all__ = ["Batch", "batch_sampler", "data_length", "in_order", "split_batch", "to_device"]

Batch = tuple[Tensor, Tensor | None]


def split_batch(batch: Any) -> Batch:
    """``(x, y)`` of a batch given as ``x``, ``(x,)`` or ``(x, y)``."""
    if torch.is_tensor(batch):
        return batch, None
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
        return batch[0], (batch[1] if len(batch) == 2 else None)
    raise TypeError(f"a batch must be x or (x, y), got {type(batch).__name__}")


def _tensors(data: Any) -> tuple[Tensor, ...] | None:
    """``(x,)`` or ``(x, y)`` when ``data`` is tensor data (checked), else ``None``."""
    if torch.is_tensor(data):
        data = (data,)
    if isinstance(data, (tuple, list)) and all(torch.is_tensor(v) for v in data):
        if len(data) not in (1, 2) or len(data[0]) == 0 or len({len(v) for v in data}) > 1:
            raise ValueError("tensor data must be x or (x, y), non-empty and of equal lengths")
        return tuple(data)
    return None


def _dataset_length(data: Dataset) -> int:
    if not hasattr(data, "__len__") or len(data) == 0:
        raise ValueError("a Dataset must be non-empty and have a length (map-style)")
    return len(data)


def data_length(data: Any) -> int | None:
    """The number of examples of tensor data or a ``Dataset``; ``None`` for a callable."""
    tensors = _tensors(data)
    if tensors is not None:
        return len(tensors[0])
    return _dataset_length(data) if isinstance(data, Dataset) else None


def batch_sampler(data: Any, batch_size: int) -> Callable[[torch.Generator], Batch]:
    """``draw(generator) -> (x, y)``: tensors and datasets by uniform indices (with
    replacement), callables ``draw(batch_size, generator)`` as they are."""
    tensors = _tensors(data)
    if tensors is not None:
        n = len(tensors[0])

        def draw_rows(g: torch.Generator) -> Batch:
            idx = torch.randint(n, (batch_size,), generator=g)
            return split_batch([v[idx] for v in tensors])

        return draw_rows
    if isinstance(data, Dataset):
        n = _dataset_length(data)

        def draw(g: torch.Generator) -> Batch:
            idx = torch.randint(n, (batch_size,), generator=g).tolist()
            return split_batch(default_collate([data[i] for i in idx]))

        return draw
    if callable(data):
        return lambda g: split_batch(data(batch_size, g))
    raise TypeError("data must be a tensor, (x, y), a Dataset or a callable draw(n, generator)")


def in_order(data: Any, batch_size: int) -> Iterator[Batch]:
    """Every example of tensor data or a ``Dataset`` once, in order, ``batch_size`` at a time
    (the last batch may be smaller)."""
    tensors = _tensors(data)
    if tensors is None and not isinstance(data, Dataset):
        raise TypeError("held-out data must be a tensor, (x, y) or a Dataset, got "
                        f"{type(data).__name__}")
    n = len(tensors[0]) if tensors is not None else _dataset_length(data)
    for start in range(0, n, batch_size):
        end = min(start + batch_size, n)
        if tensors is not None:
            yield split_batch([v[start:end] for v in tensors])
        else:
            yield split_batch(default_collate([data[i] for i in range(start, end)]))


def to_device(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """``(x, y)`` on ``device``, floating ``x`` in ``dtype`` (the model's)."""
    x, y = batch
    x = x.to(device, dtype) if x.is_floating_point() else x.to(device)
    return x, None if y is None else torch.as_tensor(y).to(device)
