r"""The 2D toys: exact samplers and, where tractable, exact log densities.

They follow the scales of the FFJORD toy suite (Grathwohl et al., 2018, arXiv 1810.01367),
all within about :math:`[-4, 4]^2`. Each sampler draws i.i.d. points from a fixed law (mixture
components are drawn at random, not in equal counts). Exact ``log_prob``: ``checkerboard``,
``eight_gaussians``, ``rings`` and ``pinwheel``; ``two_moons`` and ``spirals`` have none (their
densities are convolutions with no closed form).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Generator, Tensor

__all__ = [
    "TOYS", "Toy", "checkerboard", "checkerboard_log_prob", "checkerboard_support",
    "eight_gaussians", "eight_gaussians_log_prob", "pinwheel", "pinwheel_log_prob", "rings",
    "rings_log_prob", "spirals", "toy", "two_moons",
]

_LOG_2PI = math.log(2 * math.pi)
_G8_RADIUS, _G8_STD = 2 * math.sqrt(2), math.sqrt(2) / 4
_PW_CLASSES, _PW_RADIAL, _PW_TANGENTIAL, _PW_RATE = 5, 0.3, 0.1, 0.25
_RING_RADII, _RING_STD = (3.0, 2.25, 1.5, 0.75), 0.08


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")


def _check_points(x: Tensor) -> None:
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() < 1 or x.shape[-1] != 2:
        got = f"shape {tuple(x.shape)}, {x.dtype}" if torch.is_tensor(x) else type(x).__name__
        raise ValueError(f"expected a floating point tensor of shape (*, 2), got {got}")


def _rand(n: int, g: Generator | None, *shape: int) -> Tensor:
    return torch.rand(n, *shape, generator=g, dtype=torch.float64)


def _randn(n: int, g: Generator | None, *shape: int) -> Tensor:
    return torch.randn(n, *shape, generator=g, dtype=torch.float64)


def _randint(n: int, high: int, g: Generator | None) -> Tensor:
    return torch.randint(high, (n,), generator=g)


def _rotate(x: Tensor, angle: Tensor) -> Tensor:
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([c * x[..., 0] - s * x[..., 1], s * x[..., 0] + c * x[..., 1]], dim=-1)


def checkerboard(
    n: int, generator: Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""Uniform on the 8 black squares of a 4x4 board on :math:`[-4, 4)^2`, shape ``(n, 2)``.

    Square :math:`(i, j) = (\lfloor (x_1 + 4)/2 \rfloor, \lfloor (x_2 + 4)/2 \rfloor)` is black
    iff :math:`i + j` is even. The density is :math:`1/32` on the support, so the entropy is
    :math:`\log 32 \approx 3.466` nats (the FFJORD checkerboard).

    Example:
        >>> x = checkerboard(5, generator=torch.Generator().manual_seed(0))
        >>> x.shape, x.dtype, bool(checkerboard_support(x).all())
        (torch.Size([5, 2]), torch.float32, True)
    """
    _check_n(n)
    k = _randint(n, 8, generator)
    i = k % 4
    j = i % 2 + 2 * (k // 4)
    cell = torch.stack([i, j], dim=-1).to(torch.float64)
    return (2 * (cell + _rand(n, generator, 2)) - 4).to(dtype)


def checkerboard_support(x: Tensor) -> Tensor:
    """Whether each point of ``x`` ``(*, 2)`` lies on a black square; a bool tensor ``(*)``."""
    _check_points(x)
    cell = torch.floor((x + 4) / 2)
    inside = ((cell >= 0) & (cell <= 3)).all(dim=-1)
    return inside & (cell.sum(dim=-1) % 2 == 0)


def checkerboard_log_prob(x: Tensor) -> Tensor:
    r"""Exact log density of :func:`checkerboard`: :math:`-\log 32` on the support, else -inf."""
    inside = checkerboard_support(x)
    return torch.where(inside, -math.log(32.0), -math.inf).to(x.dtype)


def eight_gaussians(
    n: int, generator: Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""Equal mixture of 8 Gaussians, shape ``(n, 2)``.

    .. math:: p(x) = \frac{1}{8} \sum_{k=0}^{7} \mathcal{N}(x; R (\cos \tfrac{k\pi}{4},
              \sin \tfrac{k\pi}{4}), \sigma^2 I), \quad R = 2\sqrt{2}, \ \sigma = \sqrt{2}/4,

    FFJORD's mixture (centres at radius 4, scale 0.5, all divided by :math:`\sqrt{2}`).

    Example:
        >>> eight_gaussians(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """
    _check_n(n)
    angle = _randint(n, 8, generator).to(torch.float64) * math.pi / 4
    centre = _G8_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    return (centre + _G8_STD * _randn(n, generator, 2)).to(dtype)


def eight_gaussians_log_prob(x: Tensor) -> Tensor:
    """Exact log density of :func:`eight_gaussians` at ``x`` ``(*, 2)``, shape ``(*)``."""
    _check_points(x)
    angle = torch.arange(8, dtype=x.dtype, device=x.device) * math.pi / 4
    centres = _G8_RADIUS * torch.stack([torch.cos(angle), torch.sin(angle)], dim=-1)
    d2 = ((x[..., None, :] - centres) ** 2).sum(dim=-1)
    comp = -0.5 * d2 / _G8_STD**2 - 2 * math.log(_G8_STD) - _LOG_2PI
    return torch.logsumexp(comp, dim=-1) - math.log(8)


def two_moons(
    n: int, generator: Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""Two interleaved half circles with Gaussian noise, shape ``(n, 2)``; no closed-form density.

    With :math:`\theta \sim U[0, \pi]`, a fair coin picks :math:`m = (\cos\theta, \sin\theta)` or
    :math:`m = (1 - \cos\theta, 1/2 - \sin\theta)`, and :math:`x = 2 (m + 0.1 \epsilon) -
    (1, 0.2)`: FFJORD's ``moons`` (scikit-learn's ``make_moons(noise=0.1)``, rescaled).

    Example:
        >>> two_moons(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """
    _check_n(n)
    theta = math.pi * _rand(n, generator)
    inner = _randint(n, 2, generator).bool()
    c, s = torch.cos(theta), torch.sin(theta)
    m = torch.stack([torch.where(inner, 1 - c, c), torch.where(inner, 0.5 - s, s)], dim=-1)
    x = 2 * (m + 0.1 * _randn(n, generator, 2)) - torch.tensor([1.0, 0.2], dtype=torch.float64)
    return x.to(dtype)


def pinwheel(
    n: int, generator: Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""Five swirled Gaussian arms, shape ``(n, 2)``, with an exact density.

    A class :math:`c` uniform in :math:`0..4`, :math:`f \sim \mathcal{N}((1, 0),
    \mathrm{diag}(0.3^2, 0.1^2))` and :math:`x = 2 R(-2\pi c/5 - 0.25 e^{|f|}) f`, with
    :math:`R` the rotation by an angle. This is FFJORD's pinwheel except that the swirl angle
    depends on :math:`|f|` instead of :math:`f_1`: a rotation by an angle depending on the radius
    only preserves area, so the map is a diffeomorphism with Jacobian determinant :math:`4` and
    :func:`pinwheel_log_prob` is exact.

    Example:
        >>> pinwheel(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """
    _check_n(n)
    c = _randint(n, _PW_CLASSES, generator).to(torch.float64)
    f = _randn(n, generator, 2) * torch.tensor([_PW_RADIAL, _PW_TANGENTIAL], dtype=torch.float64)
    f[:, 0] += 1
    angle = 2 * math.pi * c / _PW_CLASSES + _PW_RATE * torch.exp(f.norm(dim=-1))
    return (2 * _rotate(f, -angle)).to(dtype)


def pinwheel_log_prob(x: Tensor) -> Tensor:
    r"""Exact log density of :func:`pinwheel` at ``x`` ``(*, 2)``, shape ``(*)``:

    .. math:: \log p(x) = \log \frac{1}{5} \sum_c \mathcal{N}(f_c(x); (1, 0),
              \mathrm{diag}(0.3^2, 0.1^2)) - \log 4, \ f_c(x) = R(2\pi c/5 + 0.25 e^{|x|/2}) x/2.
    """
    _check_points(x)
    half = x / 2
    classes = torch.arange(_PW_CLASSES, dtype=x.dtype, device=x.device)
    swirl = _PW_RATE * torch.exp(half.norm(dim=-1))[..., None]
    f = _rotate(half[..., None, :], 2 * math.pi * classes / _PW_CLASSES + swirl)
    z0, z1 = (f[..., 0] - 1) / _PW_RADIAL, f[..., 1] / _PW_TANGENTIAL
    comp = -0.5 * (z0**2 + z1**2) - math.log(_PW_RADIAL * _PW_TANGENTIAL) - _LOG_2PI
    return torch.logsumexp(comp, dim=-1) - math.log(_PW_CLASSES) - math.log(4.0)


def rings(
    n: int, generator: Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""Four concentric noisy circles, shape ``(n, 2)``, with an exact density.

    A radius :math:`r_k` uniform in :math:`\{3, 2.25, 1.5, 0.75\}`, an angle
    :math:`\phi \sim U[0, 2\pi)` and :math:`x = r_k (\cos\phi, \sin\phi) + 0.08 \epsilon`
    (FFJORD's rings). Integrating the angle out gives, with :math:`\rho = |x|`,
    :math:`\sigma = 0.08` and :math:`I_0` the modified Bessel function,

    .. math:: p(x) = \frac{1}{4} \sum_k \frac{1}{2\pi\sigma^2}
              e^{-(\rho^2 + r_k^2) / 2\sigma^2} I_0(\rho r_k / \sigma^2) .

    Example:
        >>> rings(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """
    _check_n(n)
    radius = torch.tensor(_RING_RADII, dtype=torch.float64)[_randint(n, 4, generator)]
    phi = 2 * math.pi * _rand(n, generator)
    circle = radius[:, None] * torch.stack([torch.cos(phi), torch.sin(phi)], dim=-1)
    return (circle + _RING_STD * _randn(n, generator, 2)).to(dtype)


def rings_log_prob(x: Tensor) -> Tensor:
    """Exact log density of :func:`rings` at ``x`` ``(*, 2)`` (via ``torch.special.i0e``)."""
    _check_points(x)
    rho = x.norm(dim=-1)[..., None]
    r = torch.tensor(_RING_RADII, dtype=x.dtype, device=x.device)
    var = _RING_STD**2
    comp = -0.5 * (rho - r) ** 2 / var + torch.log(torch.special.i0e(rho * r / var))
    return torch.logsumexp(comp, dim=-1) - math.log(2 * math.pi * var) - math.log(4.0)


def spirals(
    n: int, generator: Generator | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""Two interleaved spirals, shape ``(n, 2)``; no closed-form density.

    With :math:`a = 3\pi \sqrt{v}`, :math:`v \sim U[0, 1)`, :math:`w \sim U[0, 1/2)^2`, a random
    sign :math:`\pm` and :math:`x = \pm((-a \cos a, a \sin a) + w) / 3 + 0.1 \epsilon`
    (FFJORD's ``2spirals``).

    Example:
        >>> spirals(3, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([3, 2])
    """
    _check_n(n)
    a = 3 * math.pi * _rand(n, generator).sqrt()
    arm = torch.stack([-a * torch.cos(a), a * torch.sin(a)], dim=-1) + 0.5 * _rand(n, generator, 2)
    sign = 2 * _randint(n, 2, generator).to(torch.float64)[:, None] - 1
    return (sign * arm / 3 + 0.1 * _randn(n, generator, 2)).to(dtype)


@dataclass(frozen=True)
class Toy:
    """A 2D toy data set: a sampler ``sample(n, generator=None, dtype=torch.float32)``, an exact
    ``log_prob(x)`` (or None when there is no closed form) and a ``support(x)`` indicator (or
    None when the support is the whole plane)."""

    name: str
    sample: Callable[..., Tensor]
    log_prob: Callable[[Tensor], Tensor] | None = None
    support: Callable[[Tensor], Tensor] | None = None


TOYS: dict[str, Toy] = {
    "checkerboard": Toy("checkerboard", checkerboard, checkerboard_log_prob, checkerboard_support),
    "eight_gaussians": Toy("eight_gaussians", eight_gaussians, eight_gaussians_log_prob),
    "two_moons": Toy("two_moons", two_moons),
    "pinwheel": Toy("pinwheel", pinwheel, pinwheel_log_prob),
    "rings": Toy("rings", rings, rings_log_prob),
    "spirals": Toy("spirals", spirals),
}


def toy(name: str) -> Toy:
    """The toy data set called ``name`` (a key of ``TOYS``).

    Example:
        >>> toy("checkerboard").log_prob(torch.tensor([[-3.0, -3.0], [-1.0, -3.0]]))
        tensor([-3.4657,    -inf])
    """
    if name not in TOYS:
        raise ValueError(f"unknown toy data set {name!r}; known: {', '.join(sorted(TOYS))}")
    return TOYS[name]
