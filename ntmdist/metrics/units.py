r"""Likelihood units: nats per dimension and bits per dimension on the original data scale."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

__all__ = ["bits_per_dim", "nats_per_dim"]


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
