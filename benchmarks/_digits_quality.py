r"""Sample quality of ``benchmarks/digits.py``, in the classifier's 64 features.

Per draw of samples: the Frechet distance, KID with its standard error over 10 disjoint
subsets, and precision and recall with k = 3 (``ntmdist.metrics``) against the 1497
training images (the field's reference: FID statistics come from the training set; dequantised
once, seed 1) and against the 300 held-out images (a model that memorises its training images
shows it there), and the classifier's accuracy on the samples' labels. Rows keep every draw's
numbers; tables show their mean and standard deviation over draws.

KID is computed on the features divided by their root mean square over the training images
(about 11.9), so that the cubic kernel :math:`(x \cdot y / d + 1)^3` works on :math:`x \cdot
y / d` of order one (its default :math:`\gamma = 1/d` assumes features of unit scale); on the
raw ReLU features :math:`x \cdot y / d` is about 140 and the kernel's values of about
:math:`10^6` drown the estimate in noise (real held-out against real training images:
-12683 ± 7908 raw, 0.007 ± 0.020 scaled). The Frechet distance is on the raw features
(comparable with earlier results); precision and recall do not depend on the scale.

Reference rows (the metrics' floors): the held-out images as samples (against the training
images), the training images as samples (against the held-out images), and a held-out-sized
random subset of the training images against the other 1197 (against the training images) and
against the held-out images, one subset per draw. The first two are fixed sets: one draw.
"""

from __future__ import annotations

import math
import statistics
import zlib

import torch
from _digits_data import HELD_OUT, Classifier, Split
from torch import Tensor

from ntmdist.metrics import frechet_distance, kid, precision_recall

__all__ = ["METRICS", "REFERENCES", "Quality", "collect", "draw_seed", "stat"]

METRICS = ("frechet", "kid", "kid_se", "precision", "recall")
REFERENCES = {"train": "training images", "held": "held-out images"}
REFERENCE_SEED = 1  # the dequantisation of the training images used as the reference


def draw_seed(*key: object) -> int:
    """A seed made from ``key`` (the run's seed, a row's name, guidance, draw): rows draw the
    same samples whichever parts run, in whatever order."""
    return zlib.crc32("|".join(map(str, key)).encode())


class Quality:
    """The protocol of the module docstring: :meth:`judge` scores one draw of samples."""

    def __init__(self, net: Classifier, data: Split, k: int = 3, subsets: int = 10) -> None:
        self.net, self.k, self.subsets = net, k, subsets
        self.held = self.features(data.held_x)
        self.train = self.features(data.dequantise(
            data.centres, torch.Generator().manual_seed(REFERENCE_SEED)))
        self.scale = self.train.double().square().mean().sqrt().item()

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return torch.cat([self.net.features(c) for c in x.detach().cpu().float().split(500)])

    @torch.no_grad()
    def accuracy(self, feats: Tensor, y: Tensor) -> float:
        return (self.net.head(feats).argmax(-1) == y.cpu()).double().mean().item()

    def against(self, reference: Tensor, feats: Tensor, seed: int) -> dict[str, float]:
        """The metrics of ``feats`` against ``reference``; KID of both divided by
        :attr:`scale`."""
        g = torch.Generator().manual_seed(seed)
        mean, error = kid(reference / self.scale, feats / self.scale, self.subsets, generator=g)
        precision, recall = precision_recall(reference, feats, self.k)
        return dict(frechet=frechet_distance(reference, feats), kid=mean, kid_se=error,
                    precision=precision, recall=recall)

    def judge(self, x: Tensor, y: Tensor, seed: int) -> dict:
        """``{"train": metrics, "held": metrics, "accuracy": a}`` of samples ``x`` drawn for
        labels ``y``; ``seed`` fixes the KID subsets."""
        feats = self.features(x)
        return dict(train=self.against(self.train, feats, seed),
                    held=self.against(self.held, feats, seed), accuracy=self.accuracy(feats, y))

    def references(self, draws: int, seed: int) -> list[dict]:
        """The reference rows of the module docstring, each metric a list over draws."""
        n = len(self.train)
        subset = []
        for d in range(draws):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + d))
            part, rest = self.train[order[:HELD_OUT]], self.train[order[HELD_OUT:]]
            subset.append(dict(train=self.against(rest, part, seed + d),
                               held=self.against(self.held, part, seed + d)))
        rows = [
            dict(model=f"held-out images ({HELD_OUT})",
                 train=[self.against(self.train, self.held, seed)]),
            dict(model=f"training subset ({HELD_OUT}; vs the other {n - HELD_OUT} training "
                       "images)", **{ref: [s[ref] for s in subset] for ref in REFERENCES}),
            dict(model=f"training images ({n})", held=[self.against(self.held, self.train, seed)]),
        ]
        return [{k: collect(v) if isinstance(v, list) else v for k, v in row.items()}
                for row in rows]


def collect(draws: list[dict[str, float]]) -> dict[str, list[float]]:
    """Per-draw metric dicts as one list per metric."""
    return {m: [d[m] for d in draws] for m in METRICS}


def stat(row: dict, ref: str, metric: str) -> tuple[float, float] | None:
    """Mean and standard deviation over draws (``nan`` for one draw) of ``metric`` against
    ``ref`` (``"train"``, ``"held"``; ``ref=None`` for ``"accuracy"``), or ``None``. Rows of
    results written before draws (one number each) hold the Frechet distance to the held-out
    images as ``frechet``."""
    if ref is None:
        values = row.get(metric)
    elif ref in row:
        values = row[ref].get(metric)
    else:
        values = row.get("frechet") if (ref, metric) == ("held", "frechet") else None
    if values is None:
        return None
    values = values if isinstance(values, list) else [values]
    sd = statistics.stdev(values) if len(values) > 1 else math.nan
    return statistics.fmean(values), sd
