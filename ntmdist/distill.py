r"""Self-distillation of an NTM's trajectory denoiser into a light network.

The trajectory Tweedie estimate (:meth:`ntmdist.TrajectoryDistribution.denoise`),

.. math:: \hat x_0 = \Big(x_{t_0} - \sum_j S_{0j} g_j\Big) / (1 - t_0), \qquad
          g = \nabla_{x_{t_0:t_T}} \big(-\log p(x_{t_0:t_T})\big),

costs a backward pass through the whole trajectory. A light network :math:`D(u_{t_0}, t_0, y)`
is trained instead, with the NTM frozen, by regression on forward trajectories of real data:

.. math:: \mathcal{L}(D) = E_{x_0, q(x_{t_0:t_T} | x_0)}
          \big\| D(f(x_{t_0}, t_0), t_0, y) - \hat x_0(x_{t_0:t_T}) \big\|^2 .

Sampling with ``model.sample(n, denoise="learned")`` then runs the T predictor steps in u-space
and :math:`D` once: no transporter inversion and no backward pass.

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .conditioning import Conditioning, ConditionSpec, legacy_label_keys
from .config import register_part
from .model import NTM
from .nets import ResidualMLP
from .step import transport

__all__ = ["Denoiser", "denoiser_loss"]


class Denoiser(nn.Module):
    r"""Light denoiser :math:`D(u_{t_0}, t_0, y) \to x_0` for events of ``features`` dimensions
    (inputs ``(N, *event)`` are flattened), a residual MLP with a skip connection:

    .. math:: D(u, t_0, y) = u / (1 - t_0) + \mathrm{MLP}([u, e(t_0), \phi(y)]),

    with a zero-initialised output layer (so :math:`D` starts as the rescaled input, the
    estimate of :math:`x_0` from :math:`E[x_{t_0} | x_0] = (1 - t_0) x_0` under an identity
    transporter).

    Arguments:
        features: Number of dimensions of one example.
        classes: Number of classes (``None`` or label ``classes``: the null label), or ``None``.
        width, depth: Size of the residual MLP.
        embedding: Size of the time and condition embeddings
            (:class:`~ntmdist.conditioning.Conditioning`).
        context: ``C`` or ``(L, E)`` for context vectors or sequences, exclusive with
            ``classes``.

    Example:
        >>> D = Denoiser(2, width=16, depth=1)
        >>> u, t0 = torch.randn(4, 2), torch.full((4,), 0.5)
        >>> torch.allclose(D(u, t0), 2 * u)
        True
    """

    def __init__(
        self, features: int, classes: int | None = None, width: int = 128, depth: int = 2,
        embedding: int = 32, *, context: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self._config = {"features": features, "classes": classes, "width": width,
                        "depth": depth, "embedding": embedding}
        self.features, self.classes = features, classes
        self.conditioning = Conditioning(ConditionSpec.of(classes, context), 1, embedding)
        spec = self.conditioning.spec
        if spec.context is not None:
            self._config["context"] = spec.context if spec.kind == "vector" else list(spec.shape)
        inputs = features + self.conditioning.features
        self.net = ResidualMLP(inputs, features, width=width, depth=depth)
        self.register_load_state_dict_pre_hook(legacy_label_keys)

    def config(self) -> dict:
        """The constructor arguments (for checkpoints: :meth:`ntmdist.NTM.from_config`)."""
        return dict(self._config)

    def forward(self, u: Tensor, t0: Tensor, y: Tensor | None = None,
                mask: Tensor | None = None, null: Tensor | None = None) -> Tensor:
        """The estimate of :math:`x_0`, shaped like ``u`` ``(N, *event)``; ``t0`` ``(N,)``."""
        n = u.shape[0]
        t0 = torch.as_tensor(t0).to(u).expand(n)
        parts = [u.reshape(n, -1), self.conditioning((t0,), y, mask, null).vector]
        skip = u / (1 - t0).reshape(n, *(1,) * (u.dim() - 1))
        return skip + self.net(torch.cat(parts, dim=-1)).reshape(u.shape)


register_part("denoiser", Denoiser)


def denoiser_loss(
    denoiser: nn.Module, model: NTM, x0: Tensor, y: Tensor | None = None,
    generator: torch.Generator | None = None, mask: Tensor | None = None,
) -> Tensor:
    r"""Regression loss of ``denoiser`` on trajectory-denoised targets, mean per dimension.

    Forward trajectories of ``x0`` are drawn on ``model``'s grid (``t_min`` drawn per example);
    the targets :math:`\hat x_0` need the trajectory score (computed under ``enable_grad``,
    then detached); the input is :math:`u_{t_0} = f(x_{t_0}, t_0)`, computed without gradient.
    The denoiser sees the model's condition (after its ``context_net``).
    """
    ev = len(model.event_shape)
    with torch.no_grad():
        batch, condition = model._check_data(x0, y, mask)
        condition = None if condition is None else condition.expand(batch)
    grid = model.schedule.draw_grid(batch, x0, generator)
    traj = model.schedule.sample(x0, ev, generator, grid=grid)
    target = model(condition, grid=grid).denoise(traj).detach()
    t0 = grid[..., 0]
    with torch.no_grad():
        u0 = transport(model.transporter, t0, condition)(traj.select(len(batch), 0))
    value = None if condition is None else condition.value
    extras = {} if condition is None else condition.extras()
    return (denoiser(u0, t0, value, **extras) - target).square().mean()
