r"""Bijectors: ``torch.distributions.Transform`` objects with fused log-determinants, built by
lazy modules called with their context (zuko style). The forward direction maps data to noise."""

from .adapters import NflowsBlock, ZukoBlock, as_lazy
from .autoregressive import MaskedAutoregressive
from .base import (
    Bijector,
    ComposedBijector,
    LazyBijector,
    LazyComposed,
    call_and_ladj,
    inverse,
    inverse_and_ladj,
)
from .coupling import AffineCoupling
from .patches import PatchCausalAffine, patchify, unpatchify
from .permutation import Permutation
from .spline import rqs_forward, rqs_inverse
from .transformer import CausalTransformerAffine

__all__ = [
    "AffineCoupling",
    "Bijector",
    "CausalTransformerAffine",
    "ComposedBijector",
    "LazyBijector",
    "LazyComposed",
    "MaskedAutoregressive",
    "NflowsBlock",
    "PatchCausalAffine",
    "Permutation",
    "ZukoBlock",
    "as_lazy",
    "call_and_ladj",
    "inverse",
    "inverse_and_ladj",
    "patchify",
    "rqs_forward",
    "rqs_inverse",
    "unpatchify",
]
