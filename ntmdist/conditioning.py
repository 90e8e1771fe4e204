r"""One way for a condition to enter every network: labels, context vectors and sequences.

An NTM takes one kind of condition (docs/design.md, sections 2 and 5): integer labels ``y``
``(*batch,)`` (``classes=K``), context vectors ``(*batch, C)`` (``context=C``) or sequences
``(*batch, L, E)`` with an optional boolean mask ``(*batch, L)``, True for a real token
(``context=(L, E)``). :class:`ConditionSpec` validates raw conditions; :class:`Condition` carries
one through the library (value, mask, and a boolean ``null`` marking examples whose condition is
dropped); :class:`Conditioning` embeds it, with the network's times, into

.. math:: v = [e(t_1), \dots, e(t_m), \phi(y)] \in \mathbb{R}^{mE + E},

the vector that MLPs, FiLM and adaLN consume (:math:`e` the sinusoidal time embedding,
:math:`\phi` a label embedding, an MLP of the context vector, or an MLP of the masked mean of
the projected tokens), and for sequences the projected tokens and their mask (what
cross-attention consumes). A *null* condition (classifier-free guidance) is a learned embedding:
the label ``K`` for labels (kept in-band, so custom predictors written for labels keep working),
a learned vector, and for sequences a learned pooled vector and token. A sequence without real
tokens is the null condition.

References:
    | Classifier-Free Diffusion Guidance (Ho & Salimans, 2022), arXiv 2207.12598
    | Attention Is All You Need (Vaswani et al., 2017), arXiv 1706.03762
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .condition import Condition, ConditionSpec, dropout_mask, extras
from .config import register_part
from .nets import TimeEmbedding
from .validation import check_labels

__all__ = ["Condition", "ConditionSpec", "Conditioning", "ContextMLP", "Embedded",
           "dropout_mask", "extras", "legacy_label_keys"]


class Embedded(NamedTuple):
    """What a network receives from :class:`Conditioning`: the ``vector`` ``(*, F)`` and, for
    sequences, the ``tokens`` ``(*, L, E)`` and their ``mask`` ``(*, L)`` (else ``None``).

    Example:
        >>> embed = Conditioning(ConditionSpec.of(classes=4), times=1, embedding=8)
        >>> vector, tokens, mask = embed((torch.rand(2),), torch.tensor([0, 3]))
        >>> vector.shape, tokens, mask
        (torch.Size([2, 16]), None, None)
    """

    vector: Tensor
    tokens: Tensor | None = None
    mask: Tensor | None = None


def _mlp(inputs: int, width: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, width), nn.SiLU(), nn.Linear(width, width))


class Conditioning(nn.Module):
    r"""Embeds a network's times and its condition (module docstring).

    Arguments:
        spec: The condition (:class:`ConditionSpec`; unconditional by default).
        times: Number of times the network takes (2 for a predictor's :math:`(t, s)`, 1 for a
            velocity or a denoiser, 0 for a transporter block's condition).
        embedding: Size :math:`E` of each time embedding and of the condition's embedding.

    Calling it with times ``(*,)`` each and the condition ``y`` (``mask``, ``null``) of batch
    shape ``(*)`` returns :class:`Embedded`; ``y=None`` is the null condition. :attr:`features`
    is the size of the vector.

    Example:
        >>> embed = Conditioning(ConditionSpec.of(context=(5, 8)), times=2, embedding=16)
        >>> t, s, y = torch.rand(3), torch.rand(3), torch.randn(3, 5, 8)
        >>> out = embed((t, s), y, mask=torch.tensor([[True] * 4 + [False]] * 3))
        >>> out.vector.shape, out.tokens.shape, embed.features
        (torch.Size([3, 48]), torch.Size([3, 5, 16]), 48)
    """

    def __init__(self, spec: ConditionSpec | None = None, times: int = 1, embedding: int = 64
                 ) -> None:
        super().__init__()
        self.spec = ConditionSpec() if spec is None else spec
        if times < 1 and self.spec.kind == "none":
            raise ValueError("an unconditional Conditioning needs at least one time")
        self.times, self.embedding = times, embedding
        self.embed_t = TimeEmbedding(embedding)
        kind = self.spec.kind
        if kind == "labels":
            self.label = nn.Embedding(self.spec.classes + 1, embedding)
        elif kind == "vector":
            self.context = _mlp(self.spec.shape[0], embedding)
        elif kind == "sequence":
            self.token = nn.Linear(self.spec.shape[1], embedding)
            self.pool = _mlp(embedding, embedding)
            self.null_token = nn.Parameter(torch.zeros(embedding))
        if kind in ("vector", "sequence"):
            self.null = nn.Parameter(torch.zeros(embedding))

    @property
    def conditional(self) -> bool:
        return self.spec.kind != "none"

    @property
    def features(self) -> int:
        """Size of :attr:`Embedded.vector`."""
        return self.embedding * (self.times + self.conditional)

    def forward(self, times: Sequence[Tensor], y: Tensor | None = None,
                mask: Tensor | None = None, null: Tensor | None = None) -> Embedded:
        if len(times) != self.times:
            raise ValueError(f"expected {self.times} times, got {len(times)}")
        self._check(y, mask, null)
        parts = [self.embed_t(t) for t in times]
        batch = torch.broadcast_shapes(*(t.shape for t in times))
        if not self.conditional:
            return Embedded(torch.cat([p.expand(*batch, -1) for p in parts], dim=-1))
        tokens = None
        if self.spec.kind == "labels":
            c = self.label(self._labels(y, null, batch))
        elif y is None:
            c = self.null.expand(*batch, -1)
            if self.spec.kind == "sequence":
                mask = torch.ones(*batch, self.spec.shape[0], dtype=torch.bool,
                                  device=c.device)
                tokens = self.null_token.expand(*mask.shape, -1)
        elif self.spec.kind == "vector":
            c = self.context(y)
            if null is not None:
                c = torch.where(null[..., None], self.null, c)
        else:
            c, tokens, mask = self._sequence(y, mask, null)
        batch = torch.broadcast_shapes(batch, c.shape[:-1])
        vector = torch.cat([p.expand(*batch, -1) for p in (*parts, c)], dim=-1)
        if tokens is None:
            return Embedded(vector)
        return Embedded(vector, tokens.expand(*batch, -1, -1), mask.expand(*batch, -1))

    def _check(self, y: Tensor | None, mask: Tensor | None, null: Tensor | None) -> None:
        """Kinds and shapes of a network's condition (values are for :class:`ConditionSpec`)."""
        spec = self.spec
        if y is not None and not self.conditional:
            raise ValueError("this network is unconditional (classes=None, context=None) but "
                             "got a condition y")
        if y is not None and spec.kind != "labels":
            n = len(spec.shape)
            if not y.is_floating_point():
                raise TypeError(f"the condition y must be {spec.expected()} of floating point "
                                f"numbers, got dtype {y.dtype}")
            if y.dim() < n or tuple(y.shape[y.dim() - n:]) != spec.shape:
                raise ValueError(f"the condition y must be {spec.expected()}, got shape "
                                 f"{tuple(y.shape)}")
        if mask is not None:
            if spec.kind != "sequence":
                raise ValueError(f"mask= is for sequence contexts (context=(L, E)); this "
                                 f"network takes {spec.expected()}")
            if mask.dtype != torch.bool or mask.shape[-1:] != spec.shape[:1]:
                raise TypeError(f"mask must be a boolean tensor (*batch, {spec.shape[0]}), True "
                                f"for a real token, got {mask.dtype} {tuple(mask.shape)}")
        if null is not None and null.dtype != torch.bool:
            raise TypeError(f"null must be a boolean tensor (*batch,), got {null.dtype}")

    def _labels(self, y: Tensor | None, null: Tensor | None, batch: torch.Size) -> Tensor:
        classes = self.spec.classes
        if y is None:
            return torch.full(batch, classes, dtype=torch.long, device=self.label.weight.device)
        check_labels(y, classes)
        y = y.long()
        return y if null is None else torch.where(null, classes, y)

    def _sequence(self, y: Tensor, mask: Tensor | None, null: Tensor | None
                  ) -> tuple[Tensor, Tensor, Tensor]:
        """Pooled vector, tokens and mask; masked-out tokens are zeroed before anything reads
        them, and null (or empty) sequences become the learned null token and vector."""
        if mask is None:
            mask = torch.ones(y.shape[:-1], dtype=torch.bool, device=y.device)
        tokens = self.token(torch.where(mask[..., None], y, 0.0))
        count = mask.sum(-1, keepdim=True)
        mean = torch.where(mask[..., None], tokens, 0.0).sum(-2) / count.clamp_min(1)
        drop = count[..., 0] == 0
        drop = drop if null is None else drop | null
        pooled = torch.where(drop[..., None], self.null, self.pool(mean))
        tokens = torch.where(drop[..., None, None], self.null_token, tokens)
        return pooled, tokens, mask | drop[..., None]


def legacy_label_keys(module: nn.Module, state: dict, prefix: str, *args: object) -> None:
    """A ``load_state_dict`` pre-hook for networks that own a ``conditioning``: state dicts of
    earlier versions kept the label embedding at ``label.weight``; it moves to
    ``conditioning.label.weight``.

    Example:
        >>> from ntmdist import MLPPredictor
        >>> P = MLPPredictor(2, classes=3, width=8, depth=1)
        >>> old = {k.replace("conditioning.", ""): v for k, v in P.state_dict().items()}
        >>> P.load_state_dict(old)  # MLPPredictor registers this hook
        <All keys matched successfully>
    """
    old, new = prefix + "label.weight", prefix + "conditioning.label.weight"
    if old in state and new not in state:
        state[new] = state.pop(old)


class ContextMLP(nn.Module):
    r"""A built-in ``context_net`` (an embedding net, as in sbi): an MLP from raw observations
    ``(*batch, *in_shape)`` (flattened) to context vectors ``(*batch, C)``. A model's config
    records it, so a checkpoint rebuilds it (any other module is recorded as ``"custom"``).

    Arguments:
        in_shape: Shape of one observation (an integer for vectors).
        out_features: :math:`C`, the model's ``context``.
        hidden: Hidden widths (SiLU activations).

    Example:
        >>> import ntmdist as nd
        >>> net = ContextMLP((2, 5), 3, hidden=(16,))
        >>> model = nd.NTM((2,), context=3, context_net=net)
        >>> model(torch.randn(4, 2, 5)).batch_shape, model.config()["context_net"]
        (torch.Size([4]), {'in_shape': [2, 5], 'out_features': 3, 'hidden': [16]})
    """

    def __init__(self, in_shape: int | Sequence[int], out_features: int,
                 hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.in_shape = torch.Size((in_shape,) if isinstance(in_shape, int) else in_shape)
        self.out_features, self.hidden = out_features, [int(h) for h in hidden]
        widths = [self.in_shape.numel(), *self.hidden]
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(widths[-1], out_features))

    def config(self) -> dict:
        """The constructor arguments as plain data."""
        return {"in_shape": list(self.in_shape), "out_features": self.out_features,
                "hidden": list(self.hidden)}

    def forward(self, x: Tensor) -> Tensor:
        n = len(self.in_shape)
        if x.dim() < n or x.shape[x.dim() - n:] != self.in_shape:
            raise ValueError(f"observations must have shape (*batch, "
                             f"{', '.join(map(str, self.in_shape))}), got {tuple(x.shape)}")
        return self.net(x.flatten(x.dim() - n) if n else x.unsqueeze(-1))


register_part("context_net", ContextMLP)
