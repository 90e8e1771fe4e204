"""Resume and random state of the fit loop.

All randomness of :func:`ntmdist.training.fit` comes from two CPU generators per rank, one for
batches and one passed to the loss (:class:`Generators`), seeded from the run's seed, the rank
and the stream; their states are checkpointed with every stateful part of the run (model, EMA
copy, optimiser, schedule, auxiliary term, early stopping: :func:`snapshot`, :func:`restore`),
so that a resumed run is bitwise the run that was not interrupted. The global RNG of torch is
never touched. A run resumed with another length or warm-up warns (:func:`check_horizon`).

Example:
    >>> g = Generators(seed=0, rank=0)
    >>> rng = g.state(world_size=1, device=torch.device("cpu"))
    >>> a = torch.rand(2, generator=g.data)
    >>> g.load(rng, world_size=1, start=0)
    >>> torch.equal(torch.rand(2, generator=g.data), a)
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import Tensor

from .checkpoint import gather_states
from .optim import lr_factor

__all__ = ["Generators", "Stateful", "check_horizon", "rank_seed", "restore", "snapshot"]


class Stateful(Protocol):
    """A part of a run with a state in checkpoints (modules, optimisers, schedulers)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


def rank_seed(seed: int, rank: int, stream: int) -> int:
    """The seed of generator ``stream`` (0: batches, 1: the loss) of ``rank``."""
    return (seed + 1_000_003 * (2 * rank + stream)) % 2**63


class Generators:
    """The loop's generators of one rank: ``data`` draws the batches, ``loss`` is passed to
    the loss."""

    def __init__(self, seed: int, rank: int) -> None:
        self.seed, self.rank = seed, rank
        self.data = torch.Generator().manual_seed(rank_seed(seed, rank, 0))
        self.loss = torch.Generator().manual_seed(rank_seed(seed, rank, 1))

    def state(self, world_size: int, device: torch.device) -> dict[str, Tensor]:
        """Both states of every rank, ``(world_size, n)`` each (a collective under
        ``torch.distributed``: every rank calls it)."""
        return {"data": gather_states(self.data.get_state(), world_size, device),
                "loss": gather_states(self.loss.get_state(), world_size, device)}

    def load(self, rng: Mapping[str, Tensor], world_size: int, start: int) -> None:
        """Restore this rank's states from :meth:`state` of a checkpoint written at step
        ``start``; when another number of ranks wrote it, warn and reseed."""
        if rng["data"].shape[0] == world_size:
            self.data.set_state(rng["data"][self.rank].clone())  # a view with an offset crashes
            self.loss.set_state(rng["loss"][self.rank].clone())
            return
        warnings.warn(f"checkpoint was written by {rng['data'].shape[0]} ranks, resuming on "
                      f"{world_size}: generators reseeded, the run will not match", stacklevel=3)
        self.data.manual_seed(rank_seed(self.seed + start, self.rank, 0))
        self.loss.manual_seed(rank_seed(self.seed + start, self.rank, 1))


def snapshot(parts: Mapping[str, Stateful | None]) -> dict[str, Any]:
    """``{name: part.state_dict()}``, ``None`` for an absent part."""
    return {name: None if part is None else part.state_dict() for name, part in parts.items()}


def restore(state: Mapping[str, Any], parts: Mapping[str, Stateful | None]) -> None:
    """Load each present part from ``state[name]`` where the checkpoint holds one."""
    for name, part in parts.items():
        if part is not None and state.get(name) is not None:
            part.load_state_dict(state[name])


def check_horizon(saved: dict | None, now: dict, step: int) -> None:
    """Warn when a run resumes with another length or warm-up (``{"steps", "warmup"}``) than
    the one that wrote its checkpoint at ``step``."""
    if saved is None or saved == now:
        return
    before = lr_factor(step, saved["steps"], saved["warmup"])
    after = lr_factor(step, now["steps"], now["warmup"])
    warnings.warn(
        f"the checkpoint was written by a run of {saved['steps']} steps (warm-up "
        f"{saved['warmup']}), resuming for {now['steps']} (warm-up {now['warmup']}): from step "
        f"{step} the learning rate follows this run's schedule ({before:.3g} -> {after:.3g} of "
        "the peak), so the run matches no uninterrupted run", stacklevel=3)
