"""Overview figures of generation runs: one row per sample, chosen modalities as columns."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fourm_lightning.modalities import builtin_modalities, specs_by_name


def _kind(name: str) -> Any:
    """The built-in kind drawing a generated file (``tok_depth_true`` -> depth's kind)."""
    specs = specs_by_name(builtin_modalities())
    modality = name.removesuffix("_true").removeprefix("tok_")
    if modality not in specs:
        raise ValueError(f"no built-in modality {modality!r} for column {name!r}")
    return specs[modality].kind


def load_generated(folder: Path, sample: str, name: str) -> tuple[Any, Any]:
    """Read ``<folder>/<sample>.<name>.<ext>`` as written by ``fourm-lightning generate``.

    Returns:
        (kind, value in sample form), e.g. depth as a (1, H, W) float tensor.
    """
    kind = _kind(name)
    path = folder / f"{sample}.{name}.{kind.extension}"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {name!r} output for sample {sample!r}")
    return kind, kind.to_tensor(kind.decode(path.read_bytes()))


def overview_figure(
    folder: str | Path,
    columns: Sequence[str],
    out: str | Path,
    caption: str | None = None,
    background: str = "rgb",
    panel: float = 1.6,
    limit: int | None = None,
) -> Path:
    """Draw the samples of one ``generate`` output folder as a grid and save it.

    Args:
        folder: a ``fourm-lightning generate`` output folder (with ``generate.json``).
        columns: generated files to show, e.g. ``["rgb", "tok_depth", "tok_depth_true"]``
            (``_true``: the validation sample's ground truth through its tokenizer).
        out: the PNG to write.
        caption: a text output (e.g. ``caption``) written above each row instead of a panel.
        background: the image under overlay kinds (boxes), when the sample has one.
        panel: inches per panel.
        limit: draw only the first ``limit`` samples.

    Returns:
        ``out``.
    """
    from fourm_lightning.viz import new_figure

    folder = Path(folder)
    samples = json.loads((folder / "generate.json").read_text())["samples"][:limit]
    height = panel * (1.35 if caption else 1.1)
    size = (panel * len(columns), height * len(samples))
    fig, axes = new_figure(len(samples), len(columns), size)
    for r, sample in enumerate(samples):
        under = None
        if (folder / f"{sample}.{background}.png").is_file():
            under = load_generated(folder, sample, background)
        for c, name in enumerate(columns):
            ax = axes[r, c]
            kind, value = load_generated(folder, sample, name)
            if kind.overlay and under is not None:
                under[0].render(under[1], ax)
            kind.render(value, ax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name.removeprefix("tok_").replace("_true", " (true)"), fontsize=7)
            if caption and c == 0:
                # Under the row, left-aligned: it runs on under the other (label-free) panels
                # and never meets the column titles.
                text = (folder / f"{sample}.{caption}.txt").read_text().strip()
                wrapped = "\n".join(textwrap.wrap(text, 20 * len(columns))[:2])
                ax.set_xlabel(wrapped, fontsize=6, loc="left")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


__all__ = ["load_generated", "overview_figure"]
