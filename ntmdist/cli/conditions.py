"""Conditions on the command line: context vectors ``(N, C)`` (``--context FILE``, a ``.npy``
array of real numbers) and class labels ``(N,)`` (``--labels FILE``, integers), paired row by
row with the data of ``fit`` and ``evaluate``; ``sample`` takes one such file (one condition,
repeated, or one per sample) or ``--given`` (one condition as text: ``"1.0,2.0"``, or a label
``"3"``).

``fit`` builds ``NTM(..., context=C)`` or ``NTM(..., classes=K)`` (``K`` the largest label plus
one); the checkpoint's config records the condition, so ``sample`` and ``evaluate`` check the
conditions they are given against it. Sequence contexts (``context=(L, E)``, with masks) are
for the Python API.

Example:
    >>> from ntmdist.conditioning import ConditionSpec
    >>> given("1.5, -2", ConditionSpec.of(context=2))
    tensor([ 1.5000, -2.0000])
    >>> arguments(torch.tensor([0, 2, 1])), arguments(torch.zeros(3, 5))
    ({'classes': 3}, {'context': 5})
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor

from ..conditioning import ConditionSpec
from ..data import Toy
from ..model import NTM
from .evaluation import UsageError, load_array, load_labels

__all__ = ["arguments", "check", "given", "paired", "read"]


def read(args: argparse.Namespace, rows: int | None = None) -> Tensor | None:
    """The condition of ``--context`` (float32 ``(N, C)``) or ``--labels`` (int64 ``(N,)``),
    ``None`` without either; with ``rows``, it must have that many rows (one per data row).

    Raises:
        UsageError: An unreadable file, NaN or inf, a wrong shape or dtype, other rows.
    """
    flag, path = next(((f, p) for f, p in (("--context", getattr(args, "context", None)),
                                           ("--labels", getattr(args, "labels", None)))
                       if p is not None), (None, None))
    if path is None:
        return None
    try:
        y = load_array(path) if flag == "--context" else load_labels(path)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(f"{flag}: {error}") from error
    if rows is not None and len(y) != rows:
        raise UsageError(f"{flag} {path!r} has {len(y)} rows but the data has {rows}: each "
                         "row is the condition of the data row with the same index")
    return y


def paired(args: argparse.Namespace, toy: Toy | None, array: Tensor | None) -> Tensor | None:
    """The condition of ``--context`` / ``--labels`` paired with the rows of a ``.npy`` data
    file (a built-in toy has no conditions)."""
    if getattr(args, "context", None) is None and getattr(args, "labels", None) is None:
        return None
    if toy is not None:
        raise UsageError("--context and --labels give a condition per row of a .npy data "
                         "file; a built-in toy has none")
    return read(args, len(array))


def arguments(y: Tensor | None) -> dict[str, int]:
    """``NTM``'s condition arguments for the conditions ``y`` of the training data:
    ``context=C`` for vectors ``(N, C)``, ``classes=K`` for labels (``K = max + 1``)."""
    if y is None:
        return {}
    if y.is_floating_point():
        return {"context": y.shape[-1]}
    return {"classes": int(y.max()) + 1}


def _hint(spec: ConditionSpec, given_too: bool) -> str:
    option = "--labels FILE (N,)" if spec.kind == "labels" else "--context FILE (N, C)"
    value = "LABEL" if spec.kind == "labels" else "'c1,c2,...'"
    return option + (f" or --given {value}" if given_too else "")


def check(model: NTM, y: Tensor | None, source: str, given_too: bool = False) -> Tensor | None:
    """``y`` (from ``source``, for messages) checked against the condition of ``model``, in
    the model's dtype.

    Raises:
        UsageError: A condition for an unconditional model or none for a conditional one, a
            model with sequence contexts, labels for a context model or the reverse, a wrong
            number of features, labels out of range.
    """
    spec = model.condition
    if spec.kind == "sequence":
        raise UsageError(f"the model takes sequence contexts {spec.expected()}; the command "
                         "line gives context vectors and labels (use the Python API)")
    if y is None:
        if spec.kind != "none":
            raise UsageError(f"the model is conditioned on {spec.expected()}: pass "
                             f"{_hint(spec, given_too)}")
        return None
    if spec.kind == "none":
        raise UsageError(f"{source} gives conditions but the model is unconditional")
    if (spec.kind == "labels") == y.is_floating_point():
        what = "context vectors" if y.is_floating_point() else "labels"
        raise UsageError(f"{source} gives {what} but the model takes {spec.expected()}: pass "
                         f"{_hint(spec, given_too)}")
    if y.is_floating_point():
        y = y.to(next(model.parameters()).dtype)
    try:
        model.encode(y)
    except (TypeError, ValueError) as error:
        raise UsageError(f"{source}: {error}") from error
    return y


def given(text: str, spec: ConditionSpec) -> Tensor:
    """One condition from text: ``"k"`` (a label) when ``spec`` takes labels, else
    ``"c1,c2,..."`` (a context vector; :func:`check` compares it with the model)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as error:
        raise UsageError(f"--given expects numbers separated by commas, got {text!r}") from error
    if not all(math.isfinite(v) for v in values):
        raise UsageError(f"--given: NaN or inf in {text!r}")
    if spec.kind == "labels":
        if len(values) != 1 or not values[0].is_integer():
            raise UsageError(f"--given: the model takes one class label (an integer), got "
                             f"{text!r}")
        return torch.tensor(int(values[0]))
    return torch.tensor(values, dtype=torch.float32)
