r"""A non-causal transformer predictor for images: DiT blocks over patch tokens.

An image :math:`u_t \in \mathbb{R}^{C \times H \times W}` is cut into :math:`L = HW/p^2`
patches (:func:`~ntmdist.transforms.patchify`), each embedded as a token with a learned position
embedding. Every block attends over the tokens of **one** level only (levels of a trajectory are
separate batch items, so the reverse chain stays Markov) and is conditioned by adaLN-Zero on a
vector :math:`c` made from the embeddings of :math:`t`, :math:`s` and the condition (labels,
context vectors or sequences; :class:`~ntmdist.conditioning.Conditioning`, as for every
network):

.. math:: h \leftarrow h + g_1 \odot \mathrm{Attn}\big(\mathrm{LN}(h)(1 + a_1) + b_1\big),
          \qquad h \leftarrow h + g_2 \odot \mathrm{MLP}\big(\mathrm{LN}(h)(1 + a_2) + b_2\big),

with :math:`(a_i, b_i, g_i) = W \mathrm{SiLU}(c)`, :math:`W` zero-initialised (every block starts
as the identity). A sequence condition :math:`(L', E)` is also read by a cross-attention from the
image tokens to the projected condition tokens (padding masked out; the learned null token
where a sequence is dropped or empty), between the two (output projection zero-initialised).
The last layer (adaLN and linear, zero-initialised) gives the correction :math:`\Delta` and the
log-scale :math:`\delta` of the posterior form of :mod:`ntmdist.predictor`,

.. math:: \mu = A u_t + B (m_t u_t + \Delta), \qquad
          \log \sigma = \mathrm{softclip}\big(\tfrac12 \log(C^2 + B^2 v_t + \sigma_{min}^2)
          + \delta\big),

so an untrained predictor is the exact reverse step of the forward process on :math:`N(0, I)`
data, equal to that of the U-Net :class:`~ntmdist.predictor.ImagePredictor`.

References:
    | Scalable Diffusion Models with Transformers (Peebles & Xie, 2023), arXiv 2212.09748
    | PixArt-alpha: Fast Training of Diffusion Transformer (Chen et al., 2023), arXiv 2310.00426
      (cross-attention to text tokens)
    | Normalizing Trajectory Models (Gu et al., 2026), arXiv 2605.08078
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conditioning import Conditioning, ConditionSpec
from .predictor import posterior_form
from .transforms.patches import patch_grid, patchify, unpatchify

__all__ = ["TransformerPredictor"]


def _modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return h * (1 + scale) + shift


class _Attention(nn.Module):
    """Multi-head attention from ``(n, L, W)`` queries to ``(n, L', S)`` sources."""

    def __init__(self, width: int, heads: int, source: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.kv = nn.Linear(width, width), nn.Linear(source, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, h: Tensor, source: Tensor, visible: Tensor | None = None) -> Tensor:
        q, (k, v) = self.q(h), self.kv(source).chunk(2, dim=-1)
        q, k, v = (a.unflatten(-1, (self.heads, -1)).transpose(1, 2) for a in (q, k, v))
        mask = None if visible is None else visible[:, None, None, :]
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(att.transpose(1, 2).flatten(-2))


class _Block(nn.Module):
    """DiT block with adaLN-Zero, and a zero-initialised cross-attention when ``tokens``."""

    def __init__(self, width: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(width, heads, width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * width, width))
        self.ada = _zero(nn.Linear(width, 6 * width))
        self.cross = None
        if tokens:
            self.norm_cross = nn.LayerNorm(width)
            self.cross = _Attention(width, heads, tokens)
            _zero(self.cross.proj)

    def forward(self, h: Tensor, c: Tensor, tokens: Tensor | None,
                visible: Tensor | None) -> Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(c)[:, None].chunk(6, dim=-1)
        x = _modulate(self.norm1(h), shift1, scale1)
        h = h + gate1 * self.attn(x, x)
        if self.cross is not None:
            h = h + self.cross(self.norm_cross(h), tokens, visible)
        return h + gate2 * self.mlp(_modulate(self.norm2(h), shift2, scale2))


_RENAMED = {"embed.label.": "conditioning.label.", "embed.vector.": "conditioning.context.",
            "embed.token.": "conditioning.token.", "embed.null": "conditioning.null"}


def _legacy_keys(module: nn.Module, state: dict, prefix: str, *args: object) -> None:
    """A ``load_state_dict`` pre-hook: before the shared conditioning module, the transformer
    kept its condition embeddings under ``embed.`` (label and vector models load unchanged; a
    sequence model's pooling is new)."""
    for key in [k for k in state if k.startswith(prefix + "embed.")]:
        rest = key[len(prefix):]
        old = next((o for o in _RENAMED if rest.startswith(o)), None)
        if old is not None:
            state[prefix + _RENAMED[old] + rest[len(old):]] = state.pop(key)


def _zero(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class TransformerPredictor(nn.Module):
    r"""Non-causal transformer predictor for images ``(N, C, H, W)`` (module docstring), chosen
    by ``NTM((C, H, W), predictor="transformer", predictor_options=...)``.

    Arguments:
        image_shape: :math:`(C, H, W)`, with :math:`H` and :math:`W` divisible by ``patch``.
        classes: Number of classes (label ``classes`` is the null label), or ``None``.
        patch: Patch size :math:`p` (tokens of :math:`C p^2` features).
        width: Token width.
        depth: Number of DiT blocks.
        heads: Attention heads (dividing ``width``).
        embedding: Size of each time and condition embedding.
        sigma_min, log_sigma_bound: As for :class:`~ntmdist.predictor.MLPPredictor`.
        context: ``C'`` for context vectors ``(N, C')``, ``(L', E)`` for sequences
            ``(N, L', E)`` (with ``mask=`` ``(N, L')``; read by cross-attention), exclusive
            with ``classes``.

    Called as ``P(u_t, t, s, y=None, mask=None, null=None)`` with ``u_t`` ``(N, C, H, W)``,
    ``t``, ``s`` ``(N,)`` and the condition embedded by
    :class:`~ntmdist.conditioning.Conditioning` (``null`` ``(N,)``: True where the learned null
    condition replaces it; an all-masked sequence is the null condition); returns
    ``(mu, log_sigma)``, each ``(N, C, H, W)``.

    Example:
        >>> P = TransformerPredictor((1, 8, 8), classes=10, width=32, depth=2, heads=4)
        >>> u, t, s = torch.randn(5, 1, 8, 8), torch.full((5,), 0.5), torch.full((5,), 0.25)
        >>> mu, log_sigma = P(u, t, s, torch.arange(5))
        >>> mu.shape, log_sigma.shape
        (torch.Size([5, 1, 8, 8]), torch.Size([5, 1, 8, 8]))
        >>> from ntmdist.predictor import posterior_form
        >>> zero = torch.zeros_like(u)  # zero-initialised: the posterior step of N(0, I) data
        >>> torch.equal(mu, posterior_form(u, t, s, zero, zero, 1e-2, 12.0)[0])
        True
    """

    def __init__(
        self, image_shape: Sequence[int], classes: int | None = None, patch: int = 2,
        width: int = 64, depth: int = 4, heads: int = 4, embedding: int = 64,
        sigma_min: float = 1e-2, log_sigma_bound: float = 12.0, *,
        context: int | Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        c, h, w = patch_grid(image_shape, patch)
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.image_shape, self.patch, self.classes = (c, h, w), patch, classes
        self.features = c * h * w
        self.sigma_min, self.log_sigma_bound = sigma_min, log_sigma_bound
        self.conditioning = Conditioning(ConditionSpec.of(classes, context), 2, embedding)
        self.inp = nn.Linear(c * patch * patch, width)
        self.pos = nn.Parameter(torch.randn((h // patch) * (w // patch), width) * 0.02)
        self.cond = nn.Sequential(nn.Linear(self.conditioning.features, width), nn.SiLU(),
                                  nn.Linear(width, width))
        tokens = embedding if self.conditioning.spec.kind == "sequence" else 0
        self.blocks = nn.ModuleList(_Block(width, heads, tokens) for _ in range(depth))
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.ada = _zero(nn.Linear(width, 2 * width))
        self.out = _zero(nn.Linear(width, 2 * c * patch * patch))
        self.register_load_state_dict_pre_hook(_legacy_keys)

    def forward(
        self, u_t: Tensor, t: Tensor, s: Tensor, y: Tensor | None = None,
        mask: Tensor | None = None, null: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        if u_t.dim() != 4 or tuple(u_t.shape[1:]) != self.image_shape:
            shape = ", ".join(map(str, self.image_shape))
            raise ValueError(f"expected u_t of shape (N, {shape}), got {tuple(u_t.shape)}")
        vector, tokens, mask = self.conditioning((t, s), y, mask, null)
        c = F.silu(self.cond(vector))
        h = self.inp(patchify(u_t, self.patch)) + self.pos
        for block in self.blocks:
            h = block(h, c, tokens, mask)
        shift, scale = self.ada(c)[:, None].chunk(2, dim=-1)
        out = self.out(_modulate(self.norm(h), shift, scale))
        channels, height, width = self.image_shape
        out = unpatchify(out, (2 * channels, height, width), self.patch)
        correction, delta = out.chunk(2, dim=1)
        return posterior_form(u_t, t, s, correction, delta, self.sigma_min,
                              self.log_sigma_bound)
