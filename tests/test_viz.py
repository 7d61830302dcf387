"""The package's figures leave matplotlib's global state alone (backend, pyplot's figures)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A fresh interpreter: the test process has long since picked its backend.
SCRIPT = textwrap.dedent(
    """
    import sys
    import matplotlib
    matplotlib.use("pdf")  # the user's choice, which the package must keep
    import matplotlib.pyplot as plt
    import torch
    from fourm_lightning.generation.io import save_sample
    from fourm_lightning.modalities.builtin import builtin_modalities
    from fourm_lightning.viz import plot_sample

    specs = {s.name: s for s in builtin_modalities()}
    rgb = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)
    depth = torch.rand(1, 16, 16) * 10
    fig = plot_sample({"rgb": rgb, "depth": depth}, specs, ["rgb", "depth"])
    fig.savefig(sys.argv[1] + "/sample.png")
    rows = [[("rgb", rgb, specs["rgb"].kind), ("depth", depth, specs["depth"].kind)]]
    written = save_sample(__import__("pathlib").Path(sys.argv[1]), "s0", rows)
    print(matplotlib.get_backend(), len(plt.get_fignums()), len(written))
    """
)


def test_figures_keep_the_backend_and_leave_no_pyplot_figures(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, check=True
    )
    backend, open_figures, written = out.stdout.split()
    assert backend == "pdf"
    assert int(open_figures) == 0
    assert int(written) == 3  # the grid + one file per panel
    assert (tmp_path / "sample.png").stat().st_size > 1000
    assert (tmp_path / "s0.png").stat().st_size > 1000
