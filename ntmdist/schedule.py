r"""Time grid and forward process of a Normalizing Trajectory Model.

The interpolant is :math:`x_t = (1 - t) x_0 + t \epsilon`, so
:math:`q(x_t | x_0) = \mathcal{N}((1 - t) x_0, t^2 I)`. A trajectory visits the levels
:math:`t_0 = t_{min} < t_1 < \dots < t_T = 1`; level 0 is the cleanest, level :math:`T` pure noise.

Forward Markov kernel between :math:`s = t_{k-1} < t = t_k`:

.. math:: x_t = \alpha x_s + \sigma \epsilon_k, \quad
          \alpha = \frac{1 - t}{1 - s}, \quad \sigma^2 = t^2 - \alpha^2 s^2 .

Reverse posterior given :math:`x_0`: :math:`q(x_s | x_t, x_0) = \mathcal{N}(A x_t + B x_0, C^2 I)`,

.. math:: A = \frac{s^2 (1-t)}{t^2 (1-s)}, \quad B = \frac{(t-s)(t+s-2ts)}{t^2 (1-s)}, \quad
          C^2 = \frac{s^2 (t-s)(t+s-2ts)}{t^2 (1-s)^2} .

Trajectory covariance given :math:`x_0`:
:math:`S_{ij} = \min(t_i,t_j)^2 (1 - \max(t_i,t_j)) / (1 - \min(t_i,t_j))`.

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
    | Flow Matching for Generative Modeling (Lipman et al., 2022), arXiv 2210.02747
    | Scaling Rectified Flow Transformers (Esser et al., 2024), arXiv 2403.03206 (shifted grid)
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from .validation import check_generator, check_grid, check_tensor, check_values, validating

__all__ = ["Schedule", "kernel_coefficients", "posterior_coefficients", "trajectory_covariance"]

_TINY_TIME = math.sqrt(torch.finfo(torch.float64).tiny)  # t_1 ** 2 must not underflow


def kernel_coefficients(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    r"""Coefficients :math:`(\alpha, \sigma)` of the forward kernel :math:`q(x_t | x_s)`.

    At :math:`t = 1`, :math:`\alpha = 0` and :math:`\sigma = 1`: the top level is independent
    noise.
    """
    alpha = (1 - t) / (1 - s)
    var = t**2 - alpha**2 * s**2
    return alpha, var.clamp_min(0).sqrt()


def posterior_coefficients(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Coefficients :math:`(A, B, C)` of :math:`q(x_s | x_t, x_0) = N(A x_t + B x_0, C^2)`."""
    a = s**2 * (1 - t) / (t**2 * (1 - s))
    b = (t - s) * (t + s - 2 * t * s) / (t**2 * (1 - s))
    c2 = s**2 * (t - s) * (t + s - 2 * t * s) / (t**2 * (1 - s) ** 2)
    return a, b, c2.clamp_min(0).sqrt()


def trajectory_covariance(grid: Tensor) -> Tensor:
    r"""Covariance factor :math:`S` of a forward trajectory given :math:`x_0`, ``(*, T+1, T+1)``.

    :math:`\mathrm{Cov}(x_{t_i}, x_{t_j} | x_0) = S_{ij} I` with
    :math:`S_{ij} = \min(t_i,t_j)^2 (1 - \max(t_i,t_j)) / (1 - \min(t_i,t_j))`,
    diagonal :math:`t_i^2`.
    """
    ti, tj = grid[..., :, None], grid[..., None, :]
    lo, hi = torch.minimum(ti, tj), torch.maximum(ti, tj)
    ratio = torch.where(lo < 1, (1 - hi) / (1 - lo).clamp_min(torch.finfo(grid.dtype).tiny), 1.0)
    return lo**2 * ratio


class Schedule:
    r"""The time grid of an NTM and its forward (noising) process.

    Arguments:
        steps: The number of reverse steps :math:`T \geq 1`.
        t_min: The time of level 0: a number in :math:`[0, t_1)`, or a range ``(lo, hi)`` drawn
            uniformly per example during training (sampling and bounds then use ``lo``).
        shift: The SD3-style shift :math:`m` of the grid,
            :math:`t_k = e^m / (e^m + T/k - 1)` for :math:`k \geq 1` (``0`` gives :math:`k/T`).

    Example:
        >>> sched = Schedule(steps=4, t_min=0.0)
        >>> sched.grid
        tensor([0.0000, 0.2500, 0.5000, 0.7500, 1.0000], dtype=torch.float64)
        >>> traj = sched.sample(torch.zeros(8, 2), generator=torch.Generator().manual_seed(0))
        >>> traj.shape
        torch.Size([8, 5, 2])
    """

    def __init__(
        self, steps: int = 4, t_min: float | tuple[float, float] = 0.0, shift: float = 0.0
    ) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if not isinstance(shift, (int, float)) or not math.isfinite(shift):
            raise ValueError(f"shift must be a finite number, got {shift!r}")
        self.steps = steps
        self.shift = float(shift)
        ks = torch.arange(1, steps + 1, dtype=torch.float64)
        try:
            top = torch.full_like(ks, math.exp(self.shift))
        except OverflowError:
            top = torch.full_like(ks, math.inf)
        levels = top / (top + steps / ks - 1)
        levels[-1] = 1.0
        if not (levels[0] >= _TINY_TIME and (steps == 1 or levels[-2] < 1)):
            raise ValueError(f"shift={shift!r} puts grid times t_1..t_(T-1) onto 0 or 1 in "
                             f"float64 (t_1 < {_TINY_TIME:.2g} or t_(T-1) = 1): use a smaller "
                             "|shift|")
        if isinstance(t_min, (tuple, list)):
            if len(t_min) != 2:
                raise ValueError(f"t_min range must be (lo, hi), got {t_min!r}")
            lo, hi = _number(t_min[0], "t_min"), _number(t_min[1], "t_min")
            self.t_min_range: tuple[float, float] | None = (lo, hi)
        else:
            lo = hi = _number(t_min, "t_min")
            self.t_min_range = None
        first = float(levels[0])
        if not (0.0 <= lo <= hi < first):
            raise ValueError(
                f"t_min must satisfy 0 <= t_min < t_1 = {first:.4g} (lo <= hi for a range), "
                f"got {t_min!r}"
            )
        self.t_min = lo
        self.grid = torch.cat([torch.tensor([lo], dtype=torch.float64), levels])

    def __repr__(self) -> str:
        t_min = self.t_min_range if self.t_min_range is not None else self.t_min
        return f"Schedule(steps={self.steps}, t_min={t_min}, shift={self.shift})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schedule) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(self.config().items()))

    def config(self) -> dict:
        """The arguments that rebuild this schedule (for checkpoints)."""
        t_min = list(self.t_min_range) if self.t_min_range is not None else self.t_min
        return {"steps": self.steps, "t_min": t_min, "shift": self.shift}

    def with_steps(self, steps: int) -> Schedule:
        """The same ``t_min`` and ``shift`` on a grid of ``steps`` steps (multi-T models)."""
        return self if steps == self.steps else Schedule(**{**self.config(), "steps": steps})

    def grid_like(self, ref: Tensor) -> Tensor:
        """The nominal grid ``(T+1,)`` with the dtype and device of ``ref``."""
        return self.grid.to(dtype=ref.dtype, device=ref.device)

    def draw_grid(
        self, batch_shape: torch.Size | tuple[int, ...], ref: Tensor,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """A grid per example, ``(*batch_shape, T+1)``: ``t_0`` drawn from the ``t_min`` range."""
        grid = self.grid_like(ref).expand(*batch_shape, self.steps + 1)
        if self.t_min_range is None:
            return grid
        check_generator(generator)
        lo, hi = self.t_min_range
        u = torch.rand(batch_shape, dtype=ref.dtype, generator=generator, device="cpu")
        t0 = (lo + (hi - lo) * u).to(ref.device)
        return torch.cat([t0[..., None], grid[..., 1:]], dim=-1)

    def kernel(self, k: int) -> tuple[Tensor, Tensor]:
        r"""``(alpha, sigma)`` of :math:`q(x_{t_k} | x_{t_{k-1}})`, ``k = 1..T``."""
        self._check_step(k)
        return kernel_coefficients(self.grid[k - 1], self.grid[k])

    def posterior(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        r"""``(A, B, C)`` of :math:`q(x_{t_{k-1}} | x_{t_k}, x_0)`, ``k = 1..T``."""
        self._check_step(k)
        return posterior_coefficients(self.grid[k - 1], self.grid[k])

    def covariance(self) -> Tensor:
        """The trajectory covariance factor ``S``, shape ``(T+1, T+1)``."""
        return trajectory_covariance(self.grid)

    def _check_step(self, k: int) -> None:
        if not 1 <= k <= self.steps:
            raise ValueError(f"step index k must be in 1..{self.steps}, got {k}")

    def sample(
        self, x0: Tensor, event_dim: int | None = None, generator: torch.Generator | None = None,
        grid: Tensor | None = None, from_level0: bool = False,
    ) -> Tensor:
        r"""Draw a forward trajectory from :math:`q(x_{t_0:t_T} | x_0)`.

        Arguments:
            x0: Clean data, shape ``(*batch, *event)``.
            event_dim: Number of event dimensions; by default every dimension after the first
                (a batch of examples), or 1 for a single vector.
            generator: Optional random generator.
            grid: Optional grid ``(T+1,)`` or ``(*batch, T+1)``; the nominal grid by default.
            from_level0: Treat ``x0`` as level 0 itself (:math:`x_{t_0}`) and draw only the
                forward chain :math:`q(x_{t_1:t_T} | x_{t_0})`.

        Returns:
            The trajectory, shape ``(*batch, T+1, *event)``; level 0 is :math:`x_{t_0}`.
        """
        check_tensor(x0, "x0")
        check_generator(generator)
        check_values(x0, "x0", validating(), scored=False)
        if event_dim is None:
            event_dim = max(x0.dim() - 1, 1)
        if not 0 <= event_dim <= x0.dim():
            raise ValueError(f"event_dim must be in 0..{x0.dim()}, got {event_dim}")
        batch = x0.shape[: x0.dim() - event_dim]
        if grid is None:
            grid = self.grid_like(x0)
        else:
            grid = check_grid(check_tensor(grid, "grid").to(x0), self.steps, validating())
            _check_broadcast(grid, batch)
        grid = grid.expand(*batch, self.steps + 1)
        shape = (*batch, self.steps + 1, *x0.shape[x0.dim() - event_dim :])
        eps = torch.randn(shape, dtype=x0.dtype, generator=generator, device="cpu").to(x0.device)
        t = grid.reshape(*grid.shape, *(1,) * event_dim)
        t0 = t.select(len(batch), 0)
        levels = [x0 if from_level0 else (1 - t0) * x0 + t0 * eps.select(len(batch), 0)]
        for k in range(1, self.steps + 1):
            s_k, t_k = t.select(len(batch), k - 1), t.select(len(batch), k)
            alpha, sigma = kernel_coefficients(s_k, t_k)
            levels.append(alpha * levels[-1] + sigma * eps.select(len(batch), k))
        return torch.stack(levels, dim=len(batch))

    def log_prob_forward(self, traj: Tensor, event_dim: int, grid: Tensor | None = None) -> Tensor:
        r"""Log density of the forward chain :math:`\sum_k \log q(x_{t_k} | x_{t_{k-1}})`.

        Arguments:
            traj: Trajectories ``(*batch, T+1, *event)``.
            event_dim: Number of event dimensions of one level.
            grid: The grid the trajectories were drawn on (nominal by default).

        Returns:
            Log densities of levels ``1..T`` given level 0, shape ``batch``.
        """
        check_tensor(traj, "traj")
        if not 0 <= event_dim < traj.dim() or traj.shape[traj.dim() - event_dim - 1] != (
            self.steps + 1
        ):
            raise ValueError(f"traj must have shape (*batch, T+1 = {self.steps + 1}, *event) with "
                             f"{event_dim} event dimensions, got {tuple(traj.shape)}")
        lead = traj.dim() - event_dim - 1
        if grid is None:
            grid = self.grid_like(traj)
        else:
            grid = check_grid(check_tensor(grid, "grid").to(traj), self.steps, validating())
            _check_broadcast(grid, traj.shape[:lead])
        grid = grid.expand(*traj.shape[:lead], self.steps + 1)
        alpha, sigma = kernel_coefficients(grid[..., :-1], grid[..., 1:])
        alpha = alpha.reshape(*alpha.shape, *(1,) * event_dim)
        sigma = sigma.reshape(*sigma.shape, *(1,) * event_dim)
        x_s, x_t = traj.narrow(lead, 0, self.steps), traj.narrow(lead, 1, self.steps)
        z = (x_t - alpha * x_s) / sigma
        lp = -0.5 * z**2 - sigma.log() - 0.5 * math.log(2 * math.pi)
        return lp.flatten(lead).sum(-1)


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) and not (
        torch.is_tensor(value) and value.numel() == 1
    ):
        raise ValueError(f"{name} must be a number or a (lo, hi) pair, got {value!r}")
    return float(value)


def _check_broadcast(grid: Tensor, batch: torch.Size) -> None:
    """The grid's batch dimensions must expand to ``batch``."""
    try:
        ok = torch.broadcast_shapes(grid.shape[:-1], batch) == batch
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"a grid of shape {tuple(grid.shape)} does not expand to the batch "
                         f"shape {tuple(batch)} + (T+1,)")
