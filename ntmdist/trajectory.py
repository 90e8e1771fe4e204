r"""The distribution of a whole NTM trajectory :math:`x_{t_0:t_T}`.

.. math:: \log p(x_{t_0:t_T}) = \log N(x_{t_T}; 0, I) + \sum_{k=1}^{T} \big[
          \log N(g_k(x_{t_{k-1}}); \mu_k, \sigma_k^2)
          + \log |\det \partial g_k / \partial x| \big],

with :math:`(\mu_k, \sigma_k) = P(f(x_{t_k}, t_k), t_k, t_{k-1}, y)` and
:math:`g_k = [h_k \circ]\, f(\cdot, t_{k-1})`. ``log_prob`` runs the transporter once over all
levels and the predictor once over all steps, batched. Sampling stays in u-space and inverts
the transporter once at the end. The condition :math:`y` (labels, a context vector or a
sequence; :mod:`ntmdist.conditioning`) sets the batch shape.

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch import Tensor, nn
from torch.distributions import constraints

from .conditioning import Condition
from .schedule import trajectory_covariance
from .step import ReverseStep, predict, transport
from .transforms import call_and_ladj, inverse, inverse_and_ladj
from .validation import (
    check_generator,
    check_grid,
    check_sample_shape,
    check_tensor,
    check_values,
    check_weight,
    reference,
)

__all__ = ["TrajectoryDistribution"]


def _std_normal(v: Tensor, event_dim: int) -> Tensor:
    lp = -0.5 * v**2 - 0.5 * math.log(2 * math.pi)
    return lp.flatten(v.dim() - event_dim).sum(-1) if event_dim else lp


def _normal(v: Tensor, mu: Tensor, log_sigma: Tensor, event_dim: int) -> Tensor:
    return _std_normal((v - mu) * (-log_sigma).exp(), event_dim) - log_sigma.flatten(
        v.dim() - event_dim
    ).sum(-1)


class TrajectoryDistribution(TorchDistribution):
    r"""Distribution over trajectories ``(T+1, *event)`` of a Normalizing Trajectory Model.

    A Pyro ``TorchDistribution`` (hence a ``torch.distributions.Distribution``).

    Arguments:
        transporter: Level-time transporter :math:`f`.
        predictor: Shared predictor :math:`P`.
        grid: Time grid ``(T+1,)`` or per example ``(*batch, T+1)``.
        event_shape: Shape of one level.
        y: Optional condition (``batch_shape`` is taken from it): a
            :class:`~ntmdist.conditioning.Condition`, or a tensor of integer labels ``(*batch,)``
            or context vectors ``(*batch, C)``.
        step_flow: Optional per-step bijector conditioned on predictor features.
        guidance: Classifier-free guidance weight used when sampling and in ``log_prob``.
        batch_shape: Explicit batch shape (broadcast with those of ``y`` and ``grid``).

    :attr:`T` is the number of reverse steps; :attr:`steps` the list of
    :class:`~ntmdist.step.ReverseStep`.
    """

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(
        self, transporter: nn.Module, predictor: nn.Module, grid: Tensor,
        event_shape: tuple[int, ...], y: Tensor | Condition | None = None,
        step_flow: nn.Module | None = None, guidance: float = 0.0,
        batch_shape: tuple[int, ...] = (), validate_args: bool | None = None,
    ) -> None:
        self.transporter, self.predictor, self.step_flow = transporter, predictor, step_flow
        self.level_shape = torch.Size(event_shape)
        grid = check_grid(grid, validate=False)
        self.T = grid.shape[-1] - 1
        condition = Condition.wrap(y, getattr(predictor, "classes", None))
        shapes = [torch.Size(batch_shape), grid.shape[:-1]]
        if condition is not None:
            shapes.append(condition.batch_shape)
        try:
            batch = torch.broadcast_shapes(*shapes)
        except RuntimeError as error:
            raise ValueError(f"the batch shapes of batch_shape, grid and y do not broadcast: "
                             f"{', '.join(str(tuple(s)) for s in shapes)}") from error
        self.grid, self.condition = grid, condition
        self.guidance = check_weight(guidance, "guidance")
        event = torch.Size((self.T + 1, *self.level_shape))
        super().__init__(batch, event, validate_args)
        if self._validate_args:
            check_grid(grid)

    @property
    def support(self) -> constraints.Constraint:
        return constraints.independent(constraints.real, len(self.event_shape))

    @property
    def y(self) -> Tensor | None:
        """The condition's value (labels, context vectors or sequences), or ``None``."""
        return None if self.condition is None else self.condition.value

    @property
    def steps(self) -> list[ReverseStep]:
        """``steps[k-1]`` is :math:`p(x_{t_{k-1}} | x_{t_k})`, ``k = 1..T``."""
        g = self.grid
        return [
            ReverseStep(self.transporter, self.predictor, g[..., k - 1], g[..., k],
                        self.level_shape, self.condition, self.step_flow, self.guidance)
            for k in range(1, self.T + 1)
        ]

    def expand(self, batch_shape: tuple[int, ...], _instance: object = None
               ) -> TrajectoryDistribution:
        batch_shape = torch.Size(batch_shape)
        condition = None if self.condition is None else self.condition.expand(batch_shape)
        return TrajectoryDistribution(
            self.transporter, self.predictor, self.grid.expand(*batch_shape, -1),
            self.level_shape, condition, self.step_flow, self.guidance, batch_shape,
            validate_args=self._validate_args,
        )

    # -- helpers ---------------------------------------------------------------------------
    def _ref(self) -> Tensor | None:
        """A parameter of the networks: the dtype and device inputs must have."""
        return reference(self.predictor, self.transporter, self.step_flow)

    def _check(self, value: Tensor) -> torch.Size:
        check_tensor(value, "a trajectory", self._ref())
        n = len(self.event_shape)
        if value.dim() < n or value.shape[value.dim() - n :] != self.event_shape:
            raise ValueError(
                f"a trajectory must have shape (*batch, {', '.join(map(str, self.event_shape))})"
                f" = (*batch, T+1, *event), got {tuple(value.shape)}"
            )
        check_values(value, "the trajectory", self._validate_args)
        try:
            return torch.broadcast_shapes(value.shape[: value.dim() - n], self.batch_shape)
        except RuntimeError as e:
            raise ValueError(
                f"trajectory batch shape {tuple(value.shape[: value.dim() - n])} does not "
                f"broadcast with batch_shape {tuple(self.batch_shape)}"
            ) from e

    def _times(self, shape: torch.Size, ref: Tensor) -> Tensor:
        return self.grid.to(ref).expand(*shape, self.T + 1)

    def _condition(self, shape: torch.Size) -> Condition | None:
        return None if self.condition is None else self.condition.expand(shape)

    def _levels(self, condition: Condition | None) -> Condition | None:
        """The condition with a trailing batch dimension that broadcasts against levels."""
        return None if condition is None else condition.unsqueeze()

    # -- densities -------------------------------------------------------------------------
    def log_prob_levels(self, value: Tensor) -> Tensor:
        r"""Per-level terms ``(*batch, T+1)``: index 0 is the prior :math:`\log N(x_{t_T}; 0, I)`,
        index ``k`` the step :math:`\log p(x_{t_{k-1}} | x_{t_k})`. Their sum is ``log_prob``."""
        shape = self._check(value)
        T, ev = self.T, len(self.level_shape)
        value = value.expand(*shape, *self.event_shape)
        grid = self._times(shape, value)
        lead = len(shape)
        low, top = value.narrow(lead, 0, T), value.select(lead, T)
        levels = self._levels(self._condition(shape))
        u, ladj = call_and_ladj(transport(self.transporter, grid[..., :T], levels), low, ev)
        u_in = torch.cat([u.narrow(lead, 1, T - 1), top.unsqueeze(lead)], dim=lead)
        mu, log_sigma, h = predict(self.predictor, u_in, grid[..., 1:], grid[..., :-1], levels,
                                   ev, self.guidance)
        if self.step_flow is not None:
            u, ladj_h = call_and_ladj(self.step_flow(h), u, ev)
            ladj = ladj + ladj_h
        steps = _normal(u, mu, log_sigma, ev) + ladj
        return torch.cat([_std_normal(top, ev).unsqueeze(-1), steps], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        """Exact trajectory log-likelihood, shape ``broadcast(value batch, batch_shape)``."""
        return self.log_prob_levels(value).sum(-1)

    def score(self, value: Tensor, create_graph: bool = False) -> Tensor:
        r"""The gradient :math:`\nabla_{x_{t_0:t_T}} \log p(x_{t_0:t_T})`, shaped like ``value``.

        This is the Stein score of the trajectory density, not Pyro's ``score_parts``
        (score-function estimator terms).
        """
        check_tensor(value, "a trajectory", self._ref())
        with torch.enable_grad():
            v = value.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.log_prob(v).sum(), v, create_graph=create_graph)
        return g if create_graph else g.detach()

    def denoise(self, value: Tensor) -> Tensor:
        r"""Trajectory Tweedie estimate of :math:`x_0` read out at level 0, ``(*batch, *event)``.

        .. math:: \hat x_0 = \Big(x_{t_0} - \sum_j S_{0j} g_j\Big) / (1 - t_0), \quad
                  g = \nabla (-\log p(x_{t_0:t_T})) .
        """
        shape = self._check(value)
        value = value.expand(*shape, *self.event_shape)  # one estimate per batch element
        g = -self.score(value)
        lead = len(shape)
        cov = trajectory_covariance(self._times(shape, g))[..., 0, :]
        cov = cov.reshape(*cov.shape, *(1,) * len(self.level_shape))
        correction = (cov * g).sum(lead)
        t0 = self._times(shape, g)[..., 0].reshape(*shape, *(1,) * len(self.level_shape))
        return (value.expand_as(g).select(lead, 0) - correction) / (1 - t0)

    # -- sampling --------------------------------------------------------------------------
    def _u_chain(
        self, sample_shape: torch.Size, generator: torch.Generator | None, logp: bool = True
    ) -> tuple[list[Tensor], Tensor | None, Tensor]:
        """Ancestral sampling in u-space: returns ``[u_0..u_T]``, log-density terms (``None``
        without ``logp``: samplers skip that work) and the grid; nothing is inverted through the
        transporter here."""
        check_generator(generator)
        shape = check_sample_shape(sample_shape) + self.batch_shape
        ev, T = len(self.level_shape), self.T
        ref = next(self.predictor.parameters(), self.grid)
        ref = ref if ref.is_floating_point() else self.grid
        grid = self._times(shape, ref)
        z = torch.randn((T + 1, *shape, *self.level_shape), generator=generator,
                        dtype=ref.dtype, device="cpu").to(ref.device)
        condition = self._condition(shape)
        us = [z[T]]
        total = _std_normal(z[T], ev) if logp else None
        for k in range(T, 0, -1):
            mu, log_sigma, h = predict(self.predictor, us[0], grid[..., k], grid[..., k - 1],
                                       condition, ev, self.guidance)
            v = mu + log_sigma.exp() * z[k - 1]
            u = v
            if logp:
                total = total + _std_normal(z[k - 1], ev) - log_sigma.flatten(len(shape)).sum(-1)
            if self.step_flow is not None and logp:
                u, ladj = inverse_and_ladj(self.step_flow(h), v, ev)
                total = total + ladj
            elif self.step_flow is not None:  # a sampler: the inverse without its ladj
                u = inverse(self.step_flow(h), v)
            us.insert(0, u)
        return us, total, grid

    def rsample_and_log_prob(
        self, sample_shape: tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Reparameterised trajectories and their exact log-likelihood, with no extra pass."""
        us, logp, grid = self._u_chain(torch.Size(sample_shape), generator)
        traj, ladj = self._to_x(us, grid, ladj=True)
        return traj, logp + ladj.sum(-1)

    def _to_x(self, us: list[Tensor], grid: Tensor, ladj: bool) -> tuple[Tensor, Tensor | None]:
        """The trajectory from u-space levels ``[u_0..u_T]``: one batched transporter inversion
        of levels ``0..T-1`` (level T is noise, where the transporter is the identity), and its
        log-determinants per level when ``ladj``."""
        lead, T = grid.dim() - 1, self.T
        levels = self._levels(self._condition(grid.shape[:-1]))
        low = torch.stack(us[:T], dim=lead)
        transform = transport(self.transporter, grid[..., :T], levels)
        if ladj:
            x, terms = inverse_and_ladj(transform, low, len(self.level_shape))
        else:
            x, terms = inverse(transform, low), None
        return torch.cat([x, us[T].unsqueeze(lead)], dim=lead), terms

    def rsample(
        self, sample_shape: tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        """Reparameterised trajectories ``sample_shape + batch_shape + (T+1, *event)``."""
        return self.rsample_and_log_prob(sample_shape, generator)[0]

    def sample(
        self, sample_shape: tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        """Trajectories as :meth:`rsample` draws them (the same values for the same generator
        state), without gradients and without the log-density work."""
        with torch.no_grad():
            us, _, grid = self._u_chain(torch.Size(sample_shape), generator, logp=False)
            return self._to_x(us, grid, ladj=False)[0]

    def sample_level0(
        self, sample_shape: tuple[int, ...] = (), generator: torch.Generator | None = None
    ) -> Tensor:
        """Level 0 only, ``sample_shape + batch_shape + event``: T predictor steps in u-space and
        one transporter inversion (the fast path of ``NTM.sample``)."""
        us, _, grid = self._u_chain(torch.Size(sample_shape), generator, logp=False)
        transform = transport(self.transporter, grid[..., 0], self._condition(grid.shape[:-1]))
        return inverse(transform, us[0])
