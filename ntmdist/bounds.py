r"""The training loss and the likelihood bounds of an NTM (a mixin of :class:`ntmdist.NTM`).

Training minimises the trajectory NLL of forward trajectories of the data (all steps in one
batched pass). For level-0 data the forward chain :math:`q(x_{t_1:t_T} | x_{t_0})` is a
variational posterior:

.. math:: \mathrm{ELBO}(x) = E_q[\log p(x_{t_0:t_T}) - \log q(x_{t_1:t_T} | x_{t_0})], \quad
          \mathrm{IWAE}_K(x) = E\big[\log \tfrac1K \textstyle\sum_k w_k\big]
          \leq \log p(x_{t_0} = x) ,

given the model's condition :math:`y` when it has one (docs/design.md, section 1).

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
    | Importance Weighted Autoencoders (Burda et al., 2015), arXiv 1509.00519
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .condition import Condition
from .schedule import Schedule
from .validation import check_count, check_data

__all__ = ["Bounds"]


class Bounds:
    """``loss``, ``elbo`` and ``iwae`` of :class:`ntmdist.NTM`, which provides ``event_shape``,
    ``features``, ``schedule``, ``train_schedules``, ``train_particles``,
    ``condition_dropout``, ``encode`` and ``__call__`` (the trajectory distribution).

    Example:
        >>> import ntmdist as nd
        >>> model = nd.NTM((2,), context=3, predictor_options={"width": 16, "depth": 1})
        >>> x, y = torch.randn(4, 5, 2), torch.randn(5, 3)  # y broadcasts to x's batch (4, 5)
        >>> model.iwae(x, y, particles=8).shape, model.elbo(x[0, 0], y[0]).shape
        (torch.Size([4, 5]), torch.Size([]))
    """

    def _check_data(self, x: Tensor, y: object = None, mask: Tensor | None = None,
                    batched: bool = True) -> tuple[torch.Size, Condition | None]:
        """The batch shape of data ``x`` ``(*batch, *event)`` (at least one batch dimension
        when ``batched``) and the condition, checked to broadcast to it."""
        check_data(x, self.event_shape, self._ref(), batched)
        batch = x.shape[: x.dim() - len(self.event_shape)]
        condition = self.encode(y, mask)
        if condition is not None:
            shape = condition.batch_shape
            try:
                ok = torch.broadcast_shapes(shape, batch) == batch
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(f"the condition y of batch shape {tuple(shape)} (from "
                                 f"{tuple(condition.value.shape)}) does not broadcast to the data "
                                 f"batch shape {tuple(batch)}: labels y do not match the data "
                                 "batch")
        return batch, condition

    def loss(
        self, x0: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        r"""The training loss in nats per data dimension on forward trajectories of ``x0``
        ``(batch, *event)`` (``t_min`` drawn per example; T drawn per call from
        ``train_T``): the mean trajectory NLL :math:`-E[\log p(traj)] / D`, or with
        :attr:`train_particles` :math:`K > 1` the mean negative importance-weighted bound
        :math:`-\mathrm{IWAE}_K(x_{t_0}) / D` of level 0, with K forward chains
        :math:`q(x_{t_1:t_T} | x_{t_0})` from one draw of level 0 per example. With one
        particle the two have the same gradient (they differ by :math:`\log q`, which has no
        parameters). In training mode each example's condition ``y`` (``mask``) is replaced by
        the null condition with probability :attr:`condition_dropout` (classifier-free
        guidance), drawn from ``generator``."""
        batch, condition = self._check_data(x0, y, mask)
        if condition is not None and self.training and self.condition_dropout:
            condition = condition.expand(batch).drop(self.condition_dropout, generator)
        if batch.numel() == 0:
            raise ValueError(f"loss needs at least one example, got data of shape "
                             f"{tuple(x0.shape)}")
        schedule = self.train_schedules[0]
        if len(self.train_schedules) > 1:
            pick = torch.randint(len(self.train_schedules), (), generator=generator,
                                 device=generator.device if generator is not None else None)
            schedule = self.train_schedules[int(pick)]
        grid = schedule.draw_grid(batch, x0, generator)
        traj = schedule.sample(x0, len(self.event_shape), generator, grid=grid)
        if self.train_particles == 1:
            return -self(condition, grid=grid).log_prob(traj).mean() / self.features
        level0 = traj.select(len(batch), 0)
        lw = self._log_weights(level0, condition, self.train_particles, generator, schedule,
                               grid)
        bound = torch.logsumexp(lw, 0) - math.log(self.train_particles)
        return -bound.mean() / self.features

    def _log_weights(
        self, x: Tensor, y: object, particles: int, generator: torch.Generator | None,
        schedule: Schedule | None = None, grid: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Log importance weights ``(particles, *batch)`` of ``particles`` forward chains from
        level 0 ``x`` ``(*batch, *event)`` on ``grid`` (``schedule``'s nominal grid by
        default)."""
        _, condition = self._check_data(x, y, mask, batched=False)
        particles = check_count(particles, "particles", 1)
        schedule = self.schedule if schedule is None else schedule
        ev = len(self.event_shape)
        grid = schedule.grid_like(x) if grid is None else grid
        xs = x.expand(particles, *x.shape)
        traj = schedule.sample(xs, ev, generator, grid=grid, from_level0=True)
        dist = self(condition, schedule=schedule, grid=grid)
        return dist.log_prob(traj) - schedule.log_prob_forward(traj, ev, grid)

    def elbo(
        self, x: Tensor, y: Tensor | None = None, particles: int = 1,
        generator: torch.Generator | None = None, schedule: Schedule | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        r"""ELBO on :math:`\log p(x_{t_0} = x \mid y)` in nats (averaged over particles), on
        ``schedule``'s grid (default :attr:`schedule`), for ``x`` ``(*batch, *event)`` with any
        batch shape (none included) and a condition ``y`` that broadcasts to it: shape
        ``batch``."""
        return self._log_weights(x, y, particles, generator, schedule, mask=mask).mean(0)

    def iwae(
        self, x: Tensor, y: Tensor | None = None, particles: int = 64,
        generator: torch.Generator | None = None, schedule: Schedule | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Importance-weighted bound with ``particles`` samples, in nats, on ``schedule``'s
        grid (default :attr:`schedule`); shapes as for :meth:`elbo`."""
        lw = self._log_weights(x, y, particles, generator, schedule, mask=mask)
        return torch.logsumexp(lw, 0) - math.log(particles)

