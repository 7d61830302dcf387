r"""One figure of several generated samples: chosen modalities, prediction beside ground truth.

Reads the raw files ``fourm-lightning generate`` writes (``<id>.<modality>[_true].<ext>``) and draws
them with the built-in modalities' kinds (``fourm_lightning.quickstart.figures.overview_figure``)::

    python scripts/generation_overview.py runs/generate/rgb2all \\
        --modalities tok_depth tok_normal tok_semseg det caption --out docs/figures/rgb2all.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fourm_lightning.quickstart.figures import overview_figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--modalities", nargs="+", required=True)
    parser.add_argument("--input", default="rgb", help="the conditioning image drawn first")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    columns = [args.input] + [f"{m}{s}" for m in args.modalities for s in ("", "_true")]
    overview_figure(args.folder, columns, args.out, background=args.input)


if __name__ == "__main__":
    main()
