r"""The NTM module: builds trajectory distributions, its training loss, likelihood bounds and
samplers.

Training minimises the trajectory NLL of forward trajectories of the data (all steps in one
batched pass). For level-0 data the forward chain :math:`q(x_{t_1:t_T} | x_{t_0})` is a
variational posterior:

.. math:: \mathrm{ELBO}(x) = E_q[\log p(x_{t_0:t_T}) - \log q(x_{t_1:t_T} | x_{t_0})], \quad
          \mathrm{IWAE}_K(x) = E\big[\log \tfrac1K \textstyle\sum_k w_k\big]
          \leq \log p(x_{t_0} = x) .

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
    | Importance Weighted Autoencoders (Burda et al., 2015), arXiv 1509.00519
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import rebuild
from .defaults import default_networks
from .guidance import drop_labels
from .schedule import Schedule
from .trajectory import TrajectoryDistribution
from .validation import (
    check_count,
    check_data,
    check_event_shape,
    check_labels,
    check_tensor,
    sample_labels,
)
from .warmstart import flow_matching_predictor

__all__ = ["NTM"]


class NTM(nn.Module):
    r"""Normalizing Trajectory Model over events of shape ``event_shape``.

    Arguments:
        event_shape: Shape of one example, e.g. ``(2,)``.
        schedule: The time grid (``Schedule(steps=4)`` by default).
        transporter: ``"auto"`` (two spline autoregressive blocks for vectors ``(D,)``, two
            TarFlow causal-transformer blocks over patches for images ``(C, H, W)``), ``None``
            for the identity (Gaussian reverse steps), a :class:`Transporter`, or a list of lazy
            blocks (ntmdist, zuko or nflows) that accept a 32-feature time context.
        predictor: A predictor module (``MLPPredictor`` for vectors, the U-Net
            ``ImagePredictor`` for images, by default).
        classes: Number of classes for class-conditional models.
        step_flow: ``None``, ``"auto"`` (the default of :mod:`ntmdist.defaults`: for vectors
            with the default predictor, a spline autoregressive bijector per step conditioned
            on predictor features of :math:`x_t`; none otherwise), or a lazy bijector taking
            the predictor's extra output as context.
        predictor_options: Keyword arguments of the default predictor.
        transporter_options: Keyword arguments of :meth:`Transporter.default` (vectors) or
            :meth:`Transporter.default_image` (images). For vectors ``passes`` defaults to
            :func:`ntmdist.defaults.vector_passes` (2 groups of features with the per-step
            bijector, 4 without; ``passes=D`` is fully autoregressive).
        step_flow_options: ``bins``, ``bound``, ``hidden`` or ``passes`` of the default
            per-step bijector (:func:`ntmdist.defaults.vector_splines`; ``passes`` as for the
            transporter).
        label_dropout: Probability of replacing a label by the null label in :meth:`loss` while
            training (classifier-free guidance); default 0.1 for class-conditional models.
        train_steps: Numbers of steps T to train on, e.g. ``(4, 8, 16)`` as in the paper: each
            call of :meth:`loss` draws one (uniformly) and uses ``schedule.with_steps(T)``, so
            that one model samples and bounds the likelihood with any of them
            (``sample(..., schedule=schedule.with_steps(8))``). Default: ``schedule.steps`` only.
        train_particles: Forward trajectories per example in :meth:`loss`. 1 (the default)
            trains on the trajectory NLL; :math:`K > 1` on the importance-weighted bound of
            level 0 (Burda et al.), which trains the marginal :math:`p(x_{t_0})` rather than the
            trajectory, at K times the compute and memory per step (README, ablations).

    Example:
        >>> model = NTM(event_shape=(2,), schedule=Schedule(steps=4))
        >>> dist = model()
        >>> traj = dist.sample((3,))
        >>> traj.shape, dist.log_prob(traj).shape
        (torch.Size([3, 5, 2]), torch.Size([3]))
    """

    def __init__(
        self, event_shape: tuple[int, ...], schedule: Schedule | None = None,
        transporter: str | nn.Module | list[nn.Module] | None = "auto",
        predictor: nn.Module | None = None, classes: int | None = None,
        step_flow: str | nn.Module | None = "auto", predictor_options: dict | None = None,
        transporter_options: dict | None = None, label_dropout: float | None = None,
        step_flow_options: dict | None = None, train_steps: tuple[int, ...] | None = None,
        train_particles: int = 1,
    ) -> None:
        super().__init__()
        self.event_shape = check_event_shape(event_shape)
        if schedule is not None and not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule or None, got {type(schedule).__name__}")
        if train_steps is not None and (not isinstance(train_steps, (tuple, list))
                                        or len(train_steps) == 0):
            raise TypeError(f"train_steps must be a non-empty tuple of step counts such as "
                            f"(4, 8), got {train_steps!r}")
        dropout = (0.1 if classes else 0.0) if label_dropout is None else label_dropout
        if not 0 <= dropout < 1:
            raise ValueError(f"label_dropout must be in [0, 1), got {label_dropout}")
        self._config = {
            "event_shape": list(event_shape),
            "schedule": (Schedule() if schedule is None else schedule).config(),
            "transporter": transporter if transporter in ("auto", None) else "custom",
            "predictor": "auto" if predictor is None else "custom",
            "classes": classes,
            "step_flow": step_flow if step_flow in ("auto", None) else "custom",
            "predictor_options": dict(predictor_options or {}),
            "transporter_options": dict(transporter_options or {}),
            "label_dropout": label_dropout,
            "train_steps": None if train_steps is None else list(train_steps),
            "train_particles": check_count(train_particles, "train_particles", 1),
        }
        self.schedule = Schedule() if schedule is None else schedule
        self.train_schedules = [self.schedule.with_steps(T)
                                for T in train_steps or (self.schedule.steps,)]
        self.train_particles = self._config["train_particles"]
        self.classes = classes
        self.label_dropout = float(dropout)
        self.transporter, self.predictor, self.step_flow, options, step_options = (
            default_networks(self.event_shape, classes, transporter, predictor, step_flow,
                             predictor_options, transporter_options, step_flow_options)
        )
        self._config["transporter_options"] = options
        self._config["step_flow_options"] = step_options
        self.denoiser: nn.Module | None = None

    def config(self) -> dict:
        """The constructor arguments as plain data (for checkpoints); ``"custom"`` marks a
        module passed by the user, which :meth:`from_config` cannot rebuild."""
        config = {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}
        if self.denoiser is not None:
            rebuild = callable(getattr(self.denoiser, "config", None))
            config["denoiser"] = self.denoiser.config() if rebuild else "custom"
        return config

    @classmethod
    def from_config(cls, config: dict) -> NTM:
        """Rebuild a model (untrained weights) from :meth:`config` (:func:`ntmdist.config.rebuild`;
        configs of earlier versions are upgraded)."""
        return rebuild(cls, config)

    @classmethod
    def from_flow_matching(
        cls, velocity: nn.Module, schedule: Schedule | None = None,
        transporter: str | nn.Module | list[nn.Module] | None = "auto", *,
        event_shape: tuple[int, ...] | None = None, classes: int | None = None,
        predictor_options: dict | None = None, transporter_options: dict | None = None,
        train_steps: tuple[int, ...] | None = None, train_particles: int = 1,
    ) -> NTM:
        r"""An NTM initialised from a flow-matching velocity :math:`v(x, t, y)` (regressing
        :math:`\epsilon - x_0`): a :class:`~ntmdist.predictor.FlowMatchingPredictor`,
        :math:`\mu = A u_t + B (u_t - t v(u_t, t, y))`, :math:`\log \sigma = \log C + \delta`
        (zero-initialised :math:`\delta` head), and a zero-initialised (identity) transporter.
        At initialisation the NTM is the flow-matching model used as a T-step Gaussian ancestral
        sampler (:func:`ntmdist.flow_matching.ancestral`), exactly for every step with
        :math:`C \geq \sigma_{min}` (all steps when :math:`t_{min} > 0` is not tiny).
        Fine-tune with ``fit(model, data, steps=n, aux_weight=2.5)``. The initial scale
        :math:`C` is far below the velocity's errors on the low-noise steps (the initial loss
        is large); ``hold={"predictor.velocity": k}`` lets the scale head and transporter
        calibrate for ``k`` steps before the velocity trains (the benchmarks hold it
        ``n // 10``; see the README's digits ablations).

        Arguments:
            velocity: :class:`ntmdist.flow_matching.Velocity` or any module called as
                ``velocity(x, t, y)`` with ``t`` of shape ``x.shape[:1]``; it is deep-copied,
                so fine-tuning leaves the argument unchanged, and the copy is made trainable
                (``requires_grad_(True)``) even when the argument is frozen, e.g. the
                ``ema_model`` of :func:`ntmdist.train.fit`. Freeze
                ``model.predictor.velocity`` afterwards to fine-tune the rest only.
            schedule, transporter, transporter_options, train_steps, train_particles: As for
                :class:`NTM`.
            event_shape, classes: Default to the velocity's attributes of those names.
            predictor_options: Keyword arguments of :class:`FlowMatchingPredictor`.

        Example:
            >>> from ntmdist.flow_matching import Velocity
            >>> model = NTM.from_flow_matching(Velocity(2, width=32, depth=1), Schedule(4, 0.05))
            >>> model.sample(3).shape
            torch.Size([3, 2])
        """
        predictor, event_shape, classes, entries = flow_matching_predictor(
            velocity, event_shape, classes, predictor_options)
        model = cls(event_shape, schedule, transporter, predictor, classes,
                    transporter_options=transporter_options, train_steps=train_steps,
                    train_particles=train_particles)
        model._config.update(entries)
        ref = next(predictor.velocity.parameters(), None)
        return model if ref is None else model.to(ref.device, ref.dtype)

    @property
    def features(self) -> int:
        """Number of dimensions of one example."""
        return self.event_shape.numel()

    def _ref(self) -> Tensor:
        return next(self.parameters())

    def forward(
        self, y: Tensor | None = None, schedule: Schedule | None = None, guidance: float = 0.0,
        grid: Tensor | None = None,
    ) -> TrajectoryDistribution:
        """The trajectory distribution, conditioned on labels ``y`` (batch shape ``y.shape``)."""
        schedule = self.schedule if schedule is None else schedule
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a Schedule or None, got {type(schedule).__name__}")
        if grid is None:
            grid = schedule.grid_like(self._ref())
        else:
            grid = check_tensor(grid, "grid").to(self._ref())
        if y is not None:
            y = torch.as_tensor(y, device=self._ref().device)
            if self.classes is None:
                raise ValueError("this model is unconditional (classes=None) but got labels y")
            check_labels(y, self.classes)
        return TrajectoryDistribution(
            self.transporter, self.predictor, grid, tuple(self.event_shape), y,
            self.step_flow, guidance,
        )

    def _check_data(self, x: Tensor, y: Tensor | None = None) -> Tensor | None:
        """Data ``x`` ``(batch, *event)`` checked; labels ``y`` as a tensor on the model's
        device (:func:`ntmdist.validation.check_data`)."""
        return check_data(x, y, self.event_shape, self._ref())

    def loss(
        self, x0: Tensor, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        r"""The training loss in nats per data dimension on forward trajectories of ``x0``
        ``(batch, *event)`` (``t_min`` drawn per example; T drawn per call from
        ``train_steps``): the mean trajectory NLL :math:`-E[\log p(traj)] / D`, or with
        :attr:`train_particles` :math:`K > 1` the mean negative importance-weighted bound
        :math:`-\mathrm{IWAE}_K(x_{t_0}) / D` of level 0, with K forward chains
        :math:`q(x_{t_1:t_T} | x_{t_0})` from one draw of level 0 per example. With one
        particle the two have the same gradient (they differ by :math:`\log q`, which has no
        parameters).
        In training mode labels are replaced by the null label with probability
        :attr:`label_dropout` (classifier-free guidance)."""
        y = self._check_data(x0, y)
        if y is not None and self.classes is not None and self.training and self.label_dropout:
            check_labels(y, self.classes)
            y = drop_labels(y, self.classes, self.label_dropout, generator)
        batch = x0.shape[: x0.dim() - len(self.event_shape)]
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
            return -self(y, grid=grid).log_prob(traj).mean() / self.features
        level0 = traj.select(len(batch), 0)
        lw = self._log_weights(level0, y, self.train_particles, generator, schedule, grid)
        bound = torch.logsumexp(lw, 0) - math.log(self.train_particles)
        return -bound.mean() / self.features

    def _log_weights(
        self, x: Tensor, y: Tensor | None, particles: int, generator: torch.Generator | None,
        schedule: Schedule | None = None, grid: Tensor | None = None,
    ) -> Tensor:
        """Log importance weights ``(particles, *batch)`` of ``particles`` forward chains from
        level 0 ``x`` on ``grid`` (``schedule``'s nominal grid by default)."""
        y = self._check_data(x, y)
        particles = check_count(particles, "particles", 1)
        schedule = self.schedule if schedule is None else schedule
        ev = len(self.event_shape)
        grid = schedule.grid_like(x) if grid is None else grid
        xs = x.expand(particles, *x.shape)
        traj = schedule.sample(xs, ev, generator, grid=grid, from_level0=True)
        dist = self(y, schedule=schedule, grid=grid)
        return dist.log_prob(traj) - schedule.log_prob_forward(traj, ev, grid)

    def elbo(
        self, x: Tensor, y: Tensor | None = None, particles: int = 1,
        generator: torch.Generator | None = None, schedule: Schedule | None = None,
    ) -> Tensor:
        """ELBO on :math:`\\log p(x_{t_0} = x)` per example, in nats (averaged over particles),
        on ``schedule``'s grid (default :attr:`schedule`)."""
        return self._log_weights(x, y, particles, generator, schedule).mean(0)

    def iwae(
        self, x: Tensor, y: Tensor | None = None, particles: int = 64,
        generator: torch.Generator | None = None, schedule: Schedule | None = None,
    ) -> Tensor:
        """Importance-weighted bound with ``particles`` samples, per example, in nats, on
        ``schedule``'s grid (default :attr:`schedule`)."""
        lw = self._log_weights(x, y, particles, generator, schedule)
        return torch.logsumexp(lw, 0) - math.log(particles)

    def sample(
        self, n: int, y: Tensor | None = None, guidance: float = 0.0,
        denoise: str | None = None, generator: torch.Generator | None = None,
        schedule: Schedule | None = None,
    ) -> Tensor:
        """``n`` samples of level 0, ``(n, *event)``.

        ``denoise=None`` returns :math:`x_{t_0}` (T predictor steps, one transporter inversion);
        ``"tweedie"`` the trajectory-Tweedie estimate of :math:`x_0` (one backward pass);
        ``"learned"`` the learned denoiser :math:`D(u_{t_0}, t_0, y)` (T predictor steps and
        :math:`D` once: no transporter inversion, no backward pass; see
        :func:`ntmdist.distill.fit_denoiser`).
        """
        if denoise not in (None, "tweedie", "learned"):
            raise ValueError(f"denoise must be None, 'tweedie' or 'learned', got {denoise!r}")
        if denoise == "learned" and self.denoiser is None:
            raise ValueError("denoise='learned' needs a denoiser: train one with "
                             "ntmdist.distill.fit_denoiser(model, data, steps=...)")
        n = check_count(n, "n")
        y = None if y is None else sample_labels(y, n, self._ref().device)
        dist = self(y, schedule=schedule, guidance=guidance)
        shape = torch.Size(()) if y is not None else torch.Size((n,))
        if denoise == "tweedie":
            with torch.no_grad():
                traj = dist.sample(shape, generator)
            return dist.denoise(traj).detach()
        if denoise == "learned":
            with torch.no_grad():
                us, _, grid = dist._u_chain(shape, generator, logp=False)
                return self.denoiser(us[0], grid[..., 0], y)
        with torch.no_grad():
            return dist.sample_level0(shape, generator)

