r"""One reverse step :math:`p(x_s | x_t)` of an NTM: a conditional normalizing flow.

.. math:: p(x_s | x_t) = N(g(x_s); \mu, \mathrm{diag}\, \sigma^2) \,
          |\det \partial g(x_s) / \partial x_s|, \qquad (\mu, \sigma) = P(f(x_t, t), t, s, y),

with :math:`g = f(\cdot, s)`, or :math:`g = h(\cdot; c) \circ f(\cdot, s)` when a per-step
bijector :math:`h` is conditioned on predictor features :math:`c` of :math:`x_t`.
Conditioned on :math:`x_t` it is ``TransformedDistribution(Normal(mu, sigma), g^{-1})``.
The condition :math:`y` (:class:`~ntmdist.conditioning.Condition`) reaches the predictor, and
the transporter :math:`f(\cdot, t, y)` when it is conditioned too.

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
"""

from __future__ import annotations

import torch
from pyro.distributions import (
    ConditionalDistribution,
    Independent,
    Normal,
    TransformedDistribution,
)
from torch import Tensor, nn
from torch.distributions import Transform

from .conditioning import Condition
from .guidance import combine
from .validation import check_tensor, check_values, reference, validating

__all__ = ["ReverseStep", "predict", "transport"]


class _Independent(Independent):
    """Pyro's ``Independent`` with a ``log_prob`` that also works for an empty batch (torch's
    ``_sum_rightmost`` reshapes to ``-1``, which fails on zero elements)."""

    def log_prob(self, value: Tensor) -> Tensor:
        lp = self.base_dist.log_prob(value)
        n = self.reinterpreted_batch_ndims
        return lp.flatten(lp.dim() - n).sum(-1) if n else lp


def transport(transporter: nn.Module, t: Tensor, condition: Condition | None
              ) -> Transform:
    r"""The transform :math:`f(\cdot, t)` of ``transporter``, or :math:`f(\cdot, t, y)` when it
    is conditioned (``transporter.conditioning``); ``condition``'s batch shape broadcasts with
    ``t``'s.

    Example:
        >>> from ntmdist import Transporter
        >>> transport(Transporter.default(2), torch.full((3,), 0.5), None)(torch.zeros(3, 2)).shape
        torch.Size([3, 2])
    """
    if getattr(transporter, "conditioning", None) is None:
        return transporter(t)
    return transporter(t, condition)


def predict(
    predictor: nn.Module, u_t: Tensor, t: Tensor, s: Tensor, condition: Condition | None,
    event_dim: int, guidance: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor | None]:
    r"""Run the predictor on inputs with any batch shape, flattened to one batch dimension.

    Arguments:
        u_t: Noisier level in u-space, ``(*batch, *event)``.
        t, s: Times broadcastable to ``batch``.
        condition: A condition whose batch shape broadcasts to ``batch`` (or ``None``).
        guidance: Classifier-free guidance weight (0: none): the predictor runs once on the
            condition and its null twin, batched, and :func:`~ntmdist.guidance.combine` mixes
            the two Gaussians.

    Returns:
        ``(mu, log_sigma)`` of shape ``(*batch, *event)`` and step features ``(*batch, H)`` or
        ``None``.
    """
    batch = u_t.shape[: u_t.dim() - event_dim]
    event = u_t.shape[u_t.dim() - event_dim :]
    n = batch.numel()
    flat = u_t.reshape(n, *event)
    t = t.to(u_t).expand(batch).reshape(n)
    s = s.to(u_t).expand(batch).reshape(n)
    if condition is not None:
        condition = condition.expand(batch).flatten()
    if guidance > 0:
        if condition is None:
            raise ValueError("classifier-free guidance needs a condition y")
        both = condition.cat(condition.null_twin())
        out = predictor(torch.cat([flat, flat]), torch.cat([t, t]), torch.cat([s, s]),
                        both.value, **both.extras())
        (mu_c, mu_u), (ls_c, ls_u) = out[0].chunk(2), out[1].chunk(2)
        mu, log_sigma = combine(mu_c, ls_c, mu_u, ls_u, guidance)
        h = out[2].chunk(2)[0] if len(out) > 2 else None
    else:
        value = None if condition is None else condition.value
        out = predictor(flat, t, s, value, **({} if condition is None else condition.extras()))
        mu, log_sigma = out[0], out[1]
        h = out[2] if len(out) > 2 else None
    h = None if h is None else h.reshape(*batch, -1)
    return mu.reshape(u_t.shape), log_sigma.reshape(u_t.shape), h


class ReverseStep(ConditionalDistribution):
    r"""The reverse step :math:`p(x_s | x_t)`, a Pyro ``ConditionalDistribution``.

    Arguments:
        transporter: The level-time transporter :math:`f`.
        predictor: The shared predictor :math:`P`.
        s, t: Times :math:`s < t` (scalars or per-example tensors).
        event_shape: Shape of one level.
        y: Optional condition (a :class:`~ntmdist.conditioning.Condition`, or a tensor:
            integer labels or context vectors); ``x_t``'s batch shape broadcasts with its.
        step_flow: Optional lazy bijector conditioned on predictor features.
        guidance: Classifier-free guidance weight.

    ``condition(x_t)`` returns a Pyro ``TransformedDistribution`` over :math:`x_s` whose transforms
    map base -> data (``g^{-1}``). :attr:`given` is the step's condition :math:`y`
    (a :class:`~ntmdist.conditioning.Condition` or ``None``).
    """

    def __init__(
        self, transporter: nn.Module, predictor: nn.Module, s: Tensor, t: Tensor,
        event_shape: torch.Size, y: Tensor | Condition | None = None,
        step_flow: nn.Module | None = None, guidance: float = 0.0,
    ) -> None:
        self.transporter, self.predictor, self.step_flow = transporter, predictor, step_flow
        self.s, self.t, self.guidance = s, t, guidance
        self.given = Condition.wrap(y, getattr(predictor, "classes", None))
        self.event_shape = torch.Size(event_shape)

    def __repr__(self) -> str:
        return f"ReverseStep(s={self.s.tolist()}, t={self.t.tolist()})"

    def condition(self, x_t: Tensor) -> TransformedDistribution:
        check_tensor(x_t, "x_t", reference(self.predictor, self.transporter, self.step_flow))
        check_values(x_t, "x_t", validating())
        ev = len(self.event_shape)
        if x_t.shape[x_t.dim() - ev :] != self.event_shape:
            raise ValueError(
                f"x_t must have shape (*batch, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x_t.shape)}"
            )
        batch = x_t.shape[: x_t.dim() - ev]
        condition = self.given
        if condition is not None:
            try:
                batch = torch.broadcast_shapes(batch, condition.batch_shape)
            except RuntimeError as error:
                raise ValueError(f"x_t of batch shape {tuple(batch)} does not broadcast with the "
                                 f"condition's {tuple(condition.batch_shape)}") from error
            condition, x_t = condition.expand(batch), x_t.expand(*batch, *self.event_shape)
        t = self.t.to(x_t).expand(batch)
        u_t = transport(self.transporter, t, condition)(x_t)
        mu, log_sigma, h = predict(self.predictor, u_t, t, self.s, condition, ev, self.guidance)
        base = _Independent(Normal(mu, log_sigma.exp()), ev)
        transforms = []
        if self.step_flow is not None:
            transforms.append(self.step_flow(h).inv)
        transforms.append(transport(self.transporter, self.s.to(x_t).expand(batch),
                                    condition).inv)
        # torch's support check fails on an empty batch (it reshapes zero elements to -1)
        return TransformedDistribution(base, transforms,
                                       validate_args=False if batch.numel() == 0 else None)
