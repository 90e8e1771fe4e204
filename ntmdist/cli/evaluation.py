r"""Loading saved models and data for the command line, and evaluating a model on held-out data.

:func:`evaluate_model` reports the IWAE bound on :math:`-\log p(x)` (nats per example, summed over
dimensions; :meth:`ntmdist.NTM.iwae`), the energy distance of samples to held-out data and, for
toys with a bounded support (the checkerboard), the fraction of samples on it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..data import TOYS, Toy
from ..metrics import energy_distance, fraction_on_support
from ..model import NTM
from ..training.checkpoint import load_checkpoint

__all__ = [
    "EVAL_SEED", "UsageError", "evaluate_model", "heldout", "load_array", "load_labels",
    "load_model", "resolve_data",
]

EVAL_SEED = 2**40
"""Seed offset of held-out data and evaluation draws: apart from the fit loop's generators."""


class UsageError(Exception):
    """Bad input from the user: reported as ``error: ...`` with exit status 2."""


def _read(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"cannot read {str(path)!r} as a .npy array: {error}") from error
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{str(path)!r}: expected one array, got {type(array).__name__}")
    return array


def load_array(path: str | Path) -> Tensor:
    """A ``.npy`` file holding real numbers ``(N, D)`` as a float32 tensor.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If it is not a readable ``.npy`` array of finite real numbers ``(N, D)``.
    """
    array = _read(path)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"{str(path)!r}: expected an array of shape (N, D), got shape "
                         f"{array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{str(path)!r}: expected real numbers, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{str(path)!r}: the array contains NaN or inf")
    return torch.as_tensor(array.astype(np.float32))


def load_labels(path: str | Path) -> Tensor:
    """A ``.npy`` file holding class labels ``(N,)``, integers ``>= 0``, as an int64 tensor.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If it is not a readable ``.npy`` array of non-negative integers ``(N,)``.
    """
    array = _read(path)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{str(path)!r}: expected labels of shape (N,), got shape "
                         f"{array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{str(path)!r}: expected integer labels, got dtype {array.dtype}")
    if array.min() < 0:
        raise ValueError(f"{str(path)!r}: labels must be >= 0, got {array.min()}")
    return torch.as_tensor(array.astype(np.int64))


def resolve_data(spec: str) -> tuple[str, Toy | None, Tensor | None]:
    """``(name, toy, array)`` of a command's data argument: a built-in toy (``array`` None) or
    a ``.npy`` file (``toy`` None).

    Raises:
        UsageError: If ``spec`` is neither, or the file is not a readable ``(N, D)`` array.
    """
    if spec in TOYS:
        return spec, TOYS[spec], None
    if not spec.endswith(".npy") and not Path(spec).is_file():
        raise UsageError(f"unknown data {spec!r}: expected a built-in toy "
                         f"({', '.join(sorted(TOYS))}) or a path to a .npy file (N, D)")
    try:
        return Path(spec).stem, None, load_array(spec)
    except (FileNotFoundError, ValueError) as error:
        raise UsageError(str(error)) from error


def load_model(path: str | Path, ema: bool = True) -> tuple[NTM, dict[str, Any]]:
    """Rebuild the NTM saved at ``path`` from its config and load its (EMA) weights.

    Returns the model in eval mode and the checkpoint.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If the file is truncated, corrupt, or not a checkpoint of a config-built NTM.
    """
    state = load_checkpoint(path)
    meta = state.get("meta") if isinstance(state.get("meta"), dict) else {}
    if meta.get("model_class") != "NTM" or not isinstance(meta.get("model"), dict):
        raise ValueError(f"{str(path)!r} is a checkpoint of {meta.get('model_class', 'unknown')!r}"
                         ", not of an NTM with a saved config")
    try:
        model = NTM.from_config(meta["model"])
        weights = state["ema"] if ema and state.get("ema") is not None else state["model"]
        dtype = next((v.dtype for v in weights.values() if v.is_floating_point()), None)
        model.to(dtype).load_state_dict(weights)
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
        raise ValueError(f"cannot rebuild the model saved in {str(path)!r}: {error}") from error
    return model.eval(), state


def evaluate_model(
    model: NTM, heldout: Tensor, toy: Toy | None = None, particles: int = 64,
    samples: int = 10_000, seed: int = 0, condition: Tensor | None = None,
) -> tuple[dict[str, float], Tensor]:
    r"""Held-out IWAE NLL bound, energy distance, fraction on the support and sampling time.

    With a ``condition`` (one row per held-out point: context vectors or labels), the bound is
    that of :math:`-\log p(x \mid y)` and the samples are drawn given the held-out conditions
    in turn (so that they follow the data's distribution of conditions).

    Returns the metrics (``nll`` in nats per example, ``nll_per_dim``, ``energy_distance``,
    ``sample_seconds_per_10k``, and ``on_support`` when ``toy`` has a support) and the samples.
    """
    model.eval()
    g = torch.Generator().manual_seed(EVAL_SEED + 2 + seed)
    ref = next(model.parameters())
    x = heldout.to(ref.dtype)
    y = condition
    if y is not None and y.is_floating_point():
        y = y.to(ref.dtype)
    chunk = max(1, 16384 // particles)
    rows = x.split(chunk)
    conditions = [None] * len(rows) if y is None else y.split(chunk)
    with torch.no_grad():
        bound = torch.cat([model.iwae(c, yc, particles=particles, generator=g)
                           for c, yc in zip(rows, conditions, strict=True)])
    drawn_y = None if y is None else y[torch.arange(samples) % len(y)]
    begin = time.perf_counter()
    drawn = model.sample(samples, drawn_y, generator=g)
    seconds = time.perf_counter() - begin
    nll = -bound.mean().item()
    metrics = {"nll": nll, "nll_per_dim": nll / model.features, "particles": particles,
               "energy_distance": energy_distance(drawn, x), "eval_size": len(x),
               "sample_seconds_per_10k": seconds * 10_000 / samples}
    if toy is not None and toy.support is not None:
        metrics["on_support"] = fraction_on_support(drawn, toy.support)
    return metrics, drawn


def heldout(toy: Toy, size: int, seed: int, offset: int = 0) -> Tensor:
    """``size`` points of ``toy`` drawn from seed ``EVAL_SEED + offset + seed`` (offsets apart:
    independent draws)."""
    return toy.sample(size, generator=torch.Generator().manual_seed(EVAL_SEED + offset + seed))
