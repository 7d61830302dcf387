r"""One figure of several generated samples: chosen modalities, prediction beside ground truth.

Reads the raw files ``fourm-lightning generate`` writes (``<id>.<modality>[_true].<ext>``) and draws
them with the built-in modalities' kinds::

    python scripts/generation_overview.py runs/generate/rgb2all \\
        --modalities tok_depth tok_normal tok_semseg det caption --out docs/figures/rgb2all.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fourm_lightning.modalities import builtin_modalities, specs_by_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--modalities", nargs="+", required=True)
    parser.add_argument("--input", default="rgb", help="the conditioning image drawn first")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs = specs_by_name(builtin_modalities())
    samples = json.loads((args.folder / "generate.json").read_text())["samples"]

    def kind_of(name: str):  # tok_depth -> the depth kind
        return specs[name.removeprefix("tok_")].kind

    def load(sample: str, name: str):
        kind = kind_of(name.removesuffix("_true"))
        path = args.folder / f"{sample}.{name}.{kind.extension}"
        return kind, kind.to_tensor(kind.decode(path.read_bytes()))

    columns = [args.input] + [f"{m}{s}" for m in args.modalities for s in ("", "_true")]
    fig, axes = plt.subplots(
        len(samples), len(columns), figsize=(1.6 * len(columns), 1.7 * len(samples)), squeeze=False
    )
    for r, sample in enumerate(samples):
        image_kind, image = load(sample, args.input)
        for c, name in enumerate(columns):
            ax = axes[r, c]
            kind, value = load(sample, name)
            if kind.overlay:
                image_kind.render(image, ax)
            kind.render(value, ax)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name.removeprefix("tok_").replace("_true", " (true)"), fontsize=7)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)


if __name__ == "__main__":
    main()
