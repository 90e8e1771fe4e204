r"""Built-in data sets: 2D toys with exact samplers (and exact densities where tractable),
:mod:`ntmdist.data.toys`; the scikit-learn 8x8 digits and random patches of scikit-learn's
sample photographs, :mod:`ntmdist.data.images` (nothing is downloaded).

Example:
    >>> import torch
    >>> from ntmdist.data import toy
    >>> toy("checkerboard").sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
"""

from .images import DIGITS_LOG_SCALE, PATCH_LOG_SCALE, digits, image_patches
from .toys import (
    TOYS,
    Toy,
    checkerboard,
    checkerboard_log_prob,
    checkerboard_support,
    eight_gaussians,
    eight_gaussians_log_prob,
    pinwheel,
    pinwheel_log_prob,
    rings,
    rings_log_prob,
    spirals,
    toy,
    two_moons,
)

__all__ = [
    "DIGITS_LOG_SCALE", "PATCH_LOG_SCALE", "TOYS", "Toy", "checkerboard", "checkerboard_log_prob",
    "checkerboard_support", "digits", "eight_gaussians", "eight_gaussians_log_prob",
    "image_patches", "pinwheel", "pinwheel_log_prob", "rings", "rings_log_prob", "spirals", "toy",
    "two_moons",
]
