r"""Figures for the command line and the examples: sample panels, trajectory strips, image
grids (the ``plots`` extra: matplotlib).

Everything is drawn with matplotlib's object API (:class:`~matplotlib.figure.Figure` with a
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`), never ``pyplot``: no global backend
is selected and no figure is kept alive in pyplot's registry. Each function draws into a new
figure, or into ``figure=`` (a ``Figure`` or ``SubFigure``) to compose several; it returns the
figure it drew into, and writes a PNG when given ``path``.

Trajectories follow ntmdist's convention: ``traj[:, k]`` is level :math:`k` at time
:math:`t_k`, level 0 the cleanest and level :math:`T` pure noise; strips read from level
:math:`T` (left) to level 0 (right), the order in which the sampler visits them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..extras import require

if TYPE_CHECKING:
    from matplotlib.figure import Figure, SubFigure

matplotlib = require("matplotlib", "plots", "ntmdist's figures")
_agg = require("matplotlib.backends.backend_agg", "plots", "ntmdist's figures")
_figures = require("matplotlib.figure", "plots", "ntmdist's figures")

__all__ = ["image_grid", "overview", "scatter_panels", "trajectory_strip"]

Array = Tensor | np.ndarray
Limits = tuple[tuple[float, float], tuple[float, float]]


def _numpy(x: Array) -> np.ndarray:
    return torch.as_tensor(x).detach().cpu().to(torch.float64).numpy()


def _points(name: str, x: Array) -> np.ndarray:
    """Finite rows of ``x`` ``(n, D)`` as float64 numpy."""
    a = _numpy(x)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"{name}: expected points of shape (n, D) with n >= 1, got {a.shape}")
    return a[np.isfinite(a).all(axis=1)]


def _limits(a: np.ndarray, pad: float = 0.1) -> Limits:
    """Robust limits of the first two coordinates (0.2% and 99.8% quantiles, padded)."""
    lo, hi = np.quantile(a[:, :2], [0.002, 0.998], axis=0) if len(a) else ([-1, -1], [1, 1])
    span = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - pad * span, hi + pad * span
    if a.shape[1] == 1:
        return (float(lo[0]), float(hi[0])), (0.0, 1.0)
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def _figure(figure: Figure | SubFigure | None, width: float, height: float) -> Figure | SubFigure:
    if figure is not None:
        return figure
    fig = _figures.Figure(figsize=(width, height), layout="constrained")
    _agg.FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure | SubFigure, path: str | os.PathLike | None, dpi: int = 110) -> None:
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.figure.savefig(path, dpi=dpi)


def scatter_panels(
    panels: Mapping[str, Array], path: str | os.PathLike | None = None, *,
    limits: Limits | None = None, bins: int | None = None,
    figure: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Side-by-side 2D histograms of point sets ``(n, D)``, all on the same axes limits.

    The first two coordinates are shown (a 1D histogram when ``D = 1``). The limits default to
    the extent of the first panel (usually the data), so that models are judged on its frame.

    Arguments:
        panels: Titles mapped to points ``(n, D)``.
        path: Where to write the PNG (nothing is written without it).
        limits: ``((x_lo, x_hi), (y_lo, y_hi))``.
        bins: Bins per axis (default: from the smallest number of points, 20 to 150).
        figure: A figure or subfigure to draw into.

    Example:
        >>> fig = scatter_panels({"a": torch.randn(500, 2), "b": torch.randn(500, 2) + 1})
        >>> [ax.get_title() for ax in fig.axes]
        ['a', 'b']
    """
    if not panels:
        raise ValueError("scatter_panels needs at least one panel")
    arrays = {name: _points(name, x) for name, x in panels.items()}
    if len({a.shape[1] for a in arrays.values()}) != 1:
        raise ValueError("all panels must have the same number of coordinates")
    first = next(iter(arrays.values()))
    limits = _limits(first) if limits is None else limits
    fig = _figure(figure, 3.0 * len(arrays), 3.3)
    axes = fig.subplots(1, len(arrays), squeeze=False)[0]
    fewest = min(len(a) for a in arrays.values())
    n_bins = bins or int(np.clip(np.sqrt(fewest / 5), 20, 150))
    for ax, (name, a) in zip(axes, arrays.items(), strict=True):
        if a.shape[1] == 1:
            ax.hist(a[:, 0], bins=n_bins, range=limits[0], density=True, color="0.3")
            ax.set_xlim(*limits[0])
        else:
            ax.hist2d(a[:, 0], a[:, 1], bins=n_bins, range=limits, cmap="magma")
            ax.set_aspect("equal")
            ax.set_yticks([])
        ax.set_xticks([])
        ax.set_title(name)
    _save(fig, path)
    return fig


def trajectory_strip(
    traj: Array, grid: Array, path: str | os.PathLike | None = None, *, few: int = 6,
    limits: Limits | None = None, figure: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Trajectories level by level, from level :math:`T` (noise, left) to level 0 (right).

    For vectors ``traj`` is ``(n, T+1, D)`` with ``D >= 2``: one panel per level shows all
    ``n`` points at that level in grey and the paths of the first ``few`` trajectories so far
    (from level :math:`T` down to that level) in colour. For images ``(n, T+1, C, H, W)`` the
    first ``few`` trajectories are the rows of one image grid, the levels its columns.

    Example:
        >>> import ntmdist as nd
        >>> sched = nd.Schedule(steps=4)
        >>> fig = trajectory_strip(sched.sample(torch.randn(200, 2)), sched.grid)
        >>> [ax.get_title() for ax in fig.axes][:2]
        ['level 4, t=1', 'level 3, t=0.75']
    """
    t = _numpy(grid).reshape(-1)
    a = _numpy(traj)
    if a.ndim < 3 or a.shape[1] != len(t):
        raise ValueError(f"traj must have shape (n, T+1, *event) with T+1 = {len(t)} levels, "
                         f"got {a.shape}")
    levels = range(len(t) - 1, -1, -1)
    if a.ndim >= 4:
        fig = _figure(figure, 1.2 * len(t), 1.2 * min(few, len(a)) + 0.5)
        image_grid(a[:few, ::-1].reshape(-1, *a.shape[2:]), nrow=len(t), figure=fig)
        fig.axes[-1].set_title(f"level {len(t) - 1} (t=1) ... level 0 (t={t[0]:.3g})")
        _save(fig, path)
        return fig
    if a.shape[2] < 2:
        raise ValueError("trajectory_strip draws vectors with at least 2 coordinates")
    limits = _limits(a.reshape(-1, a.shape[2])) if limits is None else limits
    fig = _figure(figure, 2.4 * len(t), 2.7)
    axes = fig.subplots(1, len(t), squeeze=False)[0]
    colours = matplotlib.colormaps["tab10"]
    for ax, k in zip(axes, levels, strict=True):
        ax.scatter(a[:, k, 0], a[:, k, 1], s=1, c="0.75", linewidths=0, rasterized=True)
        for i in range(min(few, len(a))):
            path_k = a[i, k:, :2][::-1]  # level T down to level k
            ax.plot(path_k[:, 0], path_k[:, 1], "-", lw=0.8, color=colours(i % 10))
            ax.plot(*path_k[-1], "o", ms=4, color=colours(i % 10))
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"level {k}, t={t[k]:.3g}")
    _save(fig, path)
    return fig


def image_grid(
    images: Array, path: str | os.PathLike | None = None, *, nrow: int | None = None,
    value_range: tuple[float, float] = (-1.0, 1.0), figure: Figure | SubFigure | None = None,
) -> Figure | SubFigure:
    """Images ``(n, C, H, W)`` or ``(n, H, W)`` (``C`` = 1 or 3) tiled ``nrow`` per row.

    Values are clipped to ``value_range`` (ntmdist's images live in :math:`[-1, 1]`).

    Example:
        >>> fig = image_grid(torch.rand(6, 1, 8, 8) * 2 - 1, nrow=3)
        >>> len(fig.axes)
        1
    """
    a = _numpy(images)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] not in (1, 3) or len(a) == 0:
        raise ValueError(f"images must have shape (n, C, H, W) with C in (1, 3), got {a.shape}")
    n, c, h, w = a.shape
    nrow = nrow or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / nrow))
    lo, hi = value_range
    a = np.clip((a - lo) / (hi - lo), 0, 1).transpose(0, 2, 3, 1)
    canvas = np.ones((rows * (h + 1) + 1, nrow * (w + 1) + 1, c))
    for i, image in enumerate(a):
        r, q = divmod(i, nrow)
        canvas[1 + r * (h + 1) : (r + 1) * (h + 1), 1 + q * (w + 1) : (q + 1) * (w + 1)] = image
    fig = _figure(figure, 0.6 * nrow + 0.4, 0.6 * rows + 0.6)
    ax = fig.subplots()
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None,
              vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    _save(fig, path)
    return fig


def overview(
    panels: Mapping[str, Array], traj: Array, grid: Array, path: str | os.PathLike | None = None,
    *, title: str | None = None, few: int = 6,
) -> Figure:
    """:func:`scatter_panels` of ``panels`` above a :func:`trajectory_strip` of ``traj``.

    Example:
        >>> import ntmdist as nd
        >>> sched = nd.Schedule(steps=2)
        >>> fig = overview({"data": torch.randn(100, 2)}, sched.sample(torch.randn(50, 2)),
        ...                sched.grid)
        >>> len(fig.axes)  # one panel and three levels
        4
    """
    levels = _numpy(grid).size
    fig = _figure(None, max(3.0 * len(panels), 2.4 * levels), 6.6)
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.2, 1.0])
    scatter_panels(panels, figure=top)
    trajectory_strip(traj, grid, few=few, figure=bottom)
    bottom.suptitle("sampled trajectories, level T (noise) to level 0", fontsize="medium")
    if title is not None:
        fig.suptitle(title)
    _save(fig, path)
    return fig
