r"""Flow matching: a velocity model :math:`v(x, t, y)`, its training, and its samplers.

With the interpolant :math:`x_t = (1 - t) x_0 + t \epsilon` (:math:`t = 0` data, :math:`t = 1`
noise), the velocity regresses :math:`\epsilon - x_0`:

.. math:: \mathcal{L} = E_{t \sim U[0, 1], x_0, \epsilon}
          \big\| v(x_t, t, y) - (\epsilon - x_0) \big\|^2 ,

whose minimiser is :math:`v^*(x, t, y) = E[\epsilon - x_0 | x_t = x, y]`. Samples solve
:math:`dx/dt = v` from :math:`t = 1` down to :math:`t = 0` with Euler
(:math:`x \leftarrow x - h\, v(x, t)`, one evaluation per step) or Heun (two per step). The
Gaussian ancestral sampler on an NTM grid is what :meth:`ntmdist.NTM.from_flow_matching` is
exactly, at initialisation.

References:
    | Flow Matching for Generative Modeling (Lipman et al., 2022), arXiv 2210.02747
    | Elucidating the Design Space of Diffusion-Based Generative Models (Karras et al., 2022),
      arXiv 2206.00364 (Heun sampler)
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .conditioning import Conditioning, ConditionSpec, dropout_mask, extras, legacy_label_keys
from .config import register_part
from .nets import ResidualMLP
from .schedule import Schedule, posterior_coefficients
from .unet import UNet
from .validation import renamed

__all__ = ["Velocity", "ancestral", "euler", "heun", "sample", "velocity_loss"]


class _MLPBackbone(nn.Module):
    """``backbone(x, c)``: a residual MLP on ``[x, c]`` for vectors ``(N, D)``."""

    def __init__(self, features: int, context: int, width: int, depth: int) -> None:
        super().__init__()
        self.net = ResidualMLP(features + context, features, width=width, depth=depth)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.net(torch.cat([x, c], dim=-1))


class Velocity(nn.Module):
    r"""Velocity model :math:`v(x, t, y)`, conditional with a null condition (for guidance).

    The time and the condition are embedded into a context :math:`c = [e(t), \phi(y)]`
    (:class:`~ntmdist.conditioning.Conditioning`, ``embedding`` features each; no condition
    part when unconditional) and the backbone computes ``backbone(x, c)`` of the shape of ``x``.
    The default backbone is that of the default predictor: for vectors the residual MLP
    (width 256, depth 4) on :math:`[x, c]`, for images ``(C, H, W)`` the FiLM-conditioned
    :class:`~ntmdist.unet.UNet` (width 64; ``depth`` unused; sequence tokens also enter by
    cross-attention); pass ``backbone=`` for other events.

    Arguments:
        event_shape: Shape of one example (an integer for vectors).
        classes: Number of classes (labels ``0..classes-1``; ``None`` or label ``classes`` is the
            null label), or ``None``.
        width, depth: Size of the default backbone (width: 256 for vectors, 64 for images).
        embedding: Size of each embedding in the context.
        backbone: A module ``backbone(x, c) -> v`` with ``x`` ``(N, *event)`` and ``c``
            ``(N, context)``, replacing the default MLP (a sequence condition reaches it
            pooled, in ``c``).
        context: ``C`` (context vectors ``(N, C)``) or ``(L, E)`` (sequences ``(N, L, E)``,
            ``mask=`` ``(N, L)``), exclusive with ``classes``.

    Example:
        >>> v = Velocity(2, classes=3, width=32, depth=1)
        >>> x, t = torch.randn(5, 2), torch.rand(5)
        >>> v(x, t).shape, v(x, t, torch.tensor([0, 1, 2, 3, 0])).shape  # 3: the null label
        (torch.Size([5, 2]), torch.Size([5, 2]))
    """

    def __init__(
        self, event_shape: int | Sequence[int], classes: int | None = None,
        width: int | None = None, depth: int = 4, embedding: int = 64,
        backbone: nn.Module | None = None, *, context: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        self.event_shape, self.classes = torch.Size(shape), classes
        self.conditioning = Conditioning(ConditionSpec.of(classes, context), 1, embedding)
        spec = self.conditioning.spec
        self._config = {"event_shape": list(shape), "classes": classes, "width": width,
                        "depth": depth, "embedding": embedding}
        if spec.context is not None:
            self._config["context"] = spec.context if spec.kind == "vector" else list(spec.shape)
        if backbone is not None:
            self._config["backbone"] = "custom"
        features = self.conditioning.features
        if backbone is None and len(self.event_shape) == 3:
            tokens = embedding if spec.kind == "sequence" else 0
            backbone = UNet(shape[0], shape[0], features, width=width or 64, tokens=tokens)
        elif backbone is None:
            if len(self.event_shape) != 1:
                raise ValueError("default backbones exist for vectors (D,) and images (C, H, W); "
                                 "pass backbone=")
            backbone = _MLPBackbone(self.event_shape[0], features, width or 256, depth)
        self.backbone = backbone
        self._tokens = isinstance(backbone, UNet) and backbone.cross is not None
        self.register_load_state_dict_pre_hook(legacy_label_keys)

    def config(self) -> dict:
        """The constructor arguments as plain data (``"backbone": "custom"`` marks a backbone
        passed by the user, which cannot be rebuilt from it)."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._config.items()}

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None,
                mask: Tensor | None = None, null: Tensor | None = None) -> Tensor:
        """The velocity at ``x`` ``(N, *event)``, times ``t`` ``(N,)`` (or a scalar), condition
        ``y`` (``None``: the null condition)."""
        t = torch.as_tensor(t).to(x).expand(x.shape[0])
        c, tokens, mask = self.conditioning((t,), y, mask, null)
        if self._tokens:
            return self.backbone(x, c, tokens, mask)
        return self.backbone(x, c)


register_part("velocity", Velocity)


def velocity_loss(
    velocity: nn.Module, x0: Tensor, y: Tensor | None = None,
    generator: torch.Generator | None = None, label_dropout: float | None = None,
    mask: Tensor | None = None, *, condition_dropout: float | None = None,
) -> Tensor:
    r"""Flow-matching loss :math:`\| v(x_t, t, y) - (\epsilon - x_0) \|^2`, mean per dimension,
    with :math:`t \sim U[0, 1]` per example; each example's condition (``y``, ``mask``) is
    replaced by the null condition with probability ``condition_dropout`` (default 0; any kind
    of condition; for classifier-free guidance): the null label for labels, ``null=`` for
    contexts. ``label_dropout`` is its old name."""
    p = renamed(condition_dropout, label_dropout, "condition_dropout", "label_dropout") or 0.0
    n, ones = x0.shape[0], (1,) * (x0.dim() - 1)
    t = torch.rand(n, generator=generator, dtype=x0.dtype).to(x0.device)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x_t = (1 - t.reshape(n, *ones)) * x0 + t.reshape(n, *ones) * eps
    null = None
    if y is not None and p > 0:
        drop = dropout_mask(torch.Size([n]), p, generator).to(y.device)
        if y.is_floating_point():
            null = drop
        else:
            y = torch.where(drop, torch.full_like(y, velocity.classes), y)
    return (velocity(x_t, t, y, **extras(mask, null)) - (eps - x0)).square().mean()


def _times(x: Tensor, t: float) -> Tensor:
    return torch.full(x.shape[:1], t, dtype=x.dtype, device=x.device)


def euler(
    velocity: nn.Module, x: Tensor, steps: int, y: Tensor | None = None, t_end: float = 0.0
) -> Tensor:
    r"""Euler from :math:`t = 1` (``x``, noise ``(N, *event)``) to ``t_end`` in ``steps`` equal
    steps, :math:`x \leftarrow x - h\, v(x, t, y)`: ``steps`` velocity evaluations, error
    :math:`O(h)`."""
    ts = torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64).tolist()
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        x = x - (t - s) * velocity(x, _times(x, t), y)
    return x


def heun(
    velocity: nn.Module, x: Tensor, steps: int, y: Tensor | None = None, t_end: float = 0.0
) -> Tensor:
    r"""Heun (explicit trapezoid) from :math:`t = 1` to ``t_end`` in ``steps`` equal steps:
    :math:`x' = x - h v(x, t)`, :math:`x \leftarrow x - \tfrac h2 (v(x, t) + v(x', t - h))`;
    ``2 * steps`` velocity evaluations, error :math:`O(h^2)`."""
    ts = torch.linspace(1.0, t_end, steps + 1, dtype=torch.float64).tolist()
    for t, s in zip(ts[:-1], ts[1:], strict=True):
        v = velocity(x, _times(x, t), y)
        guess = x - (t - s) * v
        x = x - 0.5 * (t - s) * (v + velocity(guess, _times(x, s), y))
    return x


def ancestral(
    velocity: nn.Module, x: Tensor, schedule: Schedule, y: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Gaussian ancestral sampler on the grid of ``schedule``, from noise ``x`` at :math:`t = 1`
    to :math:`x_{t_0}`: for :math:`k = T..1`, with :math:`(s, t) = (t_{k-1}, t_k)`,

    .. math:: x_s = A x_t + B (x_t - t\, v(x_t, t, y)) + C z, \quad z \sim N(0, I),

    (the reverse posterior of docs/design.md, section 1, with :math:`x_0` predicted by the
    velocity).
    This is the distribution of :meth:`ntmdist.NTM.from_flow_matching` at initialisation.
    """
    grid = schedule.grid.tolist()
    for k in range(schedule.steps, 0, -1):
        s, t = _times(x, grid[k - 1]), _times(x, grid[k])
        shape = x.shape[:1] + (1,) * (x.dim() - 1)
        a, b, c = (w.reshape(shape) for w in posterior_coefficients(s, t))
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
        x = a * x + b * (x - t.reshape(shape) * velocity(x, t, y)) + c * z
    return x


def sample(
    velocity: nn.Module, n: int, *, steps: int, method: str = "euler", y: Tensor | None = None,
    event_shape: Sequence[int] | None = None, generator: torch.Generator | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """``n`` samples ``(n, *event)`` with ``method`` ``"euler"`` or ``"heun"`` (``steps``
    steps) or ``"ancestral"`` (on ``Schedule(steps)``), without gradients. ``event_shape``
    defaults to ``velocity.event_shape``; one condition ``y`` (``mask``) or ``n`` of them.

    Example:
        >>> v = Velocity(2, width=32, depth=1)
        >>> sample(v, 10, steps=4, method="heun").shape
        torch.Size([10, 2])
    """
    samplers = {"euler": euler, "heun": heun, "ancestral": ancestral}
    if method not in samplers:
        raise ValueError(f"method must be 'euler', 'heun' or 'ancestral', got {method!r}")
    shape = getattr(velocity, "event_shape", None) if event_shape is None else event_shape
    if shape is None:
        raise ValueError("pass event_shape= for a velocity without an event_shape attribute")
    ref = next(velocity.parameters(), None)
    dtype = torch.get_default_dtype() if ref is None else ref.dtype
    device = None if ref is None else ref.device
    x = torch.randn((n, *shape), generator=generator, dtype=dtype).to(device)
    if y is not None:
        y = torch.as_tensor(y, device=x.device)
        spec = getattr(getattr(velocity, "conditioning", None), "spec", None)
        own = len(spec.shape) if spec is not None else int(y.is_floating_point())
        y = y.expand(n, *y.shape[y.dim() - own:])
        if mask is not None:
            mask = mask.expand(n, mask.shape[-1])
    if mask is not None:
        velocity = functools.partial(velocity, mask=mask)
    with torch.no_grad():
        if method == "ancestral":
            return ancestral(velocity, x, Schedule(steps), y, generator)
        return samplers[method](velocity, x, steps, y)
