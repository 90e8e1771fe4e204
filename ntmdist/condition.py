r"""A model's condition as data: its kind (:class:`ConditionSpec`, which validates raw
conditions) and one checked condition (:class:`Condition`), as it travels through the library.

Kinds (docs/design.md, section 2): integer labels ``y`` ``(*batch,)`` (``classes=K``), context
vectors ``(*batch, C)`` (``context=C``) and sequences ``(*batch, L, E)`` with an optional boolean
mask ``(*batch, L)``, True for a real token (``context=(L, E)``). A condition's batch shape is
``y.shape`` for labels, ``y.shape[:-1]`` for vectors and ``y.shape[:-2]`` for sequences. Examples
whose condition is dropped (classifier-free guidance) are marked by a boolean ``null``
``(*batch,)``; labels keep the in-band null label ``K`` instead, so that networks written for
labels keep working. The networks embed a condition with
:class:`~ntmdist.conditioning.Conditioning`.

Reference:
    | Classifier-Free Diffusion Guidance (Ho & Salimans, 2022), arXiv 2207.12598
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .validation import check_labels, check_tensor, check_values, validating

__all__ = ["Condition", "ConditionSpec", "dropout_mask", "extras"]


@dataclass(frozen=True)
class ConditionSpec:
    r"""The kind of condition a network takes: ``"none"``, ``"labels"`` (``classes``),
    ``"vector"`` (``shape = (C,)``) or ``"sequence"`` (``shape = (L, E)``).

    Example:
        >>> spec = ConditionSpec.of(context=(7, 16))
        >>> spec.kind, spec.batch_shape(torch.zeros(3, 2, 7, 16))
        ('sequence', torch.Size([3, 2]))
    """

    kind: str = "none"
    classes: int | None = None
    shape: tuple[int, ...] = ()

    @classmethod
    def of(cls, classes: int | None = None, context: int | Sequence[int] | None = None
           ) -> ConditionSpec:
        """The spec of ``classes=`` or ``context=`` (``C`` or ``(L, E)``; exclusive).

        Raises:
            TypeError: Not integers.
            ValueError: Both given, or sizes below 1.
        """
        if classes is not None and context is not None:
            raise ValueError("classes= and context= are exclusive: a model takes one kind of "
                             "condition")
        if classes is not None:
            return cls("labels", _size(classes, "classes"))
        if context is None:
            return cls()
        if isinstance(context, int) and not isinstance(context, bool):
            return cls("vector", shape=(_size(context, "context"),))
        if isinstance(context, Sequence) and not isinstance(context, str) and len(context) == 2:
            return cls("sequence", shape=tuple(_size(c, "context") for c in context))
        raise TypeError(f"context must be C (vectors (*batch, C)) or (L, E) (sequences "
                        f"(*batch, L, E)), got {context!r}")

    @property
    def context(self) -> int | tuple[int, ...] | None:
        """The ``context=`` argument of this spec (``None`` for labels and none)."""
        if self.kind == "vector":
            return self.shape[0]
        return self.shape if self.kind == "sequence" else None

    def config(self) -> dict:
        """``{"classes": ..., "context": ...}`` as plain data (a model's config)."""
        context = self.context
        return {"classes": self.classes,
                "context": list(context) if isinstance(context, tuple) else context}

    def batch_shape(self, y: Tensor) -> torch.Size:
        """``y.shape`` without the condition's own dimensions."""
        return y.shape[: y.dim() - len(self.shape)]

    def expected(self) -> str:
        """What a condition of this kind is, for error messages."""
        if self.kind == "labels":
            return "an integer tensor of labels (*batch,)"
        what = "context vectors" if self.kind == "vector" else "sequences"
        return f"{what} (*batch, {', '.join(map(str, self.shape))})"

    def check(self, y: object, mask: object = None, ref: Tensor | None = None,
              validate: bool | None = None) -> Condition | None:
        """The raw condition ``y`` (and ``mask``) checked and wrapped (``None`` stays ``None``:
        the null condition of a conditional model).

        Raises:
            TypeError: Wrong dtype (labels for a context model or the reverse, a mask that is not
                boolean, a context of another dtype or device than ``ref``).
            ValueError: A condition for an unconditional model, a wrong trailing shape, labels
                out of range, NaN or inf when validating, a mask of the wrong shape.
        """
        if y is None:
            if mask is not None:
                raise ValueError("got a mask but no condition y")
            return None
        if self.kind == "none":
            raise ValueError("this model is unconditional (classes=None, context=None) but got "
                             "a condition y")
        device = None if ref is None else ref.device
        if self.kind == "labels":
            y = torch.as_tensor(y, device=device)
            check_labels(y, self.classes)
        else:
            if not torch.is_tensor(y):
                y = torch.as_tensor(y, dtype=None if ref is None else ref.dtype, device=device)
            if not y.is_floating_point():
                raise TypeError(f"the condition y must be {self.expected()} of floating point "
                                f"numbers, got dtype {y.dtype} (integer labels are for models "
                                "with classes=)")
            check_tensor(y, "the context y", ref)
            n = len(self.shape)
            if y.dim() < n or tuple(y.shape[y.dim() - n:]) != self.shape:
                raise ValueError(f"the condition y must be {self.expected()}, got shape "
                                 f"{tuple(y.shape)}")
        if mask is not None:
            mask = self._check_mask(mask, y)
        if self.kind != "labels":
            real = y if mask is None else torch.where(mask[..., None], y, 0.0)
            check_values(real, "the context y", validating(validate), scored=False)
        return Condition(y, self, mask)

    def _check_mask(self, mask: object, y: Tensor) -> Tensor:
        if self.kind != "sequence":
            raise ValueError(f"mask= is for sequence contexts (context=(L, E)); this model takes "
                             f"{self.expected()}")
        if not torch.is_tensor(mask) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a boolean tensor (*batch, {self.shape[0]}), True for "
                            f"a real token, got {getattr(mask, 'dtype', type(mask).__name__)}")
        batch = self.batch_shape(y)
        if mask.dim() < 1 or mask.shape[-1] != self.shape[0] or mask.dim() - 1 > len(batch) or \
                not _broadcasts_to(mask.shape[:-1], batch):
            raise ValueError(f"mask must have shape (*batch, {self.shape[0]}) with the batch "
                             f"shape {tuple(batch)} of y, got {tuple(mask.shape)}")
        return mask.to(y.device).expand(*batch, -1)


def _size(n: object, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an integer, got {n!r}")
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {n}")
    return n


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def dropout_mask(shape: torch.Size, p: float, generator: torch.Generator | None = None
                 ) -> Tensor:
    """Boolean ``shape``: each entry True with probability ``p``, drawn from ``generator``.

    Example:
        >>> dropout_mask(torch.Size([4]), 1.0).tolist()
        [True, True, True, True]
    """
    device = generator.device if generator is not None else None
    return torch.rand(shape, generator=generator, device=device) < p


class Condition:
    r"""A checked condition: ``value`` ``(*batch, *spec.shape)``, ``mask`` ``(*batch, L)`` or
    ``None``, ``null`` ``(*batch,)`` (True: use the null condition) or ``None``.

    Networks are called with ``net(*inputs, value, **condition.extras())``: ``mask=`` and
    ``null=`` are passed only when they are not ``None``. Dropped labels stay in-band (the null
    label ``classes``), so label networks never receive ``null=``.

    Example:
        >>> c = ConditionSpec.of(context=3).check(torch.zeros(2, 3))
        >>> c.expand((4, 2)).flatten().value.shape, c.null_twin().extras()["null"].tolist()
        (torch.Size([8, 3]), [True, True])
    """

    def __init__(self, value: Tensor, spec: ConditionSpec, mask: Tensor | None = None,
                 null: Tensor | None = None) -> None:
        self.value, self.spec, self.mask, self.null = value, spec, mask, null

    @classmethod
    def wrap(cls, y: Tensor | Condition | None, classes: int | None = None) -> Condition | None:
        """``y`` as a condition: integer tensors are labels, floating ones context vectors."""
        if y is None or isinstance(y, Condition):
            return y
        if not torch.is_tensor(y):
            raise TypeError(f"y must be a tensor or None, got {type(y).__name__}")
        if y.is_floating_point():
            return cls(y, ConditionSpec("vector", shape=tuple(y.shape[-1:])))
        return cls(y, ConditionSpec("labels", classes))

    @property
    def batch_shape(self) -> torch.Size:
        return self.spec.batch_shape(self.value)

    def _map(self, fn: Callable[[Tensor, int], Tensor]) -> Condition:
        """Apply ``fn(tensor, trailing dims)`` to value, mask and null."""
        mask = None if self.mask is None else fn(self.mask, 1)
        null = None if self.null is None else fn(self.null, 0)
        return Condition(fn(self.value, len(self.spec.shape)), self.spec, mask, null)

    def expand(self, shape: Sequence[int]) -> Condition:
        """Broadcast to batch shape ``shape``."""
        shape = torch.Size(shape)
        return self._map(lambda v, n: v.expand(shape + v.shape[v.dim() - n:]))

    def unsqueeze(self) -> Condition:
        """A trailing batch dimension of size 1 (to broadcast against levels or steps)."""
        return self._map(lambda v, n: v.unsqueeze(v.dim() - n))

    def flatten(self) -> Condition:
        """The batch flattened to one dimension ``(n,)``."""
        return self._map(lambda v, n: v.reshape(-1, *v.shape[v.dim() - n:]))

    def cat(self, other: Condition) -> Condition:
        """Concatenation along a flat batch (``null`` filled with False where absent)."""
        mask = None if self.mask is None else torch.cat([self.mask, other.mask])
        null = None
        if self.null is not None or other.null is not None:
            null = torch.cat([c.null if c.null is not None else
                              torch.zeros(c.batch_shape, dtype=torch.bool,
                                          device=c.value.device) for c in (self, other)])
        return Condition(torch.cat([self.value, other.value]), self.spec, mask, null)

    def null_twin(self) -> Condition:
        """The all-null condition of the same batch (the unconditional branch of guidance)."""
        if self.spec.kind == "labels":
            return Condition(torch.full_like(self.value, self.spec.classes), self.spec)
        null = torch.ones(self.batch_shape, dtype=torch.bool, device=self.value.device)
        return Condition(self.value, self.spec, self.mask, null)

    def drop(self, p: float, generator: torch.Generator | None = None) -> Condition:
        """Each example's condition replaced by the null one with probability ``p`` (condition
        dropout, which trains the unconditional branch of guidance), one draw per example."""
        drop = dropout_mask(self.batch_shape, p, generator).to(self.value.device)
        if self.spec.kind == "labels":
            value = torch.where(drop, torch.full_like(self.value, self.spec.classes), self.value)
            return Condition(value, self.spec)
        null = drop if self.null is None else self.null | drop
        return Condition(self.value, self.spec, self.mask, null)

    def extras(self) -> dict[str, Tensor]:
        """The keyword arguments ``mask=``/``null=`` of a network call, where not ``None``."""
        return extras(self.mask, self.null)


def extras(mask: Tensor | None = None, null: Tensor | None = None) -> dict[str, Tensor]:
    """``{"mask": mask, "null": null}`` without the ``None`` entries: the keyword arguments with
    which a network passes a condition on to another (so that networks written for labels,
    ``net(..., y)``, keep working).

    Example:
        >>> extras(None, torch.tensor([True]))
        {'null': tensor([True])}
    """
    return {k: v for k, v in (("mask", mask), ("null", null)) if v is not None}
