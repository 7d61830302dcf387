"""One LightningCLI ``fit`` on a written config, in this process or as a worker process.

``python -m fourm_lightning.quickstart.fit CONFIG RESULT`` runs the fit and writes its outcome
(last checkpoint, final validation metrics, step reached) to the JSON file ``RESULT``: the
quickstart trains tokenizers side by side this way, each in its own process with its own share
of the CPU threads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def fit(config_path: Path) -> dict[str, Any]:
    """Run ``fit`` on a config.

    Returns:
        ``{"checkpoint": last checkpoint path, "metrics": {validation metric: value},
        "steps": global step reached}``.

    Raises:
        RuntimeError: training finished without writing a last checkpoint.
    """
    from fourm_lightning.cli import lightning_cli

    # LightningCLI warns when sys.argv holds other arguments (the quickstart's own).
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        cli = lightning_cli(["fit", f"--config={config_path}"])
    finally:
        sys.argv = argv
    trainer = cli.trainer
    checkpoint = trainer.checkpoint_callback.last_model_path if trainer.checkpoint_callback else ""
    if not checkpoint or not Path(checkpoint).is_file():
        raise RuntimeError(f"{config_path}: training finished without a last checkpoint")
    metrics = {
        k: round(float(v), 4) for k, v in sorted(trainer.callback_metrics.items()) if "val" in k
    }
    return {"checkpoint": checkpoint, "metrics": metrics, "steps": int(trainer.global_step)}


def main(args: list[str]) -> None:
    """Worker entry: ``CONFIG RESULT``; the result file is written only after a finished fit."""
    if len(args) != 2:
        raise SystemExit("usage: python -m fourm_lightning.quickstart.fit CONFIG RESULT_JSON")
    config, result = Path(args[0]), Path(args[1])
    outcome = fit(config)
    tmp = result.with_suffix(".tmp")
    tmp.write_text(json.dumps(outcome, indent=2) + "\n")
    tmp.replace(result)


if __name__ == "__main__":
    main(sys.argv[1:])
