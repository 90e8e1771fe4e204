r"""Classifier-free guidance as an exact Gaussian combination in logit space.

For Gaussian conditional and unconditional steps :math:`p_c = N(\mu_c, \sigma_c^2)`,
:math:`p_u = N(\mu_u, \sigma_u^2)` and :math:`w \geq 0`, the normalised product
:math:`p_c^{1+w} / p_u^{w}` is Gaussian with

.. math:: r = \mathrm{clip}((\sigma_c / \sigma_u)^2, 0, 1), \quad
          \sigma = \frac{\sigma_c}{\sqrt{1 + w - w r}}, \quad
          \mu = \frac{(1 + w) \mu_c - w r \mu_u}{1 + w - w r} .

The clip keeps the precision :math:`(1+w)/\sigma_c^2 - w/\sigma_u^2` positive.

References:
    | Classifier-Free Diffusion Guidance (Ho & Salimans, 2022), arXiv 2207.12598
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["combine"]


def combine(
    mu_c: Tensor, log_sigma_c: Tensor, mu_u: Tensor, log_sigma_u: Tensor, w: float
) -> tuple[Tensor, Tensor]:
    """Guided ``(mu, log_sigma)`` from conditional and unconditional Gaussian parameters.

    Example:
        >>> mu, ls = combine(torch.tensor([1.0]), torch.tensor([0.0]),
        ...                  torch.tensor([0.0]), torch.tensor([0.0]), w=1.0)
        >>> mu, ls  # equal scales: r = 1, the scale is kept and the mean pushed away from mu_u
        (tensor([2.]), tensor([0.]))
    """
    if w < 0:
        raise ValueError(f"guidance weight must be >= 0, got {w}")
    r = torch.exp(2 * (log_sigma_c - log_sigma_u)).clamp(0, 1)
    denom = 1 + w - w * r
    return ((1 + w) * mu_c - w * r * mu_u) / denom, log_sigma_c - 0.5 * torch.log(denom)
