r"""Pyro composition: NTM trajectories as Pyro models, SVI training, posterior inference.

A :class:`~ntmdist.TrajectoryDistribution` is a Pyro ``TorchDistribution`` and every conditioned
reverse step ``dist.steps[k].condition(x)`` a Pyro ``TransformedDistribution``, so either can be
used directly in ``pyro.sample``, inside ``pyro.plate`` and under ``poutine`` handlers. This
module adds the two pieces that are specific to trajectories:

* :func:`sample_trajectory` writes the generative chain as one Pyro site per level,
  ``f"{name}_{k}"`` for :math:`k = T, \dots, 0`, so that observations, ``poutine.condition`` and
  guides can address single levels;
* :func:`forward_guide` is the forward (noising) chain :math:`q(x_{t_1:t_T} | x_{t_0})` as a Pyro
  guide. With it, ``SVI`` and ``Trace_ELBO`` estimate

  .. math:: \mathrm{ELBO}(x) = E_q\big[\log p(x_{t_0:t_T}) - \log q(x_{t_1:t_T} | x_{t_0} = x)
            \big] = E_q[\log p(x_{t_0:t_T})] + H,

  the bound of :meth:`ntmdist.NTM.elbo`, where the entropy of the Gaussian forward chain is the
  constant (:func:`forward_entropy`)

  .. math:: H = \sum_{k=1}^{T} \frac{D}{2} \log(2 \pi e \sigma_k^2), \qquad
            \sigma_k^2 = t_k^2 - \alpha_k^2 t_{k-1}^2, \quad
            \alpha_k = \frac{1 - t_k}{1 - t_{k-1}} .

  With ``t_min = 0`` (level 0 is the data), :math:`E[\mathrm{ELBO}] = -D \cdot
  \mathrm{NTM.loss} + H`: training by SVI with this guide is training by the NTM loss.

The whole trajectory can also be one site, ``pyro.sample("traj", dist)``: its ``log_prob`` is a
single batched pass, the cheaper choice for NUTS when no level needs its own name.

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
    | Pyro: Deep Universal Probabilistic Programming (Bingham et al., 2018), arXiv 1810.09538
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pyro
import torch
from pyro.distributions import Normal
from torch import Tensor

from .schedule import Schedule, kernel_coefficients
from .trajectory import TrajectoryDistribution

__all__ = ["forward_entropy", "forward_guide", "sample_trajectory"]


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a site name prefix must be a non-empty string, got {name!r}")


def sample_trajectory(
    name: str, dist: TrajectoryDistribution, obs: Tensor | None = None
) -> Tensor:
    r"""Sample an NTM trajectory as one Pyro site per level and return level 0.

    Site ``f"{name}_{T}"`` is :math:`x_{t_T} \sim N(0, I)` and site ``f"{name}_{k}"``, for
    :math:`k = T-1, \dots, 0`, is :math:`x_{t_k} \sim` ``dist.steps[k].condition(x_{t_{k+1}})``
    (a Pyro ``TransformedDistribution``). The sum of the site log-densities is
    ``dist.log_prob(trajectory)``; enclosing plates broadcast every level like any Pyro site.

    Arguments:
        name: Prefix of the site names.
        dist: The trajectory distribution, e.g. ``model()`` or ``model(y)``.
        obs: Optional observed level 0, shape ``(*batch, *event)``.

    Returns:
        Level 0, :math:`x_{t_0}`, shape ``(*batch, *event)`` (``obs`` itself when given).

    Example:
        >>> import ntmdist as nd
        >>> from pyro import poutine
        >>> model = nd.NTM((2,), nd.Schedule(steps=3))
        >>> def prior():
        ...     with pyro.plate("data", 5):
        ...         return sample_trajectory("x", model())
        >>> trace = poutine.trace(prior).get_trace()
        >>> [n for n in trace.nodes if n.startswith("x_")]
        ['x_3', 'x_2', 'x_1', 'x_0']
        >>> trace.nodes["x_0"]["value"].shape
        torch.Size([5, 2])
    """
    _check_name(name)
    if not isinstance(dist, TrajectoryDistribution):
        raise TypeError(f"dist must be a TrajectoryDistribution, got {type(dist).__name__}")
    T, ev = dist.T, len(dist.level_shape)
    loc = dist.grid.new_zeros(dist.batch_shape + dist.level_shape)
    x = pyro.sample(f"{name}_{T}", Normal(loc, torch.ones_like(loc)).to_event(ev))
    steps = dist.steps
    for k in range(T - 1, -1, -1):
        x = pyro.sample(f"{name}_{k}", steps[k].condition(x), obs=obs if k == 0 else None)
    return x


def forward_guide(
    name: str, schedule: Schedule, event_dim: int = 1
) -> Callable[[Tensor], Tensor]:
    r"""The forward chain :math:`q(x_{t_1:t_T} | x_{t_0})` as a Pyro guide for
    :func:`sample_trajectory`.

    The returned function ``g(x0)`` samples the sites ``f"{name}_{k}"``, :math:`k = 1, \dots, T`,
    as :math:`x_{t_k} \sim N(\alpha_k x_{t_{k-1}}, \sigma_k^2 I)` starting from the level-0 values
    ``x0`` ``(*batch, *event)``, and returns the top level. Call it inside the same plates as
    the model's :func:`sample_trajectory` (it has no parameters, and it uses the nominal grid of
    ``schedule``, the grid of ``model()``). The ELBO that ``Trace_ELBO`` then estimates is
    :meth:`ntmdist.NTM.elbo`; its entropy term is :func:`forward_entropy` (module docstring).

    Arguments:
        name: Prefix of the site names (the same as in :func:`sample_trajectory`).
        schedule: The model's schedule.
        event_dim: Number of event dimensions of one level (1 for vectors).

    Example:
        >>> import ntmdist as nd
        >>> from pyro.infer import SVI, Trace_ELBO
        >>> ntm = nd.NTM((2,), nd.Schedule(steps=2))
        >>> guide_chain = forward_guide("x", ntm.schedule)
        >>> def model(x):
        ...     pyro.module("ntm", ntm)
        ...     with pyro.plate("data", len(x)):
        ...         sample_trajectory("x", ntm(), obs=x)
        >>> def guide(x):
        ...     with pyro.plate("data", len(x)):
        ...         guide_chain(x)
        >>> svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        >>> loss = svi.step(torch.randn(16, 2))  # -ELBO summed over the batch, in nats
        >>> pyro.clear_param_store()
    """
    _check_name(name)
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, got {type(schedule).__name__}")
    if isinstance(event_dim, bool) or not isinstance(event_dim, int) or event_dim < 1:
        raise ValueError(f"event_dim must be an integer >= 1, got {event_dim!r}")

    def guide(x0: Tensor) -> Tensor:
        if not torch.is_tensor(x0) or not x0.is_floating_point() or x0.dim() < event_dim:
            raise TypeError(f"x0 must be a floating point tensor with at least {event_dim} "
                            "event dimensions")
        grid = schedule.grid_like(x0)
        alpha, sigma = kernel_coefficients(grid[:-1], grid[1:])
        x = x0
        for k in range(1, schedule.steps + 1):
            q = Normal(alpha[k - 1] * x, sigma[k - 1].expand(x.shape)).to_event(event_dim)
            x = pyro.sample(f"{name}_{k}", q)
        return x

    return guide


def forward_entropy(schedule: Schedule, event_shape: tuple[int, ...] | int) -> float:
    r"""Entropy :math:`H = \sum_{k=1}^T \frac{D}{2} \log(2 \pi e \sigma_k^2)` of the forward chain
    :math:`q(x_{t_1:t_T} | x_{t_0})` on the nominal grid, in nats (independent of :math:`x_{t_0}`).

    Example:
        >>> import ntmdist as nd
        >>> round(forward_entropy(nd.Schedule(steps=1), (2,)), 4)  # one step to N(0, I)
        2.8379
    """
    d = event_shape if isinstance(event_shape, int) else math.prod(event_shape)
    alpha, sigma = kernel_coefficients(schedule.grid[:-1], schedule.grid[1:])
    return float((0.5 * d * torch.log(2 * math.pi * math.e * sigma**2)).sum())
