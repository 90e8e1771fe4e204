r"""Built-in image data: scikit-learn's bundled 8x8 digits and random patches of its sample
photographs (nothing is downloaded).

Images are mapped to :math:`[-1, 1]` by :math:`x = 2 (q + u) / L - 1` with :math:`q` the
integer level, :math:`L` the number of levels and :math:`u \sim U[0, 1)` (``dequantize=True``) or
:math:`u = 1/2`. The log-determinant of that map per dimension is :math:`\log(2 / L)`
(``DIGITS_LOG_SCALE``, ``PATCH_LOG_SCALE``): pass it to :func:`ntmdist.metrics.bits_per_dim`.

References:
    | A note on the evaluation of generative models (Theis et al., 2016), arXiv 1511.01844
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Generator, Tensor

from ..extras import require
from .toys import _check_n, _randint

__all__ = ["DIGITS_LOG_SCALE", "PATCH_LOG_SCALE", "digits", "image_patches"]

DIGITS_LOG_SCALE = math.log(2 / 17)
PATCH_LOG_SCALE = math.log(2 / 256)


def _quantised_to_unit(
    q: Tensor, levels: int, dequantize: bool, generator: Generator | None, dtype: torch.dtype
) -> Tensor:
    u = torch.rand(q.shape, generator=generator, dtype=torch.float64) if dequantize else 0.5
    return (2 * (q.to(torch.float64) + u) / levels - 1).to(dtype)


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[Tensor, Tensor]:
    datasets = require("sklearn.datasets", "data", "ntmdist.data.digits")
    bunch = datasets.load_digits()
    return torch.as_tensor(bunch.images).round().long(), torch.as_tensor(bunch.target).long()


def digits(
    dequantize: bool = True, generator: Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    r"""scikit-learn's bundled 8x8 digits (1797 images, no download), scaled to :math:`(-1, 1)`.

    Pixels :math:`q \in \{0, \dots, 16\}` (17 levels) become :math:`x = 2 (q + u)/17 - 1` with
    :math:`u \sim U[0, 1)` (``dequantize=True``) or :math:`u = 1/2` (bin centres). A density on
    :math:`x` gives one on :math:`q + u` through the log-det per dimension ``DIGITS_LOG_SCALE``
    :math:`= \log(2/17)`, and the dequantised NLL bounds the discrete one (Theis et al., 2016,
    arXiv 1511.01844).

    Returns:
        ``x`` of shape ``(1797, 1, 8, 8)`` and the labels ``y`` ``(1797,)`` (int64, 0..9).

    Example:
        >>> x, y = digits(generator=torch.Generator().manual_seed(0))
        >>> x.shape, x.dtype, y.dtype, bool(x.abs().max() < 1)
        (torch.Size([1797, 1, 8, 8]), torch.float32, torch.int64, True)
    """
    q, y = _digits_arrays()
    return _quantised_to_unit(q[:, None], 17, dequantize, generator, dtype), y.clone()


@lru_cache(maxsize=1)
def _photos() -> Tensor:
    datasets = require("sklearn.datasets", "data", "ntmdist.data.image_patches")
    images = [torch.tensor(im).permute(2, 0, 1) for im in datasets.load_sample_images().images]
    return torch.stack(images)


def image_patches(
    size: int, n: int, generator: Generator | None = None, dequantize: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""Random ``(n, 3, size, size)`` patches of scikit-learn's two sample photographs.

    An image and a top-left corner are drawn uniformly; 8-bit values :math:`q` become
    :math:`x = 2 (q + u)/256 - 1 \in (-1, 1)` as in :func:`digits` (log-det per dimension
    ``PATCH_LOG_SCALE`` :math:`= \log(2/256)`).

    Example:
        >>> x = image_patches(8, 4, generator=torch.Generator().manual_seed(0))
        >>> x.shape, bool(x.abs().max() < 1)
        (torch.Size([4, 3, 8, 8]), True)
    """
    _check_n(n)
    photos = _photos()
    height, width = photos.shape[-2:]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= min(height, width):
        raise ValueError(f"size must be an integer in 1..{min(height, width)}, got {size!r}")
    image = _randint(n, photos.shape[0], generator)
    top = _randint(n, height - size + 1, generator)
    left = _randint(n, width - size + 1, generator)
    offset = torch.arange(size)
    rows = (top[:, None] + offset)[:, None, :, None]
    cols = (left[:, None] + offset)[:, None, None, :]
    patches = photos[image[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    return _quantised_to_unit(patches, 256, dequantize, generator, dtype)
