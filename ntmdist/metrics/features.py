r"""Sample quality of image models in the feature space of a classifier: the Frechet distance,
the kernel distance (KID) and improved precision and recall, against one reference set.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .pairs import block_rows, feature_pair, pair_sum

__all__ = ["frechet_distance", "kid", "precision_recall", "sample_quality"]


def frechet_distance(feat_a: Tensor | np.ndarray, feat_b: Tensor | np.ndarray) -> float:
    r"""Frechet distance between Gaussians fitted to the features ``(n, d)`` and ``(m, d)``.

    .. math:: \|\mu_a - \mu_b\|^2 + \mathrm{tr}\left(\Sigma_a + \Sigma_b
              - 2 (\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2})^{1/2}\right)

    with sample means and unbiased sample covariances, in float64. The trace term equals
    :math:`\mathrm{tr} (\Sigma_a \Sigma_b)^{1/2}` (the FID form); the symmetric form used here
    (the eigen-decomposition square root of :math:`\Sigma_a`, then the eigenvalues of a
    symmetric positive semi-definite matrix) avoids complex round-off and accepts singular
    covariances, and the result is symmetric in ``a, b``.

    References:
        | GANs Trained by a Two Time-Scale Update Rule (Heusel et al., 2017), arXiv 1706.08500
        | The Frechet distance between multivariate normal distributions (Dowson & Landau, 1982)

    Example:
        >>> a = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
        >>> round(frechet_distance(a, a + 1.0), 6)  # same covariance: |mean shift|^2
        2.0
    """
    a, b = (f.cpu().numpy() for f in feature_pair("feat_a feat_b", feat_a, feat_b, 2))
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    eig_a, vec_a = np.linalg.eigh(cov_a)  # symmetric PSD square root: no complex round-off
    root_a = (vec_a * np.sqrt(np.clip(eig_a, 0, None))) @ vec_a.T
    middle = root_a @ cov_b @ root_a
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    cross = np.sqrt(np.clip(eig, 0, None)).sum()
    shift = a.mean(axis=0) - b.mean(axis=0)
    return float(shift @ shift + np.trace(cov_a) + np.trace(cov_b) - 2 * cross)


def _blocks(n: int, subsets: int, size: int | None, generator: torch.Generator | None
            ) -> list[Tensor]:
    """``subsets`` disjoint random blocks of ``size`` (default ``n // subsets``) of 0..n-1."""
    size = n // subsets if size is None else size
    if size < 2 or subsets * size > n:
        raise ValueError(f"kid needs subsets * subset_size <= n with subset_size >= 2 for each "
                         f"sample set, got {subsets} subsets of {size} out of n = {n}")
    return list(torch.randperm(n, generator=generator)[: subsets * size].view(subsets, size))


def kid(
    real: Tensor | np.ndarray, fake: Tensor | np.ndarray, subsets: int = 10,
    subset_size: int | None = None, degree: int = 3, gamma: float | None = None,
    coef: float = 1.0, generator: torch.Generator | None = None, chunk: int | None = None,
) -> tuple[float, float]:
    r"""Kernel Inception Distance: the unbiased squared MMD of a polynomial kernel, with its
    standard error.

    Features ``real`` ``(n, d)`` and ``fake`` ``(m, d)``, kernel
    :math:`k(x, y) = (\gamma\, x \cdot y + c)^{\text{degree}}` (:math:`\gamma = 1/d`,
    :math:`c = 1`, degree 3 by default). On a subset of :math:`a` real points :math:`x` and
    :math:`b` fake points :math:`y`,

    .. math:: \widehat{\mathrm{MMD}}^2_u = \frac{1}{a(a-1)} \sum_{i \neq j} k(x_i, x_j)
              + \frac{1}{b(b-1)} \sum_{i \neq j} k(y_i, y_j)
              - \frac{2}{ab} \sum_{i, j} k(x_i, y_j)

    is unbiased: zero in expectation when both sets come from one law (it may be negative).
    The result is the mean of ``subsets`` such estimates and its standard error, the standard
    deviation over subsets (``ddof = 1``) divided by :math:`\sqrt{\text{subsets}}`; ``nan``
    with one subset. The subsets are **disjoint** blocks of a random permutation of each set
    (``subset_size`` points of each, by default ``n // subsets`` real and ``m // subsets``
    fake points, which uses all the data), so the estimates are independent and the standard
    error is that of the mean; overlapping subsets, as in the reference code, give a spread
    that shrinks with their number while the error of the mean does not.

    References:
        | Demystifying MMD GANs (Binkowski et al., 2018), arXiv 1801.01401
        | A Kernel Two-Sample Test (Gretton et al., 2012), JMLR 13

    Example:
        >>> x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[1.0], [2.0]])
        >>> kid(x, y, subsets=1)  # (1 + 1) / 2 + (27 + 27) / 2 - 2 (1 + 1 + 8 + 27) / 4
        (9.5, nan)
    """
    real, fake = feature_pair("real fake", real, fake, 2)
    for name, value, least in (("subsets", subsets, 1), ("degree", degree, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    gamma = 1 / real.shape[1] if gamma is None else gamma
    if not gamma > 0:
        raise ValueError(f"gamma must be positive, got {gamma!r}")

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (gamma * a @ b.T + coef) ** degree

    def mean(a: Tensor, b: Tensor, same: bool) -> float:
        pairs = len(a) * (len(a) - 1) if same else len(a) * len(b)
        return pair_sum(a, b, kernel, block_rows(chunk, len(b)), same) / pairs

    estimates = []
    with torch.no_grad():
        blocks = zip(_blocks(len(real), subsets, subset_size, generator),
                     _blocks(len(fake), subsets, subset_size, generator), strict=True)
        for i, j in blocks:
            x, y = real[i.to(real.device)], fake[j.to(fake.device)]
            estimates.append(mean(x, x, True) + mean(y, y, True) - 2 * mean(x, y, False))
    values = np.array(estimates)
    error = values.std(ddof=1) / math.sqrt(subsets) if subsets > 1 else math.nan
    return float(values.mean()), float(error)


def _radii(a: Tensor, k: int, rows: int) -> Tensor:
    """Distance of each point of ``a`` to its ``k``-th nearest other point of ``a``."""
    # the point itself is the nearest (distance 0), so the k-th other is the (k+1)-th smallest
    return torch.cat([torch.cdist(a[i : i + rows], a).kthvalue(k + 1, dim=1).values
                      for i in range(0, len(a), rows)])


def _inside(points: Tensor, centres: Tensor, radii: Tensor, rows: int) -> float:
    """Fraction of ``points`` in the union of the balls ``(centres, radii)``."""
    hits = sum(int((torch.cdist(points[i : i + rows], centres) <= radii).any(1).sum())
               for i in range(0, len(points), rows))
    return hits / len(points)


def precision_recall(
    real: Tensor | np.ndarray, fake: Tensor | np.ndarray, k: int = 3, chunk: int | None = None
) -> tuple[float, float]:
    r"""Improved precision and recall of features ``fake`` ``(m, d)`` against ``real``
    ``(n, d)``.

    Each set :math:`\Phi` estimates its manifold by the union of balls around its points
    reaching their ``k``-th nearest neighbour in :math:`\Phi` (the point itself excluded),

    .. math:: \mathcal{M}(\Phi) = \bigcup_{\phi \in \Phi}
              \{z : \|z - \phi\| \leq \|\phi - \mathrm{NN}_k(\phi, \Phi)\|\},

    and :math:`\text{precision} = |\{\phi_g \in \mathcal{M}(\Phi_r)\}| / m` (fidelity: fake
    samples that look real), :math:`\text{recall} = |\{\phi_r \in \mathcal{M}(\Phi_g)\}| / n`
    (diversity: real samples the model covers). So ``precision_recall(a, b)`` is
    ``precision_recall(b, a)`` reversed. Euclidean distances in float64, in blocks of
    ``chunk`` rows.

    References:
        | Improved Precision and Recall Metric for Assessing Generative Models
          (Kynkaanniemi et al., 2019), arXiv 1904.06991

    Example:
        >>> real = torch.tensor([[0.0], [1.0], [2.0]])
        >>> precision_recall(real, torch.tensor([[0.5], [9.0]]), k=1)  # radii 1, 1, 1 and 8.5, 8.5
        (0.5, 1.0)
    """
    real, fake = feature_pair("real fake", real, fake, 1)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < min(len(real), len(fake)):
        raise ValueError(f"k must be an integer in [1, min(n, m) - 1] = [1, "
                         f"{min(len(real), len(fake)) - 1}], got {k!r}")
    rows = block_rows(chunk, max(len(real), len(fake)))
    with torch.no_grad():
        precision = _inside(fake, real, _radii(real, k, rows), rows)
        recall = _inside(real, fake, _radii(fake, k, rows), rows)
    return precision, recall


def sample_quality(
    real: Tensor | np.ndarray, fake: Tensor | np.ndarray, k: int = 3, subsets: int = 10,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Frechet distance, KID (``kid`` and ``kid_se``), ``precision`` and ``recall`` of the
    features ``fake`` ``(m, d)`` against one reference set ``real`` ``(n, d)``.

    Call it once with the training set's features (the field's protocol: the reference
    statistics come from the training data) and once with held-out features (memorising the
    training set shows there).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> real, fake = torch.randn(200, 3, generator=g), torch.randn(300, 3, generator=g)
        >>> sorted(sample_quality(real, fake, generator=g))
        ['frechet', 'kid', 'kid_se', 'precision', 'recall']
    """
    mean, error = kid(real, fake, subsets=subsets, generator=generator)
    precision, recall = precision_recall(real, fake, k)
    return {"frechet": frechet_distance(real, fake), "kid": mean, "kid_se": error,
            "precision": precision, "recall": recall}
