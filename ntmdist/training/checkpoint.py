r"""Training checkpoints: atomic writes, safe loads, and weights for inference.

A checkpoint is a plain dictionary of tensors, numbers, strings and containers of them (random
generator states are stored as ``uint8`` tensors), so it loads with
``torch.load(weights_only=True)``: loading never runs code from the file. It is written to a
temporary file in the same folder, flushed to disk, then renamed over the target with
:func:`os.replace`, so a crash mid-write never leaves a partial file under the checkpoint's name.

Keys written by :func:`ntmdist.training.fit`: ``format``, ``version``, ``step``, ``model``,
``ema``, ``aux`` (the auxiliary term's state) and ``validation`` (early stopping's: the best
value, step and weights), each ``None`` when the run has none, ``optimizer``, ``scheduler``,
``rng`` (``{"data": (world, n), "loss": (world, n)}`` generator states, one row per rank),
``history``, ``elapsed``, ``horizon`` (the run's ``steps`` and ``warmup``) and ``meta``
(ntmdist and torch versions, ``model.config()`` and ``model.schedule.config()`` where the model
has them).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .. import __version__

__all__ = [
    "FORMAT", "gather_states", "load_checkpoint", "load_weights", "metadata", "plain",
    "same_config", "save_checkpoint",
]

FORMAT = "ntmdist.checkpoint"
VERSION = 1


def plain(obj: Any) -> Any:
    """``obj`` as plain containers (dict, list) of tensors, numbers, strings and ``None``;
    anything else becomes its ``repr`` so that the checkpoint stays loadable safely."""
    if obj is None or isinstance(obj, torch.Tensor):
        return obj
    for kind in (bool, int, float, str):  # exact types: subclasses (numpy scalars) are unsafe
        if isinstance(obj, kind):
            return kind(obj)
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, torch.Size)):
        return [plain(v) for v in obj]
    return repr(obj)


def metadata(model: nn.Module, world_size: int = 1) -> dict[str, Any]:
    """What a checkpoint records about its run: ntmdist and torch versions, world size, the
    model's class, ``model.config()`` and ``model.schedule.config()`` where they exist."""
    meta: dict[str, Any] = {"ntmdist": __version__, "torch": torch.__version__,
                            "world_size": world_size, "model_class": type(model).__qualname__}
    if callable(getattr(model, "config", None)):
        meta["model"] = model.config()
    if callable(getattr(getattr(model, "schedule", None), "config", None)):
        meta["schedule"] = model.schedule.config()
    return plain(meta)


def same_config(saved: Any, model: nn.Module) -> bool:
    """Whether ``saved`` (a checkpoint's ``meta["model"]``) is the configuration of ``model``,
    compared in the form the current version writes: ``saved`` is rebuilt with
    ``type(model).from_config`` (torch's global random state untouched) and described again, so
    that a config written by an earlier version (without keys added since, with old names)
    matches the same model built today. A config that cannot be rebuilt matches nothing.

    Example:
        >>> import ntmdist as nd
        >>> model = nd.NTM((2,), predictor_options={"width": 8, "depth": 1})
        >>> old = plain(model.config())
        >>> old["label_dropout"] = old.pop("condition_dropout")  # as earlier versions wrote it
        >>> del old["context"], old["condition_transporter"]
        >>> old == plain(model.config()), same_config(old, model)
        (False, True)
    """
    if not isinstance(saved, dict) or not callable(getattr(model, "config", None)):
        return False
    try:
        with torch.random.fork_rng(devices=[]):
            rebuilt = type(model).from_config(saved)
    except (AttributeError, KeyError, TypeError, ValueError):
        return False
    return plain(rebuilt.config()) == plain(model.config())


def gather_states(state: Tensor, world_size: int, device: torch.device) -> Tensor:
    """The generator states ``(n,)`` of all ranks as ``(world_size, n)`` on the CPU (under
    ``torch.distributed`` a collective: every rank must call it; ``device`` is where the
    process group can communicate)."""
    if world_size == 1:
        return state[None]
    local = state.to(device)
    out = [torch.empty_like(local) for _ in range(world_size)]
    dist.all_gather(out, local)
    return torch.stack(out).cpu()


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the format marker) to ``path`` atomically.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "run.pt")
        >>> save_checkpoint(path, {"step": 3})
        >>> load_checkpoint(path)["step"]
        3
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({**state, "format": FORMAT, "version": VERSION}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If the file is truncated, corrupt, or not an ntmdist checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise ValueError(
            f"cannot read checkpoint {str(path)!r} (truncated, corrupt or not a safe torch "
            f"file): {error}"
        ) from error
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not an ntmdist checkpoint (no {FORMAT!r} marker)")
    if not isinstance(state.get("version"), int) or state["version"] > VERSION:
        raise ValueError(
            f"checkpoint {str(path)!r} has format version {state.get('version')!r}; this "
            f"ntmdist reads versions <= {VERSION}"
        )
    return state


def load_weights(model: nn.Module, path: str | os.PathLike, ema: bool = True) -> nn.Module:
    """Load the EMA weights (``ema=True``, when the checkpoint has them) or the raw weights
    from the checkpoint at ``path`` into ``model``, and return ``model``."""
    state = load_checkpoint(path)
    weights = state["ema"] if ema and state.get("ema") is not None else state["model"]
    model.load_state_dict(weights)
    return model
