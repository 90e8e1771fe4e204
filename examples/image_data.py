"""Image data sets of ``examples/images.py``: scikit-learn's digits, patches of its sample
photographs, a folder of equally sized 8-bit images or a ``.npy`` array (see that script's
docstring), kept as integer levels and dequantised afresh at every draw,
``x = 2 (q + u) / L - 1`` with ``u ~ U[0, 1)``; :attr:`Images.log_scale` is the log-determinant
per dimension of that map, so bits/dim are reported on the pixel scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ntmdist.data import digits, image_patches

__all__ = ["Images", "load_images", "read_array", "read_folder", "sampler", "split"]

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
EVAL_SEED = 2**40  # held-out split and evaluation draws: apart from the fit loop's generators

Batch = Tensor | tuple[Tensor, Tensor]


@dataclass
class Images:
    """Images ``(N, C, H, W)``: integer levels ``0..levels-1`` (``uint8``), or floats in
    ``[-1, 1]`` when ``levels`` is ``None``; optional labels ``(N,)`` and class names."""

    name: str
    values: Tensor
    labels: Tensor | None = None
    levels: int | None = None
    class_names: list[str] | None = None

    @property
    def classes(self) -> int | None:
        return None if self.labels is None else int(self.labels.max()) + 1

    @property
    def log_scale(self) -> float:
        """Log-determinant per dimension of the map from pixel levels to ``[-1, 1]``."""
        return 0.0 if self.levels is None else math.log(2 / self.levels)

    def scaled(self, index: Tensor, generator: torch.Generator) -> Tensor:
        """Rows ``index`` in ``[-1, 1]`` as float32, dequantised with ``generator``."""
        q = self.values[index]
        if self.levels is None:
            return q.float()
        u = torch.rand(q.shape, generator=generator, dtype=torch.float64)
        return (2 * (q.double() + u) / self.levels - 1).float()

    def subset(self, index: Tensor) -> Images:
        labels = None if self.labels is None else self.labels[index]
        return Images(self.name, self.values[index], labels, self.levels, self.class_names)


def _levels(x: Tensor, levels: int) -> Tensor:
    """Integer levels of bin-centred data ``x = 2 (q + 1/2) / levels - 1``, as ``uint8``."""
    return ((x.double() + 1) * levels / 2 - 0.5).round().to(torch.uint8)


def read_folder(root: Path) -> Images:
    """Every image under ``root`` (labels from first-level sub-folders, see the docstring)."""
    from PIL import Image

    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if len(files) < 2:
        raise ValueError(f"{str(root)!r}: need at least 2 images ({', '.join(SUFFIXES)})")
    read = []
    for path in files:
        with Image.open(path) as image:
            if image.mode.startswith(("I", "F")):
                raise ValueError(f"{str(path)!r}: mode {image.mode}; only 8-bit images are read")
            grey = image.mode in ("1", "L", "LA")
            read.append((path, grey, image.convert("L" if grey else "RGB")))
    mode = "L" if all(grey for _, grey, _ in read) else "RGB"
    stack, first = [], None
    for path, _, image in read:
        a = np.asarray(image.convert(mode), dtype=np.uint8)
        a = a[None] if mode == "L" else a.transpose(2, 0, 1)
        first = first or (path, a.shape[1:])
        if a.shape[1:] != first[1]:
            raise ValueError(
                f"{str(path)!r} is {a.shape[2]}x{a.shape[1]} pixels but {str(first[0])!r} is "
                f"{first[1][1]}x{first[1][0]}: all images must have the same size (resize first)")
        stack.append(torch.from_numpy(a.copy()))
    parts = [p.relative_to(root).parts for p in files]
    names = sorted({q[0] for q in parts})
    labels = None
    if all(len(q) >= 2 for q in parts) and len(names) >= 2:
        labels = torch.tensor([names.index(q[0]) for q in parts])
    return Images(root.name, torch.stack(stack), labels, 256,
                  names if labels is not None else None)


def read_array(path: Path, labels: Path | None = None) -> Images:
    """A ``.npy`` array ``(N, C, H, W)`` of ``uint8`` or of floats in ``[-1, 1]``."""
    a = np.load(path, allow_pickle=False)
    if a.ndim != 4 or 0 in a.shape:
        raise ValueError(f"{str(path)!r}: expected an array (N, C, H, W), got shape {a.shape}")
    if a.dtype == np.uint8:
        images = Images(path.stem, torch.from_numpy(a.copy()), levels=256)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all() or np.abs(a).max() > 1:
            raise ValueError(f"{str(path)!r}: float images must be finite and in [-1, 1] "
                             f"(got [{a.min():.3g}, {a.max():.3g}]); or pass uint8 pixels")
        images = Images(path.stem, torch.from_numpy(a.astype(np.float32)))
    else:
        raise ValueError(f"{str(path)!r}: dtype {a.dtype}; expected uint8 pixels or floats in "
                         "[-1, 1]")
    if labels is not None:
        y = np.load(labels, allow_pickle=False)
        if y.shape != (len(a),) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise ValueError(f"{str(labels)!r}: expected integer labels >= 0 of shape "
                             f"({len(a)},), got {y.dtype} {y.shape}")
        images.labels = torch.from_numpy(y.astype(np.int64))
    return images


def load_images(spec: str, labels: Path | None, patch_count: int, seed: int) -> Images:
    """The data set named by ``--data`` (see the module docstring)."""
    g = torch.Generator().manual_seed(EVAL_SEED + seed)
    if spec == "digits":
        x, y = digits(dequantize=False)
        return Images("digits", _levels(x, 17), y, 17, [str(k) for k in range(10)])
    if spec.startswith("patches:"):
        size = spec.split(":", 1)[1]
        if not size.isdigit():
            raise ValueError(f"--data patches:SIZE needs an integer SIZE, got {spec!r}")
        size = int(size)
        x = image_patches(size, patch_count, generator=g, dequantize=False)
        return Images(f"patches{size}", _levels(x, 256), levels=256)
    path = Path(spec)
    if path.is_dir():
        return read_folder(path)
    if path.suffix == ".npy" and path.is_file():
        return read_array(path, labels)
    raise ValueError(f"unknown data {spec!r}: expected digits, patches:SIZE, a folder of "
                     "images or a .npy file (N, C, H, W)")


def split(images: Images, size: int, seed: int) -> tuple[Images, Images]:
    """A random split: (training images, ``min(size, N // 5)`` held-out images, at least 1)."""
    order = torch.randperm(len(images.values), generator=torch.Generator().manual_seed(seed))
    hold = max(1, min(size, len(order) // 5))
    return images.subset(order[hold:]), images.subset(order[:hold])


def sampler(images: Images) -> Callable[[int, torch.Generator], Batch]:
    """``draw(n, generator)`` for :func:`fit`: uniform rows, freshly dequantised."""
    n = len(images.values)

    def draw(batch: int, generator: torch.Generator) -> Batch:
        index = torch.randint(n, (batch,), generator=generator)
        x = images.scaled(index, generator)
        return x if images.labels is None else (x, images.labels[index])

    return draw
