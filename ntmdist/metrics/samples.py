r"""Distances between samples of low-dimensional data: the energy distance and the fraction of
samples on a known support (the 2D toys).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from .pairs import block_rows, feature_pair, pair_sum

__all__ = ["energy_distance", "fraction_on_support"]


def energy_distance(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray, unbiased: bool = True, chunk: int | None = None
) -> float:
    r"""Energy distance between the samples ``x`` ``(n, *event)`` and ``y`` ``(m, *event)``.

    .. math:: \mathcal{E}(P, Q) = 2 \mathbb{E}|X - Y| - \mathbb{E}|X - X'| - \mathbb{E}|Y - Y'|

    with Euclidean norms over the flattened event. The cross term averages all :math:`nm` pairs.
    The within-sample terms are U-statistics by default (``unbiased=True``: the :math:`n(n-1)`
    pairs :math:`i \neq j`), so the estimate is unbiased, zero in expectation when both samples
    come from one law, and may be slightly negative; ``unbiased=False`` gives the V-statistic
    (divide by :math:`n^2`, diagonal included), which is always :math:`\geq 0` but biased upwards.

    Distances are computed in float64 in blocks of ``chunk`` rows (by default about
    :math:`2^{22}` distances at a time), so memory is :math:`O(\text{chunk} \cdot m)`, never
    :math:`O(nm)`.

    References:
        | Energy statistics: A class of statistics based on distances (Szekely & Rizzo, 2013)

    Example:
        >>> x = torch.tensor([[0.0], [1.0]])
        >>> energy_distance(x, x + 1, unbiased=False)  # 2 * 1 - 1/2 - 1/2
        1.0
        >>> energy_distance(x, x + 1)  # U-statistics: 2 * 1 - 1 - 1
        0.0
    """
    x, y = feature_pair("x y", x, y, 2 if unbiased else 1)

    def mean(a: Tensor, b: Tensor, same: bool) -> float:
        pairs = len(a) * (len(a) - 1) if same and unbiased else len(a) * len(b)
        return pair_sum(a, b, torch.cdist, block_rows(chunk, len(b)), same) / pairs

    with torch.no_grad():
        return 2 * mean(x, y, False) - mean(x, x, True) - mean(y, y, True)


def fraction_on_support(
    x: Tensor, toy_name_or_support_fn: str | Callable[[Tensor], Tensor]
) -> float:
    """Fraction of the points ``x`` ``(n, 2)`` on a support.

    Arguments:
        x: Points, shape ``(n, *event)``.
        toy_name_or_support_fn: A toy name of :data:`ntmdist.data.TOYS` with a support
            (``"checkerboard"``) or a function mapping ``x`` to a bool tensor ``(n,)``.

    Example:
        >>> fraction_on_support(torch.tensor([[-3.0, -3.0], [-1.0, -3.0]]), "checkerboard")
        0.5
    """
    support = toy_name_or_support_fn
    if isinstance(support, str):
        from ..data import toy

        support = toy(support).support
        if support is None:
            raise ValueError(f"toy {toy_name_or_support_fn!r} has no bounded support")
    if not callable(support):
        raise TypeError(f"expected a toy name or a support function, got {support!r}")
    inside = torch.as_tensor(support(x))
    if inside.numel() == 0:
        raise ValueError("x is empty")
    return inside.to(torch.float64).mean().item()
