r"""An NTM as the density estimator of the ``sbi`` package's neural posterior estimation (NPE).

sbi (Tejero-Cantero et al., "sbi: A toolkit for simulation-based inference", JOSS 2020) trains
any ``ConditionalDensityEstimator`` that a build function ``build(theta, x)`` returns, passed as
``NPE(prior, density_estimator=build)``. :func:`posterior_ntm` is such a build function, and
:class:`NTMEstimator` the estimator: an :class:`~ntmdist.NTM` over :math:`\theta` with the
observation :math:`x` as its context, on standardised scales (as sbi's own flows, with the mean
and standard deviation of the training simulations):

.. math:: z = (\theta - m_\theta) / s_\theta, \qquad c = (x - m_x) / s_x, \qquad
          \log q(\theta \mid x) = \log q(z \mid c) - \textstyle\sum_i \log s_{\theta, i} .

What sbi calls, and what it gets:

- ``loss(theta, x)``: per example, the trajectory NLL :math:`-\log p(z_{t_0:t_T} \mid c)` of a
  forward trajectory of :math:`z` (plus :math:`\sum_i \log s_{\theta, i}`), in nats: the NTM's
  training objective (:meth:`~ntmdist.NTM.loss` is its mean per dimension), whose minimiser
  is the posterior;
- ``sample(shape, x)``: :meth:`~ntmdist.NTM.sample` (T predictor steps, one transporter
  inversion), mapped back to :math:`\theta`; exact draws of the model;
- ``log_prob(theta, x)``: the importance-weighted bound (:meth:`~ntmdist.NTM.iwae`, ``particles``
  forward chains) on :math:`\log q(\theta \mid x)`. An NTM's marginal density of level 0 is
  not tractable: this value is random and a lower bound in expectation, tight as
  ``particles`` grows. sbi uses it for ``posterior.log_prob``, for its leakage correction and as
  the potential of ``sample_with="mcmc"``, ``"vi"``, ``"importance"`` and ``map()``; those are
  then approximate. Direct sampling (the default ``build_posterior()``, with rejection outside
  the prior's support) uses only ``sample``.

Only single-round NPE trains on ``loss``; multi-round NPE-C's atomic loss would train on the
bound. The NTM is trained on its trajectory NLL, so its options must make that the whole
objective: one number of steps T (no ``train_T``), one trajectory per example
(``train_particles=1``) and no condition dropout.

References:
    | Fast epsilon-free Inference of Simulation Models with Bayesian Conditional Density
      Estimation (Papamakarios & Murray, 2016), arXiv 1605.06376
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078

Example:
    >>> import torch
    >>> from sbi.inference import NPE
    >>> from sbi.utils import BoxUniform
    >>> prior = BoxUniform(-torch.ones(2), torch.ones(2))
    >>> theta = prior.sample((64,))
    >>> x = theta + 0.1 * torch.randn(64, 2)
    >>> build = posterior_ntm(predictor_options={"width": 16, "depth": 1})
    >>> npe = NPE(prior, density_estimator=build, show_progress_bars=False)
    >>> estimator = npe.append_simulations(theta, x).train(max_num_epochs=1)
    >>> type(estimator).__name__
    'NTMEstimator'
    >>> posterior = npe.build_posterior()
    >>> posterior.sample((5,), x=x[0], show_progress_bars=False).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..model import NTM

try:
    from sbi.neural_nets.estimators import ConditionalDensityEstimator
except ImportError as error:  # sbi missing, or shadowed by a script named sbi.py
    raise ImportError("ntmdist.integrations.sbi needs the sbi package, an optional extra: "
                      "pip install 'ntmdist[sbi]'") from error

__all__ = ["NTMEstimator", "posterior_ntm"]


class NTMEstimator(ConditionalDensityEstimator):
    r"""An :class:`~ntmdist.NTM` posterior :math:`q(\theta \mid x)` as sbi's
    ``ConditionalDensityEstimator`` (see the module docstring for what each method returns).

    Arguments:
        model: A conditional NTM whose event is :math:`\theta` (``input_shape``) and whose
            condition is :math:`x` (``condition_shape``: the context, or what its
            ``context_net`` takes).
        condition_shape: The shape of one observation :math:`x`.
        theta_mean, theta_std: :math:`m_\theta, s_\theta`, broadcastable to ``input_shape``.
        x_mean, x_std: :math:`m_x, s_x`, broadcastable to ``condition_shape``.
        particles: Forward chains per value of the bound that ``log_prob`` returns.
    """

    def __init__(
        self, model: NTM, condition_shape: tuple[int, ...], theta_mean: Tensor | float = 0.0,
        theta_std: Tensor | float = 1.0, x_mean: Tensor | float = 0.0,
        x_std: Tensor | float = 1.0, particles: int = 64,
    ) -> None:
        if not isinstance(model, NTM):
            raise TypeError(f"model must be an ntmdist.NTM, got {type(model).__name__}")
        if model.condition.kind not in ("vector", "sequence"):
            raise ValueError("model must be conditioned on a context (NTM(..., context=C)), "
                             f"not on {model.condition.kind}")
        if model.train_particles != 1 or len(model.train_schedules) != 1 or \
                model.condition_dropout:
            raise ValueError("sbi trains on the trajectory NLL: the NTM needs "
                             "train_particles=1, no train_T and condition_dropout=0")
        if isinstance(particles, bool) or not isinstance(particles, int) or particles < 1:
            raise ValueError(f"particles must be an integer >= 1, got {particles!r}")
        super().__init__(model, model.event_shape, torch.Size(condition_shape))
        self.particles = particles
        for name, value in (("theta_mean", theta_mean), ("theta_std", theta_std),
                            ("x_mean", x_mean), ("x_std", x_std)):
            self.register_buffer(name, torch.as_tensor(value, dtype=torch.get_default_dtype()))
        if (self.theta_std <= 0).any() or (self.x_std <= 0).any():
            raise ValueError("theta_std and x_std must be positive")

    def _z(self, theta: Tensor) -> Tensor:
        return (theta - self.theta_mean) / self.theta_std

    def _c(self, x: Tensor) -> Tensor:
        return (x - self.x_mean) / self.x_std

    def _log_scale(self) -> Tensor:
        """:math:`\\sum_i \\log s_{\\theta, i}` over the event of :math:`\\theta`."""
        return self.theta_std.log().expand(self.input_shape).sum()

    def _check(self, theta: Tensor, x: Tensor) -> None:
        self._check_input_shape(theta)
        self._check_condition_shape(x)

    def loss(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """Per-example trajectory NLL in nats of ``input`` ``(B, *input_shape)`` given
        ``condition`` ``(B, *condition_shape)``: shape ``(B,)``."""
        self._check(input, condition)
        z = self._z(input)
        schedule, batch = self.net.schedule, input.shape[:1]
        grid = schedule.draw_grid(batch, z)
        traj = schedule.sample(z, len(self.input_shape), grid=grid)
        return self._log_scale() - self.net(self._c(condition), grid=grid).log_prob(traj)

    def log_prob(self, input: Tensor, condition: Tensor, **kwargs: Any) -> Tensor:
        """The bound on :math:`\\log q(\\theta \\mid x)` for ``input`` ``(S, B, *input_shape)``
        or ``(B, *input_shape)`` and ``condition`` ``(B, *condition_shape)`` or
        ``(S, B, *condition_shape)``: shape ``(S, B)`` (``S = 1`` when ``input`` has none)."""
        self._check(input, condition)
        if input.dim() == len(self.input_shape) + 1:
            input = input.unsqueeze(0)
        bound = self.net.iwae(self._z(input), self._c(condition), particles=self.particles)
        return bound - self._log_scale()

    def sample(self, sample_shape: torch.Size, condition: Tensor, **kwargs: Any) -> Tensor:
        """Posterior draws given ``condition`` ``(B, *condition_shape)``: shape
        ``(*sample_shape, B, *input_shape)``."""
        self._check_condition_shape(condition)
        sample_shape = torch.Size(sample_shape)
        batch = condition.shape[: condition.dim() - len(self.condition_shape)]
        if len(batch) != 1:
            raise ValueError(f"condition must be (batch, *{tuple(self.condition_shape)}), got "
                             f"shape {tuple(condition.shape)}")
        n = sample_shape.numel() * batch[0]
        c = self._c(condition).expand(*sample_shape, *condition.shape)
        z = self.net.sample(n, c.reshape(n, *self.condition_shape))
        theta = z * self.theta_std + self.theta_mean
        return theta.reshape(*sample_shape, *batch, *self.input_shape)

    @property
    def embedding_net(self) -> torch.nn.Module | None:
        """The NTM's ``context_net`` (sbi's name for it)."""
        return self.net.context_net


def posterior_ntm(
    z_score_theta: bool = True, z_score_x: bool = True, particles: int = 64,
    **options: Any,
) -> Callable[[Tensor, Tensor], NTMEstimator]:
    r"""A build function for ``sbi``'s ``NPE(prior, density_estimator=...)``: given the
    training simulations :math:`\theta` ``(N, *input_shape)`` and :math:`x` ``(N, C)`` (or
    ``(N, *condition_shape)`` with a ``context_net`` in ``options``), it returns an
    :class:`NTMEstimator` around ``NTM(input_shape, context=C, **options)``.

    Arguments:
        z_score_theta, z_score_x: Standardise each coordinate of :math:`\theta` (:math:`x`) by
            the mean and standard deviation of the simulations (sbi's "independent").
        particles: Forward chains per value of ``log_prob``'s bound.
        options: Keyword arguments of :class:`~ntmdist.NTM` (``context`` defaults to
            :math:`x`'s size).
    """

    def build(theta: Tensor, x: Tensor) -> NTMEstimator:
        options.setdefault("context", x.shape[-1])
        with torch.no_grad():
            stats = {"particles": particles}
            if z_score_theta:
                stats.update(theta_mean=theta.mean(0), theta_std=theta.std(0).clamp_min(1e-14))
            if z_score_x:
                stats.update(x_mean=x.mean(0), x_std=x.std(0).clamp_min(1e-14))
        return NTMEstimator(NTM(tuple(theta.shape[1:]), **options), tuple(x.shape[1:]), **stats)

    return build
