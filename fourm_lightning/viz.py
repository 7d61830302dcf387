"""Figures of samples: one panel per modality, drawn by each modality's kind."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fourm_lightning.modalities import ImageKind, ModalitySpec, RGBImage

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure


def new_figure(rows: int, columns: int, figsize: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    """A figure with a (rows, columns) array of axes, outside pyplot's state.

    Library figures never go through pyplot: that would pick (or, with ``matplotlib.use``,
    switch) a global backend, which breaks a notebook's inline display and leaks figures that
    nobody closes. A bare ``Figure`` saves to any file format, and Jupyter still displays it.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, columns, squeeze=False)


def plot_sample(
    sample: Mapping[str, Any],
    specs: Mapping[str, ModalitySpec],
    names: Sequence[str] | None = None,
    columns: int = 6,
    panel_size: float = 2.0,
    title: str | None = None,
) -> Figure:
    """Draw every modality of one sample (sample form, see ``modalities.kinds``) on a grid.

    Spatial non-image kinds (boxes) are drawn over the sample's RGB image so they can be checked
    against it.

    Args:
        sample: modality name -> sample-form value (e.g. ``rgb`` a (3, H, W) uint8 tensor).
        specs: modality name -> spec (only the names present in ``sample`` are drawn).
        names: which modalities to draw, in order; default: every spec found in ``sample``.
        columns: panels per row.
        panel_size: inches per panel.
        title: optional figure title.

    Returns:
        The matplotlib figure (the caller saves or shows it).
    """
    names = [n for n in (names or list(specs)) if n in sample and n in specs]
    if not names:
        raise ValueError(f"nothing to draw: sample has {sorted(sample)}, specs {sorted(specs)}")
    background = next((n for n in names if isinstance(specs[n].kind, RGBImage)), None)
    columns = min(columns, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = new_figure(rows, columns, (panel_size * columns, panel_size * rows))
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names, strict=False):
        kind = specs[name].kind
        if kind.spatial and not isinstance(kind, ImageKind) and background is not None:
            specs[background].kind.render(sample[background], ax)
        kind.render(sample[name], ax)
        ax.set_title(name, fontsize=8)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
