r"""Plain networks: time embeddings, residual MLPs and masked (MADE) MLPs (the U-Net is
:mod:`ntmdist.unet`).

References:
    | Attention Is All You Need (Vaswani et al., 2017), arXiv 1706.03762 (sinusoidal embedding)
    | MADE: Masked Autoencoder for Distribution Estimation (Germain et al., 2015), arXiv 1502.03509
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

__all__ = ["MaskedMLP", "ResidualMLP", "TimeEmbedding", "soft_clip"]


def soft_clip(a: Tensor, bound: float) -> Tensor:
    r"""Smooth clip to :math:`(-B, B)`: :math:`a / (1 + |a| / B)`; gradients never vanish."""
    return a / (1 + a.abs() / bound)


class TimeEmbedding(nn.Module):
    r"""Sinusoidal embedding of times :math:`t \in [0, 1]`, shape ``(*,) -> (*, features)``.

    :math:`e(t) = [\sin(\omega_i t), \cos(\omega_i t)]` with :math:`\omega_i` geometric in
    :math:`[1, \omega_{max}]`.

    Example:
        >>> TimeEmbedding(8)(torch.rand(3)).shape
        torch.Size([3, 8])
    """

    def __init__(self, features: int = 32, max_frequency: float = 1000.0) -> None:
        super().__init__()
        if features < 2 or features % 2:
            raise ValueError(f"features must be an even integer >= 2, got {features}")
        self.features = features
        # not saved with the weights: computed in float64 and rounded once, so that a model
        # rebuilt from a checkpoint under any default dtype has bitwise the same frequencies
        freqs = torch.linspace(0.0, math.log(max_frequency), features // 2, dtype=torch.float64)
        self.register_buffer("freqs", freqs.exp().to(torch.get_default_dtype()), persistent=False)

    def forward(self, t: Tensor) -> Tensor:
        angle = t[..., None] * self.freqs.to(t)
        return torch.cat([angle.sin(), angle.cos()], dim=-1)


class _Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.lin1 = nn.Linear(width, width)
        self.lin2 = nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        return h + self.lin2(nn.functional.silu(self.lin1(nn.functional.silu(self.norm(h)))))


class ResidualMLP(nn.Module):
    r"""Residual MLP ``(*, in) -> (*, out)``: input projection, ``depth`` pre-norm residual blocks
    of width ``width``, output projection (zero-initialised when ``zero_init``).

    Example:
        >>> ResidualMLP(3, 2, width=16, depth=2)(torch.randn(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self, in_features: int, out_features: int, width: int = 256, depth: int = 4,
        zero_init: bool = True,
    ) -> None:
        super().__init__()
        self.inp = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(*(_Block(width) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, out_features)
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

    def features(self, x: Tensor) -> Tensor:
        """The last hidden layer ``(*, width)``."""
        return nn.functional.silu(self.norm(self.blocks(self.inp(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.features(x))


class _MaskedLinear(nn.Linear):
    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype))

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(x, self.weight * self.mask, self.bias)

    def _load_from_state_dict(self, state: dict, prefix: str, *args: object) -> None:
        # a mask built for another order or number of passes would load silently and make the
        # inverse (which loops over this block's passes) wrong
        mask = state.get(prefix + "mask")
        if mask is not None and (mask.shape != self.mask.shape or not torch.equal(
                mask.to(self.mask), self.mask)):
            raise ValueError(f"the autoregressive mask {prefix}mask in the state differs from "
                             "this block's (built with another order or number of passes)")
        super()._load_from_state_dict(state, prefix, *args)


class MaskedMLP(nn.Module):
    r"""MADE hyper-network: ``(*, D + C) -> (*, D, P)`` with output ``i`` depending only on inputs
    ``j`` that come before ``i`` in ``order`` and on all ``C`` context features.

    With ``passes`` :math:`G \leq D`, the features are cut in ``order`` into :math:`G` groups
    whose sizes differ by at most one (larger first), and a feature depends on the groups before
    its own (:math:`G = D`, the default, is fully autoregressive; :math:`G = 2` is a coupling
    layer). A feature of group :math:`g` has rank :math:`g \in 1..G`; hidden unit degrees cycle
    through :math:`0..G-1`; input of rank :math:`r` feeds hidden units of degree :math:`\geq r`;
    output of rank :math:`r` reads hidden units of degree :math:`< r` (degree 0 sees only the
    context).

    Arguments:
        features: :math:`D`.
        context: :math:`C`.
        params: :math:`P` parameters per feature.
        order: A permutation of ``range(D)``; ``order[0]`` is transformed first.
        hidden: Hidden widths.
        zero_init: Zero-initialise the output layer (the block starts as a fixed point).
        passes: :math:`G`, the number of groups (default :math:`D`).
    """

    def __init__(
        self, features: int, context: int, params: int, order: Tensor | None = None,
        hidden: tuple[int, ...] = (128, 128), zero_init: bool = True, passes: int | None = None,
    ) -> None:
        super().__init__()
        order = torch.arange(features) if order is None else torch.as_tensor(order)
        if sorted(order.tolist()) != list(range(features)):
            raise ValueError(f"order must be a permutation of range({features})")
        passes = features if passes is None else passes
        if not 1 <= passes <= features:
            raise ValueError(f"passes must be in 1..{features}, got {passes}")
        rank = torch.empty(features, dtype=torch.long)
        sizes = [features // passes + (g < features % passes) for g in range(passes)]
        rank[order] = torch.arange(1, passes + 1).repeat_interleave(torch.tensor(sizes))
        self.register_buffer("rank", rank, persistent=False)
        # the features of each group, ascending, concatenated in group order (group g is
        # members[starts[g]:starts[g + 1]]); a group of consecutive features owns one run of
        # output rows, which an inverse pass slices instead of gathering
        members = [(rank == g + 1).nonzero().squeeze(-1) for g in range(passes)]
        self.register_buffer("members", torch.cat(members), persistent=False)
        self._starts = [0, *itertools.accumulate(sizes)]
        self._row_runs = [slice(int(m[0]) * params, (int(m[-1]) + 1) * params)
                          if bool(torch.all(m.diff() == 1)) else None for m in members]
        self.features, self.context, self.params = features, context, params
        self.passes = passes
        in_deg = torch.cat([rank, torch.zeros(context, dtype=torch.long)])
        layers: list[nn.Module] = []
        prev = in_deg
        for width in hidden:
            deg = torch.arange(width) % passes
            layers += [_MaskedLinear(deg[:, None] >= prev[None, :]), nn.SiLU()]
            prev = deg
        out_deg = rank.repeat_interleave(params)
        self.out = _MaskedLinear(out_deg[:, None] > prev[None, :])
        if zero_init:
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)
        self.hidden = nn.Sequential(*layers)

    def _inputs(self, x: Tensor, c: Tensor | None) -> Tensor:
        if not self.context:
            return x
        if c is None:
            raise ValueError(f"this network expects a context of {self.context} features")
        batch = torch.broadcast_shapes(x.shape[:-1], c.shape[:-1])
        return torch.cat([x.expand(*batch, -1), c.expand(*batch, -1)], dim=-1)

    def forward(self, x: Tensor, c: Tensor | None = None, group: int | None = None,
                layers: list[tuple[Tensor, Tensor]] | None = None) -> Tensor:
        """The parameters ``(*, D, P)``; with ``group`` ``g``, only those of its features
        (:meth:`group_features`), ``(*, D_g, P)``: the output layer's other rows are skipped (an
        inverse pass needs one group's parameters), with ``layers`` (:meth:`masked_layers`)
        when given."""
        h = self._inputs(x, c)
        if group is None:
            return self.out(self.hidden(h)).unflatten(-1, (self.features, self.params))
        layers = self.masked_layers() if layers is None else layers
        for weight, bias in layers[:-1]:
            h = nn.functional.silu(nn.functional.linear(h, weight, bias))
        weight, bias = layers[-1]
        features, run = self.group_features(group), self._row_runs[group]
        if run is None:
            rows = (features[:, None] * self.params
                    + torch.arange(self.params, device=features.device)).flatten()
            weight, bias = weight[rows], bias[rows]
        else:
            weight, bias = weight[run], bias[run]
        return nn.functional.linear(h, weight, bias).unflatten(-1, (len(features), self.params))

    def group_features(self, g: int) -> Tensor:
        """The features of group ``g`` in ``0..G-1`` (rank ``g + 1``), ascending."""
        return self.members[self._starts[g] : self._starts[g + 1]]

    def masked_layers(self) -> list[tuple[Tensor, Tensor]]:
        """The masked ``(weight, bias)`` of every linear layer, the output layer last (computed
        once for the :math:`G` passes of an inverse)."""
        linears = [m for m in self.hidden if isinstance(m, _MaskedLinear)] + [self.out]
        return [(m.weight * m.mask, m.bias) for m in linears]
