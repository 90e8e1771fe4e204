"""Data and classifier of ``benchmarks/digits.py``: the fixed split of scikit-learn's 8x8 digits
and the small CNN whose features judge samples.

Data: ``ntmdist.data.digits`` split once (seed 0, independent of ``--seed``) into 1497 training
and 300 held-out images. Training batches are dequantised afresh (bin centre plus uniform noise
of one bin, ``2/17``); the held-out images are dequantised once with a fixed seed.

Classifier: conv 3x3 (1->32), ReLU, conv 3x3 (32->64), ReLU, max-pool 2, conv 3x3 (64->64),
ReLU, max-pool 2, linear (256->64), ReLU [the 64 features], linear (64->10); trained with Adam
(lr 1e-3, 1500 steps of batch 64, fresh dequantisation, seed 0, one thread, CPU) on the training
split only; 99.3% accuracy on the 300 held-out images. Cached in
``benchmarks/cache/digits_classifier.pt``, reused when present and made by the same recipe,
retrained otherwise (about 30 s; bitwise reproducible).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntmdist.data import digits

__all__ = ["BIN", "CACHE", "CLASSES", "CLASSIFIER_RECIPE", "EVENT", "HELD_OUT", "SPLIT_SEED",
           "TRANSPORTER", "WIDTH", "Classifier", "Split", "load_classifier", "split",
           "train_classifier"]

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache" / "digits_classifier.pt"
CLASSES, HELD_OUT, SPLIT_SEED, BIN = 10, 300, 0, 2 / 17
EVENT = (1, 8, 8)
TRANSPORTER = dict(width=64, depth=2)
WIDTH = 32
CLASSIFIER_RECIPE = dict(version=1, split_seed=SPLIT_SEED, held_out=HELD_OUT, steps=1500,
                         batch_size=64, lr=1e-3, seed=0)


@dataclass
class Split:
    """Training images as bin centres (dequantised per batch by :meth:`draw`) and the held-out
    images, dequantised once."""

    centres: Tensor
    labels: Tensor
    held_x: Tensor
    held_y: Tensor

    def dequantise(self, x: Tensor, generator: torch.Generator) -> Tensor:
        return x + BIN * (torch.rand(x.shape, generator=generator) - 0.5)

    def draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(self.centres), (n,), generator=generator)
        return self.dequantise(self.centres[idx], generator), self.labels[idx]

    def per_class(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` dequantised training images of each class, class by class."""
        idx = torch.cat([(self.labels == c).nonzero().flatten()[:n] for c in range(CLASSES)])
        return self.dequantise(self.centres[idx], generator), self.labels[idx]


def split() -> Split:
    g = torch.Generator().manual_seed(SPLIT_SEED)
    centres, y = digits(dequantize=False)
    held, _ = digits(generator=g)
    order = torch.randperm(len(y), generator=g)
    train, test = order[HELD_OUT:], order[:HELD_OUT]
    return Split(centres[train], y[train], held[test], y[test])


class Classifier(nn.Module):
    """The CNN of the module docstring; :meth:`features` is its penultimate layer (64)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 64), nn.ReLU(),
        )
        self.head = nn.Linear(64, CLASSES)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.clamp(-1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_classifier(data: Split) -> Classifier:
    """Deterministic: fixed seeds, one thread, CPU."""
    recipe, threads = CLASSIFIER_RECIPE, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(recipe["seed"])
            net = Classifier()
        opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
        g = torch.Generator().manual_seed(recipe["seed"])
        for _ in range(recipe["steps"]):
            x, y = data.draw(recipe["batch_size"], g)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def load_classifier(data: Split, path: Path = CACHE) -> tuple[Classifier, float, bool]:
    """The cached classifier when its recipe matches, else a new one (saved); its held-out
    accuracy; whether it was trained now."""
    net = Classifier()
    if path.exists():
        state = torch.load(path, weights_only=True)
        if state.get("recipe") == CLASSIFIER_RECIPE:
            net.load_state_dict(state["model"])
            return net.eval(), state["accuracy"], False
    net = train_classifier(data)
    with torch.no_grad():
        accuracy = (net(data.held_x).argmax(-1) == data.held_y).double().mean().item()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "recipe": CLASSIFIER_RECIPE, "accuracy": accuracy},
               path)
    return net.eval(), accuracy, True
