"""Batches from a tensor, ``(x, y)`` or ``(x, y, mask)`` tensors, a map-style ``Dataset`` or a
callable ``draw(batch_size, generator)``.

A batch is ``(x, y, mask)``: the data, its condition (labels, context vectors or sequences) and,
for sequence contexts, the boolean mask of their real tokens (``y`` and ``mask`` may be
``None``). For training, each kind of data is turned into ``draw(generator) -> (x, y, mask)``,
drawing uniform indices with replacement from the loop's own generator, so that every batch is a
function of that generator's state (exact resume; :func:`ntmdist.training.fit`). Held-out data
(tensors or a ``Dataset``) is read once in order, in batches, by :func:`in_order`.

Example:
    >>> x = torch.arange(5.0)[:, None]
    >>> [tuple(b[0].flatten().tolist()) for b in in_order(x, 2)]
    [(0.0, 1.0), (2.0, 3.0), (4.0,)]
    >>> data_length((x, x)), data_length(lambda n, g: x)
    (5, None)
    >>> split_batch((x, x[:, 0], x > 2))[2].shape
    torch.Size([5, 1])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

__all__ = ["Batch", "batch_sampler", "data_length", "in_order", "split_batch", "to_device"]

Batch = tuple[Tensor, Tensor | None, Tensor | None]

_KINDS = "x, (x, y) or (x, y, mask)"


def split_batch(batch: Any) -> Batch:
    """``(x, y, mask)`` of a batch given as ``x``, ``(x,)``, ``(x, y)`` or ``(x, y, mask)``."""
    if torch.is_tensor(batch):
        return batch, None, None
    if isinstance(batch, (tuple, list)) and len(batch) in (1, 2, 3):
        x, y, mask = (*batch, None, None)[:3]
        return x, y, mask
    raise TypeError(f"a batch must be {_KINDS}, got {type(batch).__name__}")


def _tensors(data: Any) -> tuple[Tensor, ...] | None:
    """``(x,)``, ``(x, y)`` or ``(x, y, mask)`` when ``data`` is tensor data (checked), else
    ``None``."""
    if torch.is_tensor(data):
        data = (data,)
    if isinstance(data, (tuple, list)) and all(torch.is_tensor(v) for v in data):
        if len(data) not in (1, 2, 3) or len(data[0]) == 0 or len({len(v) for v in data}) > 1:
            raise ValueError(f"tensor data must be {_KINDS}, non-empty and of equal lengths")
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
    """``draw(generator) -> (x, y, mask)``: tensors and datasets by uniform indices (with
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
    raise TypeError(f"data must be a tensor, {_KINDS} tensors, a Dataset or a callable "
                    "draw(n, generator)")


def in_order(data: Any, batch_size: int) -> Iterator[Batch]:
    """Every example of tensor data or a ``Dataset`` once, in order, ``batch_size`` at a time
    (the last batch may be smaller)."""
    tensors = _tensors(data)
    if tensors is None and not isinstance(data, Dataset):
        raise TypeError(f"held-out data must be {_KINDS} tensors or a Dataset, got "
                        f"{type(data).__name__}")
    n = len(tensors[0]) if tensors is not None else _dataset_length(data)
    for start in range(0, n, batch_size):
        end = min(start + batch_size, n)
        if tensors is not None:
            yield split_batch([v[start:end] for v in tensors])
        else:
            yield split_batch(default_collate([data[i] for i in range(start, end)]))


def to_device(batch: Batch, device: torch.device, dtype: torch.dtype) -> Batch:
    """``(x, y, mask)`` on ``device``, floating ``x`` and ``y`` (contexts) in ``dtype`` (the
    model's)."""

    def move(v: Any) -> Tensor | None:
        if v is None:
            return None
        v = torch.as_tensor(v)
        return v.to(device, dtype) if v.is_floating_point() else v.to(device)

    x, y, mask = batch
    return move(x), move(y), move(mask)
