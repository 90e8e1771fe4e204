"""Trained models of ``benchmarks/digits.py`` saved under ``benchmarks/cache/digits/``
(gitignored), so that parts run in separate processes share them instead of training them again
(the NTM T=4 of ``main`` is the T=4 point of ``steps`` and the reference of ``predictors``).

A checkpoint holds the state dict and what the training measured (its wall-clock seconds, its
steps). Its file name carries a hash of the row's name, the training recipe (steps, batch, lr,
seed, shift, device, ...), the module's ``repr`` and its ``config()`` where it has one, so a
changed recipe or architecture trains anew. A library change that keeps all of these (a
different loss, say) is not seen: delete the folder after one. While one process trains a model
it holds a lock file (its process id); another process that needs the same model waits for it
rather than training it twice, and takes over a lock whose process has ended.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

__all__ = ["ModelCache"]

POLL_S = 10.0


class ModelCache:
    """Checkpoints in ``folder``; :meth:`get` loads or trains."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, label: str, model: nn.Module, recipe: dict) -> Path:
        config = model.config() if callable(getattr(model, "config", None)) else None
        material = json.dumps(dict(label=label, recipe=recipe, module=repr(model), config=config),
                              sort_keys=True, default=str)
        digest = hashlib.sha1(material.encode()).hexdigest()[:12]
        slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")
        return self.folder / f"{slug}-{digest}.pt"

    def get(self, label: str, model: nn.Module, recipe: dict,
            train: Callable[[nn.Module], tuple[nn.Module, dict]]) -> tuple[nn.Module, dict]:
        """``model`` with the weights of the checkpoint of ``(label, recipe)``, or what
        ``train(model)`` returns (the trained module and its measurements, e.g. ``train_s``),
        saved first; and the measurements."""
        path = self.path(label, model, recipe)
        self.folder.mkdir(parents=True, exist_ok=True)
        loaded = _load(path, model)
        if loaded is not None:
            return loaded
        with _lock(path.with_suffix(".lock"), label):
            loaded = _load(path, model)  # trained meanwhile by the process we waited for
            if loaded is not None:
                return loaded
            trained, meta = train(model)
            temporary = path.with_suffix(f".{os.getpid()}.tmp")
            torch.save(dict(state=trained.state_dict(), meta=meta), temporary)
            os.replace(temporary, path)
        return trained, meta


def _load(path: Path, model: nn.Module) -> tuple[nn.Module, dict] | None:
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(saved["state"])  # onto the module's device
    return model.eval().requires_grad_(False), saved["meta"]


def _alive(lock: Path) -> bool:
    try:
        text = lock.read_text().strip()
    except FileNotFoundError:
        return False
    if not text:  # being written, or left empty by a crash
        return time.time() - lock.stat().st_mtime < 60
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _lock(path: Path, label: str) -> Iterator[None]:
    """Hold ``path`` (created exclusively, holding this process id) for the ``with`` block."""
    told = False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if not _alive(path):
                path.unlink(missing_ok=True)
                continue
            if not told:
                print(f"waiting for another process to train {label} ({path})", flush=True)
                told = True
            time.sleep(POLL_S)
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
