r"""Monotonic rational-quadratic splines, element-wise, with linear (identity) tails.

On :math:`[-B, B]` the knots :math:`(x_k, y_k)` and derivatives :math:`\delta_k` define, in bin
:math:`k` with :math:`\xi = (x - x_k) / w_k` and :math:`s_k = h_k / w_k`,

.. math:: y = y_k + \frac{h_k [s_k \xi^2 + \delta_k \xi (1 - \xi)]}
                         {s_k + (\delta_{k+1} + \delta_k - 2 s_k) \xi (1 - \xi)},

.. math:: \frac{dy}{dx} = \frac{s_k^2 [\delta_{k+1} \xi^2 + 2 s_k \xi (1 - \xi)
                          + \delta_k (1 - \xi)^2]}
                         {[s_k + (\delta_{k+1} + \delta_k - 2 s_k) \xi (1 - \xi)]^2} .

Outside :math:`[-B, B]` the map is the identity (boundary derivatives are 1). All-zero
unconstrained parameters give the identity everywhere.

References:
    | Neural Spline Flows (Durkan et al., 2019), arXiv 1906.04032
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["rqs_forward", "rqs_inverse", "rqs_knots"]

MIN_WIDTH = 1e-3
MIN_DERIVATIVE = 1e-3
_IDENTITY_D = math.log(math.expm1(1 - MIN_DERIVATIVE))


def _softmax(p: Tensor) -> Tensor:
    """Softmax over the last dimension. On CPU the kernel for a short last dimension (the ``K``
    bins) is about 10x slower than the one over a leading dimension, so the bins are moved to the
    front (same values to within one ulp)."""
    if p.device.type != "cpu":
        return F.softmax(p, dim=-1)
    return F.softmax(p.movedim(-1, 0), dim=0).movedim(0, -1)


def rqs_knots(
    widths: Tensor, heights: Tensor, derivatives: Tensor, bound: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Knot abscissae ``(*, K+1)``, ordinates ``(*, K+1)`` and derivatives ``(*, K+1)`` from
    unconstrained parameters ``(*, K)``, ``(*, K)``, ``(*, K-1)``."""
    bins = widths.shape[-1]

    def cum(p: Tensor) -> Tensor:
        p = MIN_WIDTH + (1 - MIN_WIDTH * bins) * _softmax(p)
        knots = F.pad(torch.cumsum(p, dim=-1), (1, 0))
        knots = 2 * bound * knots - bound  # knots[..., 0] = -B exactly
        knots[..., -1] = bound  # exactly, whatever the rounding of the cumulative sum
        return knots

    d = MIN_DERIVATIVE + F.softplus(derivatives + _IDENTITY_D)
    d = F.pad(d, (1, 1), value=1.0)
    return cum(widths), cum(heights), d


def _gather(knots: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """``knots[..., k]`` and ``knots[..., k + 1]``, in one gather."""
    return knots.gather(-1, k).unbind(-1)


def _bin(edges: Tensor, v: Tensor) -> Tensor:
    """Index pairs ``(k, k + 1)`` ``(*, 2)`` of the bin holding ``v``: ``k`` counts the interior
    edges at or below ``v``."""
    k = torch.searchsorted(edges[..., 1:-1].contiguous(), v[..., None].contiguous(), right=True)
    return torch.cat([k, k + 1], dim=-1)


def rqs_forward(
    x: Tensor, widths: Tensor, heights: Tensor, derivatives: Tensor, bound: float = 5.0
) -> tuple[Tensor, Tensor]:
    """Element-wise spline ``y = g(x)`` and ``log g'(x)``, both of the shape of ``x``."""
    return _forward_at(x, *rqs_knots(widths, heights, derivatives, bound), bound)


def _forward_at(
    x: Tensor, xk: Tensor, yk: Tensor, dk: Tensor, bound: float
) -> tuple[Tensor, Tensor]:
    x = x.expand(torch.broadcast_shapes(x.shape, xk.shape[:-1]))
    xk, yk, dk = (a.expand(*x.shape, a.shape[-1]) for a in (xk, yk, dk))
    inside = x.abs() < bound
    k = _bin(xk, x)
    x0, x1 = _gather(xk, k)
    y0, y1 = _gather(yk, k)
    d0, d1 = _gather(dk, k)
    w, h = x1 - x0, y1 - y0
    s = h / w
    xi = ((x - x0) / w).clamp(0, 1)
    xi1 = xi * (1 - xi)
    den = s + (d1 + d0 - 2 * s) * xi1
    y = y0 + h * (s * xi**2 + d0 * xi1) / den
    dydx = s**2 * (d1 * xi**2 + 2 * s * xi1 + d0 * (1 - xi) ** 2) / den**2
    y = torch.where(inside, y, x)
    ladj = torch.where(inside, dydx.log(), torch.zeros_like(x))
    return y, ladj


def rqs_inverse(
    y: Tensor, widths: Tensor, heights: Tensor, derivatives: Tensor, bound: float = 5.0,
    ladj: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Element-wise inverse ``x = g^{-1}(y)`` and the forward ``log g'(x)`` (``None`` when
    ``ladj`` is false: a sampler skips its work)."""
    return _inverse_at(y, *rqs_knots(widths, heights, derivatives, bound), bound, ladj)


def _inverse_at(
    y: Tensor, xk: Tensor, yk: Tensor, dk: Tensor, bound: float, ladj: bool = True
) -> tuple[Tensor, Tensor | None]:
    y = y.expand(torch.broadcast_shapes(y.shape, xk.shape[:-1]))
    xk, yk, dk = (a.expand(*y.shape, a.shape[-1]) for a in (xk, yk, dk))
    inside = y.abs() < bound
    k = _bin(yk, y)
    x0, x1 = _gather(xk, k)
    y0, y1 = _gather(yk, k)
    d0, d1 = _gather(dk, k)
    w, h = x1 - x0, y1 - y0
    s = h / w
    dy = y - y0
    a = h * (s - d0) + dy * (d1 + d0 - 2 * s)
    b = h * d0 - dy * (d1 + d0 - 2 * s)
    c = -s * dy
    disc = (b**2 - 4 * a * c).clamp_min(0)
    xi = ((2 * c) / (-b - disc.sqrt())).clamp(0, 1)
    x = torch.where(inside, x0 + xi * w, y)
    if not ladj:
        return x, None
    xi1 = xi * (1 - xi)
    den = s + (d1 + d0 - 2 * s) * xi1
    dydx = s**2 * (d1 * xi**2 + 2 * s * xi1 + d0 * (1 - xi) ** 2) / den**2
    return x, torch.where(inside, dydx.log(), torch.zeros_like(y))
