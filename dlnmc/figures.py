"""Figures: seaborn on the tidy tables, one theme, Agg backend, PNG files.

Every study draws through these helpers so that all figures share one look (the theme of
:func:`use_theme`, set here and nowhere else), are readable at paper size, and are saved the
same way (:func:`save`).  Figures read tables; they compute no statistics.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

__all__ = ["use_theme", "save", "band", "hyperbola", "colour_by_step", "legend_above", "PALETTE",
           "DPI"]

DPI = 150
PALETTE = "colorblind"


def use_theme() -> None:
    """Set the package's seaborn theme (paper context, white ticks, colour-blind palette)."""
    sns.set_theme(context="paper", style="ticks", palette=PALETTE, font_scale=1.3,
                  rc={"axes.grid": True, "grid.alpha": 0.3, "legend.frameon": False,
                      "savefig.bbox": "tight", "figure.dpi": 100})


def save(fig, directory, name) -> Path:
    """Save ``fig`` (a matplotlib Figure or seaborn grid) as ``directory/name.png``, close it,
    and return the path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.png"
    figure = getattr(fig, "figure", fig)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def band(ax, table, x, colour, label=None, lo="q10", mid="median", hi="q90"):
    """Draw a median line with a shaded quantile band from a table of summaries sorted by ``x``
    (columns ``x``, ``lo``, ``mid``, ``hi``), as produced by the studies' ``analyse``."""
    table = table.sort_values(x)
    ax.fill_between(table[x], table[lo], table[hi], color=colour, alpha=0.25, linewidth=0)
    ax.plot(table[x], table[mid], color=colour, label=label, linewidth=1.5)


def colour_by_step(ax, table, x, y, norm, cmap="viridis", step="step_median"):
    """Scatter the points ``(x, y)`` of a summary table coloured by a (log) step column;
    returns the mappable for a colour bar."""
    return ax.scatter(table[x], table[y], c=table[step], cmap=cmap, norm=norm, s=14, zorder=3,
                      edgecolors="none")


def hyperbola(ax, limit, **kwargs):
    """Draw both branches of ab = 1 inside the square |a|, |b| <= limit (Cohen, Menon &
    Veraszto 2023: the rank-1 solutions of the 2x2 diagonal task)."""
    a = np.geomspace(1.0 / limit, limit, 400)
    style = {"color": "0.3", "linewidth": 1.0, "linestyle": "--", "zorder": 1} | kwargs
    ax.plot(a, 1.0 / a, **style)
    ax.plot(-a, -1.0 / a, **style)


def legend_above(grid, ncol):
    """One legend above a seaborn grid holding the labelled artists of all its panels."""
    data = {}
    for ax in grid.axes.flat:
        handles, labels = ax.get_legend_handles_labels()
        for handle, label in zip(handles, labels):
            data.setdefault(label, handle)
    grid.figure.legend(list(data.values()), list(data), loc="lower center", ncol=ncol,
                       bbox_to_anchor=(0.5, 1.0))
