r"""Input checks shared by the public API (see ``docs/reliability.md``).

Two errors are documented: :class:`TypeError` for an argument of the wrong kind (not a tensor,
an integer, bool or complex dtype where real numbers are expected, a dtype or device other than
the model's) and :class:`ValueError` for a value outside what is accepted (a shape, a range, NaN
or inf, an unknown name). Shape and type checks always run; checks that read tensor values (NaN,
inf, magnitudes, grids) run when validation is on: a distribution's ``validate_args``, else
torch's default (:meth:`torch.distributions.Distribution.set_default_validate_args`, on unless
Python runs with ``-O``). Labels are always checked: an out-of-range label would index out of
bounds deep inside an embedding. Inside ``torch.compile`` the value checks are skipped: they read
tensor values on the host, which would break the graph (torch itself switches the default
distribution validation off the first time it compiles).

Magnitudes: a value is scored only when :math:`|x| \leq` :func:`magnitude_limit`, the fourth root
of the largest number of its dtype (about ``4.3e9`` in float32, ``1.2e77`` in float64). Squared
and scaled by the networks, larger values overflow; within it ``log_prob`` is finite.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

__all__ = [
    "check_count",
    "check_data",
    "check_event_shape",
    "check_generator",
    "check_grid",
    "check_labels",
    "check_sample_shape",
    "check_tensor",
    "check_values",
    "check_weight",
    "magnitude_limit",
    "reference",
    "renamed",
    "validating",
]


def validating(flag: bool | None = None) -> bool:
    """Whether value checks run: ``flag`` (a distribution's ``validate_args``) when given, else
    torch's default for distributions (read, never changed)."""
    return bool(Distribution._validate_args if flag is None else flag)


def magnitude_limit(dtype: torch.dtype) -> float:
    """The largest magnitude scored in ``dtype``: ``torch.finfo(dtype).max ** 0.25``.

    Example:
        >>> f"{magnitude_limit(torch.float32):.2g}", f"{magnitude_limit(torch.float64):.2g}"
        ('4.3e+09', '1.2e+77')
    """
    return torch.finfo(dtype).max ** 0.25


def reference(*modules: nn.Module | None) -> Tensor | None:
    """The first floating point parameter or buffer of ``modules``: the dtype and device that
    inputs must have (``None`` when they hold none)."""
    for module in modules:
        if module is None:
            continue
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            if tensor.is_floating_point():
                return tensor
    return None


def check_tensor(value: object, name: str, ref: Tensor | None = None) -> Tensor:
    """``value`` if it is a real floating point tensor with the dtype and device of ``ref``.

    Raises:
        TypeError: Not a tensor, not real floating point, or another dtype or device than
            ``ref`` (naming both).
    """
    if not torch.is_tensor(value):
        raise TypeError(f"{name} must be a floating point torch.Tensor, got "
                        f"{type(value).__name__}")
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a real floating point tensor, got dtype {value.dtype}")
    if ref is not None:
        if value.device != ref.device:
            raise TypeError(f"{name} is on device {value.device} but the model is on "
                            f"{ref.device}; move one of them with .to(device)")
        if value.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {value.dtype} but the model has {ref.dtype}; "
                            f"convert with .to({ref.dtype}) or model.to({value.dtype})")
    return value


def check_values(value: Tensor, name: str, validate: bool, scored: bool = True) -> None:
    """Refuse NaN, inf and, for a value to be ``scored`` (its density computed), magnitudes
    beyond :func:`magnitude_limit`, when ``validate`` (one reduction on the fast path; skipped
    inside ``torch.compile``).

    Raises:
        ValueError: Naming ``name`` and what is wrong.
    """
    if not validate or value.is_meta or value.numel() == 0 or torch.compiler.is_compiling():
        return
    limit = magnitude_limit(value.dtype)
    if bool((value.abs() <= limit if scored else torch.isfinite(value)).all()):
        return
    if not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or inf")
    raise ValueError(f"{name} has values beyond +-{limit:.3g}, the largest magnitude scored in "
                     f"{value.dtype} (finfo.max ** 0.25); standardise the data")


def check_grid(grid: object, steps: int | None = None, validate: bool = True,
               name: str = "grid") -> Tensor:
    r"""A time grid ``(*, T+1)``: checks the shape always and, when ``validate``, that every row
    satisfies ``0 <= t_0 < t_1 < ... < t_T = 1`` in the grid's own dtype, with
    :math:`t_1^2` representable (:math:`t_1 \geq \sqrt{\mathrm{finfo.tiny}}`, about ``1e-19``
    in float32: the reverse-step coefficients divide by :math:`t^2`).

    Raises:
        TypeError: Not a real floating point tensor.
        ValueError: Wrong length or values out of order or range.
    """
    grid = check_tensor(grid, name)
    if grid.dim() < 1 or grid.shape[-1] < 2:
        raise ValueError(f"{name} must have shape (*batch, T+1) with T >= 1, "
                         f"got {tuple(grid.shape)}")
    if steps is not None and grid.shape[-1] != steps + 1:
        raise ValueError(f"{name} must have T+1 = {steps + 1} times in its last dimension, "
                         f"got shape {tuple(grid.shape)}")
    if not validate or grid.is_meta or grid.numel() == 0 or torch.compiler.is_compiling():
        return grid
    ok = (grid[..., 0] >= 0) & (grid[..., -1] == 1) & (grid.diff(dim=-1) > 0).all(-1)
    ok = ok & (grid[..., 1] >= math.sqrt(torch.finfo(grid.dtype).tiny))
    if not bool(ok.all()):
        row = grid.reshape(-1, grid.shape[-1])[~ok.reshape(-1)][0]
        raise ValueError(f"{name} must satisfy 0 <= t_0 < t_1 < ... < t_T = 1 (strictly "
                         f"ascending in {grid.dtype}, t_1 >= "
                         f"{math.sqrt(torch.finfo(grid.dtype).tiny):.2g}), got {row.tolist()}")
    return grid


def check_labels(y: Tensor, classes: int) -> None:
    """Integer class labels in ``0..classes`` (``classes`` is the null label of guidance).

    Raises:
        TypeError: Not an integer tensor (bool, float and complex are refused).
        ValueError: A label out of range.
    """
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"class labels must be an integer tensor, got dtype {y.dtype}")
    if y.numel() and not y.is_meta:
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi > classes:
            raise ValueError(f"class labels must be in 0..{classes - 1} ({classes}: the null "
                             f"label), got values in {lo}..{hi}")


def check_event_shape(event_shape: object) -> torch.Size:
    """``event_shape`` (a tuple of positive integers such as ``(2,)``) as a ``torch.Size``.

    Raises:
        TypeError: Not a sequence of integers (a bare integer or a string included).
        ValueError: Empty, or a dimension below 1.
    """
    if isinstance(event_shape, (int, str)) or not isinstance(event_shape, Sequence) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in event_shape
    ):
        raise TypeError(f"event_shape must be a tuple of integers such as (2,), got "
                        f"{event_shape!r}")
    if len(event_shape) == 0 or any(d < 1 for d in event_shape):
        raise ValueError(f"event_shape must be a non-empty shape, got {tuple(event_shape)}")
    return torch.Size(event_shape)


def check_count(n: object, name: str, minimum: int = 0) -> int:
    """``n`` as an ``int >= minimum``.

    Raises:
        TypeError: Not an integer (bool is refused).
        ValueError: Below ``minimum``.
    """
    if isinstance(n, bool) or not isinstance(n, int):
        if not (torch.is_tensor(n) and n.dim() == 0 and not n.is_floating_point()
                and n.dtype != torch.bool):
            raise TypeError(f"{name} must be an integer, got {type(n).__name__}")
        n = int(n)
    if n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {n}")
    return n


def check_sample_shape(shape: object) -> torch.Size:
    """``shape`` as a ``torch.Size`` of non-negative integers.

    Raises:
        TypeError: Not a sequence of integers.
        ValueError: A negative size.
    """
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, Sequence) or isinstance(shape, str):
        raise TypeError(f"sample_shape must be a tuple of integers, got {type(shape).__name__}")
    return torch.Size(check_count(n, "every size in sample_shape") for n in shape)


def check_generator(generator: object) -> None:
    """``None`` or a CPU ``torch.Generator`` (ntmdist draws on the CPU and moves the result).

    Raises:
        TypeError: Anything else.
    """
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got "
                        f"{type(generator).__name__}")
    if generator.device.type != "cpu":
        raise TypeError(f"generator must be a CPU torch.Generator (ntmdist draws noise on the CPU "
                        f"and moves it), got one on {generator.device}")


def check_weight(w: object, name: str) -> float:
    """A finite number ``>= 0`` (e.g. a guidance weight).

    Raises:
        TypeError: Not a real number.
        ValueError: Negative, NaN or inf.
    """
    if isinstance(w, bool) or not isinstance(w, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(w).__name__}")
    if not (math.isfinite(w) and w >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
    return float(w)


def check_data(x: object, event_shape: torch.Size, ref: Tensor, batched: bool = True) -> None:
    """Check the type and shape of data ``x`` ``(*batch, *event_shape)``, with at least one
    batch dimension when ``batched`` (NaN and inf are refused by :meth:`Schedule.sample`,
    magnitudes by ``log_prob``).

    Raises:
        TypeError: As :func:`check_tensor`.
        ValueError: A wrong shape.
    """
    check_tensor(x, "data", ref)
    n = len(event_shape)
    if x.dim() < n + batched or x.shape[x.dim() - n :] != event_shape:
        batch = "batch" if batched else "*batch"
        raise ValueError(
            f"data must have shape ({batch}, {', '.join(map(str, event_shape))}), "
            f"got {tuple(x.shape)}"
        )


def renamed(new: object, old: object, name: str, old_name: str) -> object:
    """The value of an argument that has a new and an old name (``None``: not given).

    Raises:
        TypeError: Both names given.

    Example:
        >>> renamed(None, 0.2, "condition_dropout", "label_dropout")
        0.2
    """
    if new is not None and old is not None:
        raise TypeError(f"pass {name}= or its old name {old_name}=, not both")
    return old if new is None else new
