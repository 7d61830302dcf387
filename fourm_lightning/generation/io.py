"""Generation inputs and outputs: conditions -> state, state -> values, figures and files.

- ``condition_state``: images (files or arrays), texts or token-dataset samples -> the state
  ``generate`` starts from (clear errors for a wrong image size or a text that is too long);
- ``Detokenizer``: a final state -> one modality value per sample, through each domain's tokenizer
  (``Domain.detokenize``), in the data kinds' sample forms;
- ``render_sample`` / ``save_sample``: one grid figure per sample (every modality drawn by its
  kind's ``render``) and the raw outputs (each kind's own file format, plus the decoded texts).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fourm_lightning.generation.sampler import GenerationStep, State
from fourm_lightning.modalities import ModalitySpec, builtin_modalities, specs_by_name
from fourm_lightning.models.domains import PixelDomain, TextDomain
from fourm_lightning.models.fourm import FourM


class Detokenizer:
    """Loads each tokenizer once and turns domains back into modality values.

    Args:
        model: the 4M model (its domains name the tokenizers).
        specs: modality specs by name (the data kinds that render values); default: the
            built-in modalities.
    """

    def __init__(self, model: FourM, specs: Mapping[str, ModalitySpec] | None = None) -> None:
        self.model = model
        self.specs = dict(specs) if specs else specs_by_name(builtin_modalities())
        self._tokenizers: dict[str, Any] = {}
        self._texts: dict[str, Any] = {}

    def tokenizer(self, path: str) -> Any:
        """The tokenizer at ``path`` (``load_tokenizer``), loaded once."""
        from fourm_lightning.tokenizers.loading import load_tokenizer

        if path not in self._tokenizers:
            if not Path(path).is_absolute() and not Path(path).exists():
                raise FileNotFoundError(
                    f"no tokenizer at {path} (relative to {Path.cwd()}): a model checkpoint "
                    "names its tokenizers as its training config did, so run from the directory "
                    "training ran in, or decode with a save_pretrained export, which carries "
                    "its tokenizers"
                )
            self._tokenizers[path] = load_tokenizer(path)
        return self._tokenizers[path]

    def text_tokenizer(self, path: str) -> Any:
        """The ``TextTokenizer`` in folder ``path``, loaded once."""
        from fourm_lightning.tokenizers.text import TextTokenizer

        if path not in self._texts:
            self._texts[path] = TextTokenizer.load(path)
        return self._texts[path]

    def kind(self, source: str) -> Any:
        """The data kind of modality ``source``."""
        if source not in self.specs:
            raise ValueError(f"no modality spec for {source!r} (known: {sorted(self.specs)})")
        return self.specs[source].kind

    def values(self, state: State, names: Sequence[str] | None = None) -> dict[str, list[Any]]:
        """``{domain: [sample-form value per sample]}`` for ``names`` (default: all in state)."""
        names = [n for n in (names or state) if n in state]
        return {n: self.model.domains[n].detokenize(state[n], self) for n in names}


def load_image(path: str | Path, size: int) -> np.ndarray:
    """An image file -> uint8 (H, W, 3) of ``size`` x ``size``: centre crop, then resize."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((size, size))
        return np.asarray(image, dtype=np.uint8)


def condition_state(
    model: FourM,
    *,
    images: Sequence[np.ndarray] | None = None,
    texts: Mapping[str, Sequence[str | Sequence[int]]] | None = None,
    tokens: Mapping[str, Tensor] | None = None,
    text_tokenizer: Any = None,
) -> State:
    """The starting state of a generation from fully known conditions.

    Args:
        model: the 4M model.
        images: uint8 (H, W, 3) or (3, H, W) images for the model's pixel domain, at its size.
        texts: domain -> one text per sample (may hold sentinels to fill, e.g. "[S_1]"), or
            the token ids of each sample's sequence (as training reads them, ``[EOS]`` included).
        tokens: domain -> (B, ...) token ids of token domains.
        text_tokenizer: needed for ``texts``.

    Raises:
        ValueError: no condition, unknown domains, a wrong image size, a text too long, or
            conditions with different batch sizes.
    """
    state: State = {}
    if images is not None:
        pixels = [n for n, d in model.domains.items() if isinstance(d, PixelDomain)]
        if not pixels:
            raise ValueError("the model has no pixel input domain for images")
        domain = model.domains[pixels[0]]
        assert isinstance(domain, PixelDomain)
        array = np.stack([domain.normalize(image) for image in images])
        state[domain.name] = {
            "tensor": torch.from_numpy(array),
            "input_mask": torch.ones(len(images), domain.max_tokens, dtype=torch.bool),
            "target_mask": torch.zeros(len(images), domain.max_tokens, dtype=torch.bool),
        }
    for name, batch in (texts or {}).items():
        domain = model.domains.get(name)
        if not isinstance(domain, TextDomain):
            raise ValueError(f"{name!r} is not a text modality of the model")
        if text_tokenizer is None:
            raise ValueError("text conditions need the text tokenizer")
        packed = torch.stack(
            [
                domain.encode_text(text, text_tokenizer)
                if isinstance(text, str)
                else domain.pack(text)
                for text in batch
            ]
        )
        # [PAD] is id 0 and only pads: the input half's non-zero ids are the text.
        mask = torch.zeros_like(packed, dtype=torch.bool)
        mask[:, : domain.max_tokens] = packed[:, : domain.max_tokens] != 0
        state[name] = {
            "tensor": packed,
            "input_mask": mask,
            "target_mask": torch.zeros_like(mask),
        }
    for name, ids in (tokens or {}).items():
        if name not in model.domains:
            raise ValueError(f"unknown modality {name!r}; the model has {list(model.domains)}")
        flat = ids.reshape(ids.shape[0], -1).long()
        if flat.shape[1] != model.domains[name].max_tokens:
            raise ValueError(
                f"{name}: {flat.shape[1]} tokens per sample, the model expects "
                f"{model.domains[name].max_tokens}"
            )
        state[name] = {
            "tensor": flat,
            "input_mask": torch.ones_like(flat, dtype=torch.bool),
            "target_mask": torch.zeros_like(flat, dtype=torch.bool),
        }
    if not state:
        raise ValueError("generation needs at least one condition (images, texts or tokens)")
    sizes = {n: e["input_mask"].shape[0] for n, e in state.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"conditions have different batch sizes: {sizes}")
    return state


Panel = tuple[str, Any, Any]  # (title, sample-form value, kind)


def render_sample(
    rows: Sequence[Sequence[Panel | None]], backdrop: Panel | None = None, title: str = ""
) -> Any:
    """A grid figure: each panel's value drawn by its kind's ``render`` (matplotlib Figure).

    Args:
        rows: panels per row (``None`` leaves a cell empty), e.g. predictions over truths.
        backdrop: an image panel drawn under every kind that renders as an overlay (boxes).
        title: figure title.
    """
    from fourm_lightning.viz import new_figure

    cols = max(len(r) for r in rows)
    fig, axes = new_figure(len(rows), cols, (2.3 * cols, 2.5 * len(rows)))
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            panel = row[c] if c < len(row) else None
            if panel is None:
                ax.axis("off")
                continue
            name, value, kind = panel
            if kind.overlay and backdrop is not None:
                backdrop[2].render(backdrop[1], ax)
            kind.render(value, ax)
            ax.set_title(name, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_sample(
    out: Path,
    stem: str,
    rows: Sequence[Sequence[Panel | None]],
    backdrop: Panel | None = None,
    title: str = "",
) -> list[Path]:
    """Write ``<stem>.png`` (the grid) and ``<stem>.<title>.<ext>`` per panel (kind's format).

    Returns:
        The files written.
    """
    out.mkdir(parents=True, exist_ok=True)
    fig = render_sample(rows, backdrop, title)
    figure = out / f"{stem}.png"
    fig.savefig(figure, dpi=110)
    written = [figure]
    for name, value, kind in (p for row in rows for p in row if p is not None):
        path = out / f"{stem}.{name}.{kind.extension}"
        path.write_bytes(kind.encode(kind.to_stored(value)))
        written.append(path)
    return written


def write_json(path: Path, data: Any) -> None:
    """Write JSON with sorted keys (summaries of a generation run)."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


def read_schedule(
    path: str | os.PathLike[str], domains: Iterable[str] | None = None
) -> list[GenerationStep]:
    """The steps of a generation schedule file (``configs/generation/*.yaml``).

    Args:
        path: a YAML file with a ``schedule`` list of ``GenerationStep`` fields.
        domains: keep only the steps whose target is one of these (a model's domains); default:
            every step.

    Returns:
        The steps, in order.
    """
    import yaml

    steps = [GenerationStep(**step) for step in yaml.safe_load(Path(path).read_text())["schedule"]]
    if domains is None:
        return steps
    keep = set(domains)
    return [step for step in steps if step.target in keep]


__all__ = [
    "Detokenizer",
    "condition_state",
    "load_image",
    "read_schedule",
    "render_sample",
    "save_sample",
]
