r"""Sample sets as float64 matrices, and sums over all pairs of two sets computed in blocks of
rows (memory :math:`O(\text{chunk} \cdot m)`, never :math:`O(nm)`): the shared machinery of the
metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["block_rows", "feature_pair", "pair_sum", "samples"]


def samples(name: str, x: Tensor | np.ndarray, least: int) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() < 1 or x.shape[0] < least:
        raise ValueError(f"{name} must have shape (n, *event) with n >= {least}, got {x.shape}")
    return x.detach().to(torch.float64).reshape(x.shape[0], -1)


def feature_pair(names: str, a: Tensor | np.ndarray, b: Tensor | np.ndarray, least: int
              ) -> tuple[Tensor, Tensor]:
    """Two float64 sample sets ``(n, d)`` and ``(m, d)`` with equal ``d``."""
    first, second = names.split()
    a, b = samples(first, a, least), samples(second, b, least)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{first} and {second} must have the same size (features per sample, "
                         f"the event size), got {a.shape[1]} and {b.shape[1]}")
    return a, b


def block_rows(chunk: int | None, m: int) -> int:
    """Rows per block: ``chunk``, or about :math:`2^{22}` pairs at a time."""
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    return chunk or max(1, 2**22 // max(m, 1))


def pair_sum(
    a: Tensor, b: Tensor, pair: Callable[[Tensor, Tensor], Tensor], rows: int, same: bool
) -> float:
    r""":math:`\sum_{ij} \mathrm{pair}(a_i, b_j)`, the diagonal left out when ``same``."""
    total = []
    for i in range(0, len(a), rows):
        block = pair(a[i : i + rows], b)
        if same:  # exact zeros on the diagonal (the matrix-product form leaves round-off there)
            block.diagonal(offset=i).zero_()
        total.append(block.sum().item())
    return math.fsum(total)
