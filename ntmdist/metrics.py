r"""Evaluation metrics: energy distance, fraction on a support, likelihood units, Frechet distance.

Every metric returns a Python ``float`` (or, for the unit conversions, the type it was given) and
computes in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "bits_per_dim",
    "energy_distance",
    "fraction_on_support",
    "frechet_distance",
    "nats_per_dim",
]


def _samples(name: str, x: Tensor | np.ndarray, least: int) -> Tensor:
    x = torch.as_tensor(x)
    if x.dim() < 1 or x.shape[0] < least:
        raise ValueError(f"{name} must have shape (n, *event) with n >= {least}, got {x.shape}")
    return x.detach().to(torch.float64).reshape(x.shape[0], -1)


def _distance_sum(a: Tensor, b: Tensor, rows: int, same: bool) -> float:
    total = []
    for i in range(0, len(a), rows):
        block = torch.cdist(a[i : i + rows], b)
        if same:  # exact zeros on the diagonal (the matrix-product form leaves round-off there)
            block.diagonal(offset=i).zero_()
        total.append(block.sum().item())
    return math.fsum(total)


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
    x, y = _samples("x", x, 2 if unbiased else 1), _samples("y", y, 2 if unbiased else 1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have equal event sizes, got {x.shape[1]}, {y.shape[1]}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")

    def mean(a: Tensor, b: Tensor, same: bool) -> float:
        rows = chunk or max(1, 2**22 // len(b))
        pairs = len(a) * (len(a) - 1) if same and unbiased else len(a) * len(b)
        return _distance_sum(a, b, rows, same) / pairs

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
        from .data import toy

        support = toy(support).support
        if support is None:
            raise ValueError(f"toy {toy_name_or_support_fn!r} has no bounded support")
    if not callable(support):
        raise TypeError(f"expected a toy name or a support function, got {support!r}")
    inside = torch.as_tensor(support(x))
    if inside.numel() == 0:
        raise ValueError("x is empty")
    return inside.to(torch.float64).mean().item()


def nats_per_dim(nll_total: float | Tensor, dims: int | Sequence[int]) -> float | Tensor:
    """A negative log-likelihood summed over dimensions, divided by the number of dimensions.

    ``dims`` is that number or an event shape (its product is used).

    Example:
        >>> nats_per_dim(128.0, (1, 8, 8))
        2.0
    """
    size = dims if isinstance(dims, int) else math.prod(dims)
    if isinstance(size, bool) or size < 1:
        raise ValueError(f"dims must give a positive number of dimensions, got {dims!r}")
    return nll_total / size


def bits_per_dim(
    nll_nats_per_dim: float | Tensor, log_scale_per_dim: float = 0.0
) -> float | Tensor:
    r"""Bits per dimension on the original data scale from an NLL in nats per dimension.

    If the model sees :math:`x = a y + b` for original (dequantised) data :math:`y`, the
    per-dimension log-determinant is ``log_scale_per_dim`` :math:`= \log |a|` and
    :math:`-\log p_y(y)/D = -\log p_x(x)/D - \log |a|`, so

    .. math:: \text{bpd} = \frac{\text{nll}_x - \log |a|}{\ln 2} .

    For 8-bit images scaled to :math:`[0, 1)`, :math:`a = 1/256` and ``log_scale_per_dim``
    :math:`= -\log 256`; for :func:`ntmdist.data.digits` use ``DIGITS_LOG_SCALE``
    :math:`= \log(2/17)`. With uniform dequantisation this bounds the discrete bits per dimension.

    Example:
        >>> round(bits_per_dim(math.log(2), math.log(2 / 17)), 4)  # uniform on [-1, 1]: log2(17)
        4.0875
    """
    return (nll_nats_per_dim - log_scale_per_dim) / math.log(2)


def frechet_distance(feat_a: Tensor | np.ndarray, feat_b: Tensor | np.ndarray) -> float:
    r"""Frechet distance between Gaussians fitted to the features ``(n, d)`` and ``(m, d)``.

    .. math:: \|\mu_a - \mu_b\|^2 + \mathrm{tr}\left(\Sigma_a + \Sigma_b
              - 2 (\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2})^{1/2}\right)

    with sample means and unbiased sample covariances, in float64. The trace term equals
    :math:`\mathrm{tr} (\Sigma_a \Sigma_b)^{1/2}` (the FID form); the symmetric form used here
    (the eigen-decomposition square root of :math:`\Sigma_a`, then the eigenvalues of a
    symmetric positive semi-definite matrix) avoids complex round-off and accepts singular
    covariances, and the result is symmetric in ``a, b``.

    References:
        | GANs Trained by a Two Time-Scale Update Rule (Heusel et al., 2017), arXiv 1706.08500
        | The Frechet distance between multivariate normal distributions (Dowson & Landau, 1982)

    Example:
        >>> a = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
        >>> round(frechet_distance(a, a + 1.0), 6)  # same covariance: |mean shift|^2
        2.0
    """
    a = _samples("feat_a", feat_a, 2).numpy()
    b = _samples("feat_b", feat_b, 2).numpy()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features must have the same size, got {a.shape[1]} and {b.shape[1]}")
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    eig_a, vec_a = np.linalg.eigh(cov_a)  # symmetric PSD square root: no complex round-off
    root_a = (vec_a * np.sqrt(np.clip(eig_a, 0, None))) @ vec_a.T
    middle = root_a @ cov_b @ root_a
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    cross = np.sqrt(np.clip(eig, 0, None)).sum()
    shift = a.mean(axis=0) - b.mean(axis=0)
    return float(shift @ shift + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)
