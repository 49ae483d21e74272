"""Plotting helpers. Matplotlib figures render as PNG in the static site and in Colab;
each helper returns the figure so a notebook can both show and save it."""
from __future__ import annotations

from typing import Sequence



import matplotlib.pyplot as plt
import numpy as np
import torch


def _np(x) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=float)


def heatmap(values, title: str = "", xlabel: str = "", ylabel: str = "", xticks: Sequence[str] | None = None,
            yticks: Sequence[str] | None = None, cmap: str = "RdBu_r", center: bool = True, annotate: bool = False,
            ax=None):
    """A 2-D heatmap (1-D input is shown as one row); diverging colours centred on 0 by default."""
    v = _np(values)
    if v.ndim == 1:
        v = v[None]
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(min(12, 1 + 0.5 * v.shape[1]), 1 + 0.4 * v.shape[0]))
    lim = np.abs(v).max() if center and v.size else None
    im = ax.imshow(v, cmap=cmap, vmin=-lim if lim else None, vmax=lim, aspect="auto")
    fig.colorbar(im, ax=ax)
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), xticks, rotation=45, ha="right")
    if yticks is not None:
        ax.set_yticks(range(len(yticks)), yticks)
    if annotate:
        for (i, j), x in np.ndenumerate(v):
            ax.text(j, i, f"{x:.2f}", ha="center", va="center", fontsize=7)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    fig.tight_layout()
    return fig


def bar(values, labels: Sequence[str], title: str = "", ylabel: str = "", errors=None, hline: float | None = None, ax=None):
    """Bars with optional error bars (e.g. CI half-widths) and a reference line (e.g. chance)."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(max(4, 0.8 * len(labels)), 3.2))
    ax.bar(range(len(labels)), _np(values), yerr=None if errors is None else _np(errors), capsize=4, color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, rotation=20 if len(labels) > 4 else 0)
    if hline is not None:
        ax.axhline(hline, color="grey", ls="--", lw=1)
    ax.set(title=title, ylabel=ylabel)
    fig.tight_layout()
    return fig


def lines(curves: dict[str, Sequence[float]], x=None, title: str = "", xlabel: str = "", ylabel: str = "",
          bands: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None, hline: float | None = None, ax=None):
    """Several named curves on one axis, with optional (low, high) bands, e.g. CIs over seeds."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    for name, y in curves.items():
        y = _np(y)
        xs = np.arange(len(y)) if x is None else _np(x)
        ax.plot(xs, y, label=name)
        if bands and name in bands:
            lo, hi = bands[name]
            ax.fill_between(xs, _np(lo), _np(hi), alpha=0.2)
    if hline is not None:
        ax.axhline(hline, color="grey", ls="--", lw=1)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.legend()
    fig.tight_layout()
    return fig
