r"""The shared predictor :math:`P(u_t, t, s, y) \to (\mu, \log \sigma)` of every reverse step.

One deep network serves all steps: it sees the noisier level :math:`u_t = f(x_t, t)`, the times
:math:`t > s` and an optional condition :math:`y` (labels, a context vector or a sequence),
embedded by :class:`~ntmdist.conditioning.Conditioning`. The default mean is in posterior form,
as the Gaussian reverse posterior of flow matching,

.. math:: \mu = A(s, t) u_t + B(s, t) \hat x_0, \qquad
          \log \sigma = \mathrm{softclip}\big(\tfrac12 \log(C^2 + B^2 v_t + \sigma_{min}^2)
          + \delta\big),

with :math:`\hat x_0 = m_t u_t + \Delta`, :math:`(\Delta, \delta)` from a residual MLP whose
last layer is zero-initialised, and :math:`m_t = (1-t)/((1-t)^2 + t^2)`,
:math:`v_t = t^2/((1-t)^2 + t^2)` the posterior mean factor and variance of :math:`x_0` given
:math:`x_t` for standard normal data. At initialisation every step is therefore the exact reverse
step of the forward process applied to :math:`N(0, I)` data, so training starts from a sensible
likelihood instead of a collapsed last step.

A predictor may return a third output: features that condition a per-step bijector
(docs/design.md, section 4; they see the condition, so the bijector is conditioned too). Any
module with ``forward(u_t, t, s, y)`` returning ``(mu, log_sigma)`` or ``(mu, log_sigma, h)``
can replace it; ``t`` and ``s`` have shape ``u_t.shape[:1]``, ``y`` is ``None`` (the null
condition) or the condition flattened to that batch, and the keywords ``mask=`` (a sequence's
``(N, L)`` mask) and ``null=`` (``(N,)``, True where the condition is dropped) are passed only
when set, so a module written for labels keeps working (dropped labels are the in-band null
label ``classes``). A new network obtains its inputs from
``Conditioning(spec, times=2, embedding=E)((t, s), y, mask, null)``: the vector ``(N, 3E)``,
and for sequences the tokens ``(N, L, E)`` and mask ``(N, L)``; register it by name with
:func:`ntmdist.defaults.register_predictor`.

:class:`FlowMatchingPredictor` is the same posterior form with :math:`\hat x_0` read off a
flow-matching velocity, so that an NTM starts as that model's ancestral sampler.

References:
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
    | Flow Matching for Generative Modeling (Lipman et al., 2022), arXiv 2210.02747
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .conditioning import Conditioning, ConditionSpec, extras, legacy_label_keys
from .nets import ResidualMLP, soft_clip
from .schedule import posterior_coefficients
from .unet import UNet

__all__ = ["FlowMatchingPredictor", "ImagePredictor", "MLPPredictor", "posterior_form"]


class MLPPredictor(nn.Module):
    r"""Residual-MLP predictor for vectors ``(N, D)``.

    Arguments:
        features: :math:`D`.
        classes: Number of classes (labels ``0..classes-1``; ``None`` or label ``classes`` is the
            null label used for classifier-free guidance), or ``None``.
        width: Width of the residual MLP.
        depth: Number of residual blocks.
        embedding: Size of each time embedding.
        step_context: Size of the extra output ``h`` that conditions per-step bijectors (0: none).
        sigma_min: Floor :math:`\sigma_{min}` inside the posterior scale.
        log_sigma_bound: Soft bound on :math:`|\log \sigma|`.
        context: ``C`` for context vectors ``(N, C)``, ``(L, E)`` for sequences ``(N, L, E)``
            (with ``mask=`` ``(N, L)``; pooled), exclusive with ``classes``
            (:class:`~ntmdist.conditioning.Conditioning`).

    Example:
        >>> P = MLPPredictor(2, width=32, depth=1)
        >>> mu, log_sigma = P(torch.randn(5, 2), torch.full((5,), 0.5), torch.full((5,), 0.25))
        >>> mu.shape, log_sigma.shape
        (torch.Size([5, 2]), torch.Size([5, 2]))
    """

    def __init__(
        self, features: int, classes: int | None = None, width: int = 256, depth: int = 4,
        embedding: int = 64, step_context: int = 0, sigma_min: float = 1e-2,
        log_sigma_bound: float = 12.0, *, context: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.features, self.classes, self.step_context = features, classes, step_context
        self.sigma_min, self.log_sigma_bound = sigma_min, log_sigma_bound
        self.conditioning = Conditioning(ConditionSpec.of(classes, context), 2, embedding)
        inputs = features + self.conditioning.features
        self.net = ResidualMLP(inputs, 2 * features, width=width, depth=depth)
        self.context_head = nn.Linear(width, step_context) if step_context else None
        self.register_load_state_dict_pre_hook(legacy_label_keys)

    def forward(
        self, u_t: Tensor, t: Tensor, s: Tensor, y: Tensor | None = None,
        mask: Tensor | None = None, null: Tensor | None = None,
    ) -> tuple[Tensor, ...]:
        c = self.conditioning((t, s), y, mask, null).vector
        h = self.net.features(torch.cat([u_t, c], dim=-1))
        correction, delta = self.net.out(h).chunk(2, dim=-1)
        mu, log_sigma = posterior_form(u_t, t, s, correction, delta, self.sigma_min,
                                       self.log_sigma_bound)
        if self.context_head is None:
            return mu, log_sigma
        return mu, log_sigma, self.context_head(h)


def posterior_form(
    u_t: Tensor, t: Tensor, s: Tensor, correction: Tensor, delta: Tensor, sigma_min: float,
    log_sigma_bound: float,
) -> tuple[Tensor, Tensor]:
    r"""The posterior-form step :math:`\mu = A u_t + B (m_t u_t + \Delta)`,
    :math:`\log \sigma = \mathrm{softclip}(\tfrac12 \log(C^2 + B^2 v_t + \sigma_{min}^2)
    + \delta)` (module docstring) for ``u_t`` ``(N, *event)`` and times ``(N,)``."""
    shape = (u_t.shape[0],) + (1,) * (u_t.dim() - 1)
    a, b, c = (v.reshape(shape) for v in posterior_coefficients(s, t))
    tt = t.reshape(shape)
    snr = (1 - tt) ** 2 + tt**2
    mu = a * u_t + b * ((1 - tt) / snr * u_t + correction)
    base = 0.5 * torch.log(c**2 + b**2 * tt**2 / snr + sigma_min**2)
    return mu, soft_clip(base + delta, log_sigma_bound)


class ImagePredictor(nn.Module):
    r"""Non-causal convolutional predictor for images ``(N, C, H, W)``: the posterior form of
    :class:`MLPPredictor` with :math:`(\Delta, \delta)` from a :class:`~ntmdist.unet.UNet`
    conditioned (FiLM) on the embeddings of :math:`t`, :math:`s` and the condition; the tokens
    of a sequence condition also enter by cross-attention at the lowest resolution
    (docs/design.md, section 5).

    Arguments:
        image_shape: :math:`(C, H, W)`.
        classes: Number of classes (``None`` or label ``classes`` is the null label), or
            ``None``.
        width: U-Net channels at full resolution.
        mults: U-Net channel multipliers per resolution.
        embedding: Size of each time (and condition) embedding.
        sigma_min, log_sigma_bound: As for :class:`MLPPredictor`.
        context: As for :class:`MLPPredictor`.

    Example:
        >>> P = ImagePredictor((1, 8, 8), classes=10, width=16)
        >>> u, t, s = torch.randn(5, 1, 8, 8), torch.full((5,), 0.5), torch.full((5,), 0.25)
        >>> [v.shape for v in P(u, t, s, torch.arange(5))]
        [torch.Size([5, 1, 8, 8]), torch.Size([5, 1, 8, 8])]
    """

    def __init__(
        self, image_shape: tuple[int, int, int], classes: int | None = None, width: int = 64,
        mults: tuple[int, ...] = (1, 2), embedding: int = 64, sigma_min: float = 1e-2,
        log_sigma_bound: float = 12.0, *, context: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.image_shape, self.classes = tuple(image_shape), classes
        self.features = int(torch.Size(image_shape).numel())
        self.sigma_min, self.log_sigma_bound = sigma_min, log_sigma_bound
        self.conditioning = Conditioning(ConditionSpec.of(classes, context), 2, embedding)
        tokens = embedding if self.conditioning.spec.kind == "sequence" else 0
        channels = self.image_shape[0]
        self.net = UNet(channels, 2 * channels, self.conditioning.features, width=width,
                        mults=tuple(mults), tokens=tokens)
        self.register_load_state_dict_pre_hook(legacy_label_keys)

    def forward(
        self, u_t: Tensor, t: Tensor, s: Tensor, y: Tensor | None = None,
        mask: Tensor | None = None, null: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        c, tokens, mask = self.conditioning((t, s), y, mask, null)
        correction, delta = self.net(u_t, c, tokens, mask).chunk(2, dim=1)
        return posterior_form(u_t, t, s, correction, delta, self.sigma_min,
                              self.log_sigma_bound)


class FlowMatchingPredictor(nn.Module):
    r"""Predictor initialised from a flow-matching velocity :math:`v(x, t, y)`, which regresses
    :math:`\epsilon - x_0` (so :math:`\hat x_0 = x_t - t v`):

    .. math:: \mu = A(s,t)\, u_t + B(s,t) \big(u_t - t\, v(u_t, t, y)\big), \qquad
              \log \sigma = \log \max(C(s,t), \sigma_{min}) + \mathrm{softclip}(\delta),

    with :math:`\delta` from a zero-initialised residual-MLP head on :math:`(u_t, t, s, y)`. At
    initialisation every step with :math:`C \geq \sigma_{min}` is exactly the Gaussian
    :math:`N(A u_t + B (u_t - t v), C^2)`: with an identity transporter the NTM is the
    flow-matching model used as a Gaussian ancestral sampler on the NTM grid. The floor acts
    only where :math:`C < \sigma_{min}`, e.g. on the last step when :math:`t_{min} = 0`
    (:math:`C = 0`).

    Arguments:
        velocity: A module called as ``velocity(x, t, y)`` with ``t`` of shape ``x.shape[:1]``
            (:class:`ntmdist.flow_matching.Velocity` or any other); it is trained with the head.
            A sequence mask or null marks reach it as ``mask=``/``null=``.
        features: Number of dimensions of one example (the head's input and output size).
        classes: Number of classes (``None`` or label ``classes`` is the null label).
        width, depth, embedding: Size of the :math:`\delta` head and of its time embeddings.
        sigma_min: Floor :math:`\sigma_{min} > 0` of the step scale.
        log_sigma_bound: Soft bound on :math:`|\delta|`.
        context: As for :class:`MLPPredictor` (the velocity's condition must be the same).

    Example:
        >>> from ntmdist.flow_matching import Velocity
        >>> P = FlowMatchingPredictor(Velocity(2, width=32, depth=1), 2)
        >>> u, t, s = torch.randn(5, 2), torch.full((5,), 0.5), torch.full((5,), 0.25)
        >>> mu, log_sigma = P(u, t, s)
        >>> c = posterior_coefficients(s, t)[2]
        >>> torch.allclose(log_sigma, c.log()[:, None].expand(5, 2))  # zero-initialised head
        True
    """

    def __init__(
        self, velocity: nn.Module, features: int, classes: int | None = None, width: int = 128,
        depth: int = 2, embedding: int = 32, sigma_min: float = 1e-2,
        log_sigma_bound: float = 12.0, *, context: int | tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        if not sigma_min > 0:
            raise ValueError(f"sigma_min must be > 0, got {sigma_min}")
        self.velocity, self.features, self.classes = velocity, features, classes
        self.sigma_min, self.log_sigma_bound = sigma_min, log_sigma_bound
        self.conditioning = Conditioning(ConditionSpec.of(classes, context), 2, embedding)
        inputs = features + self.conditioning.features
        self.head = ResidualMLP(inputs, features, width=width, depth=depth)
        self.register_load_state_dict_pre_hook(legacy_label_keys)

    def forward(
        self, u_t: Tensor, t: Tensor, s: Tensor, y: Tensor | None = None,
        mask: Tensor | None = None, null: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        n = u_t.shape[0]
        parts = [u_t.reshape(n, -1), self.conditioning((t, s), y, mask, null).vector]
        v = self.velocity(u_t, t, y, **extras(mask, null))
        shape = (n,) + (1,) * (u_t.dim() - 1)
        a, b, c = (w.reshape(shape) for w in posterior_coefficients(s, t))
        mu = a * u_t + b * (u_t - t.reshape(shape) * v)
        delta = self.head(torch.cat(parts, dim=-1)).reshape(u_t.shape)
        log_sigma = c.clamp_min(self.sigma_min).log() + soft_clip(delta, self.log_sigma_bound)
        return mu, log_sigma
