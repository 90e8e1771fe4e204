r"""The NTM module: builds its networks (:mod:`ntmdist.defaults`), its config
(:mod:`ntmdist.config`), trajectory distributions given a condition (:mod:`ntmdist.conditioning`)
and samplers; its training loss and likelihood bounds are in :mod:`ntmdist.bounds`, its
initialisation from flow matching (:meth:`NTM.from_flow_matching`) in :mod:`ntmdist.warmstart`.

Reference:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import config as configuration
from . import defaults
from .bounds import Bounds
from .conditioning import Condition, ConditionSpec
from .schedule import Schedule
from .trajectory import TrajectoryDistribution
from .validation import (
    check_count,
    check_event_shape,
    check_tensor,
    check_values,
    renamed,
    validating,
)
from .warmstart import from_flow_matching

__all__ = ["NTM"]


class NTM(Bounds, nn.Module):
    r"""Normalizing Trajectory Model over events of shape ``event_shape``.

    Arguments:
        event_shape: Shape of one example, e.g. ``(2,)``.
        schedule: The time grid (``Schedule(steps=4)`` by default).
        transporter: ``"auto"`` (two spline autoregressive blocks for vectors ``(D,)``, two
            TarFlow causal-transformer blocks over patches for images ``(C, H, W)``), ``None``
            for the identity (Gaussian reverse steps), a :class:`Transporter`, or a list of lazy
            blocks (ntmdist, zuko or nflows) that accept a 32-feature time context (64 with
            ``condition_transporter``: time and condition).
        predictor: ``None`` (the default network: ``"mlp"`` for vectors, ``"unet"`` for
            images), a name of :data:`ntmdist.defaults.PREDICTORS` (options in
            ``predictor_options``), or a module ``predictor(u_t, t, s, y)`` returning
            ``(mu, log_sigma)`` (``mask=``/``null=`` keywords are passed only when set).
        classes: Number of classes for class-conditional models, labels ``y`` ``(*batch,)``.
        step_flow: ``None``, ``"auto"`` (the default of :mod:`ntmdist.defaults`: for vectors
            with the default predictor, a spline autoregressive bijector per step conditioned
            on predictor features of :math:`x_t`, hence on the condition too; none otherwise),
            or a lazy bijector taking the predictor's extra output as context.
        predictor_options: Keyword arguments of the predictor named by ``predictor``.
        transporter_options: Keyword arguments of :meth:`Transporter.default` (vectors) or
            :meth:`Transporter.default_image` (images). For vectors ``passes`` defaults to
            :func:`ntmdist.defaults.vector_passes` (2 groups of features with the per-step
            bijector, 4 without; ``passes=D`` is fully autoregressive).
        label_dropout: The old name of ``condition_dropout``.
        step_flow_options: ``bins``, ``bound``, ``hidden`` or ``passes`` of the default
            per-step bijector (:func:`ntmdist.defaults.vector_splines`; ``passes`` as for the
            transporter).
        train_steps: The old name of ``train_T``.
        train_particles: Forward trajectories per example in :meth:`loss`. 1 (the default)
            trains on the trajectory NLL; :math:`K > 1` on the importance-weighted bound of
            level 0 (Burda et al.), which trains the marginal :math:`p(x_{t_0})` rather than the
            trajectory, at K times the compute and memory per step (docs/ablations.md).
        context: ``C`` for context vectors ``y`` ``(*batch, C)``, ``(L, E)`` for sequences
            ``y`` ``(*batch, L, E)`` with an optional boolean ``mask`` ``(*batch, L)`` (True: a
            real token); exclusive with ``classes`` (:mod:`ntmdist.conditioning`).
        context_net: A module mapping raw observations ``(*batch, ...)`` to the context
            ``(*batch, C)`` (or ``(*batch, L, E)``), trained jointly (an embedding net, as in
            sbi); ``y`` is then the raw observation. Needs ``context``.
        condition_dropout: Probability of replacing an example's condition by the null
            condition in :meth:`loss` while training (classifier-free guidance); default 0.1
            for class-conditional models, 0 otherwise.
        condition_transporter: Condition the transporter's blocks on the condition too (still
            exact: invertible in :math:`x` for a fixed condition; docs/design.md, section 5).
        train_T: Numbers of steps T to train on, e.g. ``(4, 8, 16)`` as in the paper: each
            call of :meth:`loss` draws one (uniformly) and uses ``schedule.with_steps(T)``, so
            that one model samples and bounds the likelihood with any of them
            (``sample(..., schedule=schedule.with_steps(8))``). Default: ``schedule.steps`` only.

    Example:
        >>> model = NTM(event_shape=(2,), schedule=Schedule(steps=4))
        >>> dist = model()
        >>> traj = dist.sample((3,))
        >>> traj.shape, dist.log_prob(traj).shape
        (torch.Size([3, 5, 2]), torch.Size([3]))
        >>> conditional = NTM((2,), context=3, predictor_options={"width": 32, "depth": 1})
        >>> conditional(torch.randn(4, 3)).batch_shape
        torch.Size([4])
    """

    def __init__(
        self, event_shape: tuple[int, ...], schedule: Schedule | None = None,
        transporter: str | nn.Module | list[nn.Module] | None = "auto",
        predictor: str | nn.Module | None = None, classes: int | None = None,
        step_flow: str | nn.Module | None = "auto", predictor_options: dict | None = None,
        transporter_options: dict | None = None, label_dropout: float | None = None,
        step_flow_options: dict | None = None, train_steps: Sequence[int] | None = None,
        train_particles: int = 1, *, context: int | Sequence[int] | None = None,
        context_net: nn.Module | None = None, condition_dropout: float | None = None,
        condition_transporter: bool = False, train_T: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.event_shape = check_event_shape(event_shape)
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule or None, got {type(schedule).__name__}")
        name = "train_T" if train_steps is None else "train_steps"
        train_T = renamed(train_T, train_steps, "train_T", "train_steps")
        if train_T is not None and (not isinstance(train_T, (tuple, list)) or len(train_T) == 0):
            raise TypeError(f"{name} must be a non-empty tuple of numbers of steps such as "
                            f"(4, 8), got {train_T!r}")
        self.condition = ConditionSpec.of(classes, context)
        dropout = renamed(condition_dropout, label_dropout, "condition_dropout",
                           "label_dropout")
        p = (0.1 if classes else 0.0) if dropout is None else dropout
        if not 0 <= p < 1:
            name = "label_dropout" if label_dropout is not None else "condition_dropout"
            raise ValueError(f"{name} must be in [0, 1), got {dropout}")
        if context_net is not None and not isinstance(context_net, nn.Module):
            raise TypeError(f"context_net must be a module, got {type(context_net).__name__}")
        if context_net is not None and context is None:
            raise ValueError("context_net maps observations to a context: pass context= too")
        self.schedule = Schedule() if schedule is None else schedule
        self.train_schedules = [self.schedule.with_steps(T)
                                for T in train_T or (self.schedule.steps,)]
        self.train_particles = check_count(train_particles, "train_particles", 1)
        self.classes, self.context = classes, self.condition.context
        self.condition_dropout = float(p)
        resolved = defaults.resolve(self.event_shape, transporter, predictor, step_flow,
                                    transporter_options, step_flow_options)
        self.transporter, self.predictor, self.step_flow = defaults.build(
            self.event_shape, self.condition, resolved, transporter, predictor, step_flow,
            predictor_options, condition_transporter)
        self.context_net = context_net
        self.denoiser: nn.Module | None = None
        self._arguments = configuration.arguments(
            self.event_shape, self.schedule, self.condition.config(), resolved,
            predictor_options, dropout, self.transporter.conditioning is not None, train_T,
            self.train_particles)

    @property
    def label_dropout(self) -> float:
        """The old name of :attr:`condition_dropout`."""
        return self.condition_dropout

    def config(self) -> dict:
        """The constructor arguments as plain data (for checkpoints; :mod:`ntmdist.config`);
        ``"custom"`` marks a module passed by the user, which :meth:`from_config` cannot
        rebuild."""
        return configuration.describe(self)

    @classmethod
    def from_config(cls, config: dict) -> NTM:
        """Rebuild a model (untrained weights) from :meth:`config` (:func:`ntmdist.config.rebuild`;
        configs of earlier versions are upgraded)."""
        return configuration.rebuild(cls, config)

    from_flow_matching = classmethod(from_flow_matching)

    @property
    def features(self) -> int:
        """Number of dimensions of one example."""
        return self.event_shape.numel()

    def _ref(self) -> Tensor:
        return next(self.parameters())

    def encode(self, y: object, mask: Tensor | None = None) -> Condition | None:
        """The condition ``y`` (``mask``) checked and wrapped as a
        :class:`~ntmdist.conditioning.Condition`, after :attr:`context_net` when the model has
        one; ``None`` (the null condition) and conditions already wrapped pass through.

        Raises:
            TypeError, ValueError: As :meth:`ConditionSpec.check`.

        Example:
            >>> model = NTM((2,), context=(3, 4))
            >>> c = model.encode(torch.randn(5, 3, 4), mask=torch.rand(5, 3) > 0.5)
            >>> c.batch_shape, c.mask.shape
            (torch.Size([5]), torch.Size([5, 3]))
        """
        if isinstance(y, Condition):
            return y
        if y is not None and self.context_net is not None:
            if not torch.is_tensor(y):
                raise TypeError(f"observations for context_net must be a tensor, got "
                                f"{type(y).__name__}")
            if y.is_floating_point():
                check_tensor(y, "the observations y", self._ref())
                check_values(y, "the observations y", validating(), scored=False)
            y = self.context_net(y)
        return self.condition.check(y, mask, self._ref())

    def forward(
        self, y: Tensor | None = None, schedule: Schedule | None = None, guidance: float = 0.0,
        grid: Tensor | None = None, mask: Tensor | None = None,
    ) -> TrajectoryDistribution:
        """The trajectory distribution given the condition ``y`` (labels ``(*batch,)``, context
        vectors ``(*batch, C)`` or sequences ``(*batch, L, E)`` with ``mask``); its batch
        shape is that of ``y``. ``y=None`` in a conditional model is the null condition;
        ``guidance`` :math:`w` combines the conditional and null predictions of every step
        (:func:`ntmdist.guidance.combine`)."""
        schedule = self.schedule if schedule is None else schedule
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule or None, got {type(schedule).__name__}")
        if grid is None:
            grid = schedule.grid_like(self._ref())
        else:
            grid = check_tensor(grid, "grid").to(self._ref())
        return TrajectoryDistribution(
            self.transporter, self.predictor, grid, tuple(self.event_shape), self.encode(y, mask),
            self.step_flow, guidance,
        )

    def sample(
        self, n: int, y: Tensor | None = None, guidance: float = 0.0,
        denoise: str | None = None, generator: torch.Generator | None = None,
        schedule: Schedule | None = None, mask: Tensor | None = None,
    ) -> Tensor:
        """``n`` samples of level 0, ``(n, *event)``, given one condition ``y`` (``mask``),
        repeated, or ``n`` of them.

        ``denoise=None`` returns :math:`x_{t_0}` (T predictor steps, one transporter inversion);
        ``"tweedie"`` the trajectory-Tweedie estimate of :math:`x_0` (one backward pass);
        ``"learned"`` the learned denoiser :math:`D(u_{t_0}, t_0, y)` (T predictor steps and
        :math:`D` once: no transporter inversion, no backward pass; see
        :func:`ntmdist.training.fit_denoiser`).
        """
        if denoise not in (None, "tweedie", "learned"):
            raise ValueError(f"denoise must be None, 'tweedie' or 'learned', got {denoise!r}")
        if denoise == "learned" and self.denoiser is None:
            raise ValueError("denoise='learned' needs a denoiser: train one with "
                             "ntmdist.training.fit_denoiser(model, data, steps=...)")
        n = check_count(n, "n")
        condition = self.encode(y, mask)
        shape = torch.Size((n,))
        if condition is not None:
            batch = condition.batch_shape
            if len(batch) > 1 or batch.numel() not in (1, n):
                what = "label" if self.condition.kind == "labels" else "context"
                raise ValueError(f"y must be one {what} or {n} {what}s (one per sample), got "
                                 f"shape {tuple(condition.value.shape)}")
            condition, shape = condition.expand(shape), torch.Size(())
        dist = self(condition, schedule=schedule, guidance=guidance)
        if denoise == "tweedie":
            with torch.no_grad():
                traj = dist.sample(shape, generator)
            return dist.denoise(traj).detach()
        with torch.no_grad():
            if denoise == "learned":
                us, _, grid = dist._u_chain(shape, generator, logp=False)
                extras = {} if condition is None else condition.extras()
                value = None if condition is None else condition.value
                return self.denoiser(us[0], grid[..., 0], value, **extras)
            return dist.sample_level0(shape, generator)
