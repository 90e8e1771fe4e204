r"""Evaluation metrics: energy distance, fraction on a support, likelihood units, and the sample
quality measures of image models in a feature space (Frechet distance, kernel distance, precision
and recall).

Every metric returns Python ``float`` values (or, for the unit conversions, the type it was
given) and computes in float64. Pairwise quantities are computed in blocks of rows, so memory is
:math:`O(\text{chunk} \cdot m)`, never :math:`O(nm)`.
"""

from .features import frechet_distance, kid, precision_recall, sample_quality
from .samples import energy_distance, fraction_on_support
from .units import bits_per_dim, nats_per_dim

__all__ = [
    "bits_per_dim",
    "energy_distance",
    "fraction_on_support",
    "frechet_distance",
    "kid",
    "nats_per_dim",
    "precision_recall",
    "sample_quality",
]
