"""Lightning callbacks the project's configs use.

``ModelCheckpoint``
    Lightning's, except that ``last.ckpt`` always holds the weights training ended with.
``MetricsToJson``
    The last logged validation/test metrics as ``metrics.json`` in the run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint


class ModelCheckpoint(_LightningModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is written again when training ends.

    Lightning (2.6) writes ``last.ckpt`` at the end of training only if it never wrote one
    before. A run stopped by ``max_time`` (every budgeted run here) or by ``should_stop`` between
    two ``every_n_train_steps`` saves therefore kept the weights of the previous save: the
    RGB tokenizer trained 2327 steps and its ``last.ckpt`` held step 2000. Same arguments as
    Lightning's.
    """

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save ``last.ckpt`` if steps were taken since the last save, then Lightning's hook."""
        # `_last_global_step_saved` is Lightning's own record of the step of the latest save.
        if self.save_last and trainer.global_step != self._last_global_step_saved:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


__all__ = ["ModelCheckpoint"]


class MetricsToJson(Callback):
    """Write the last logged metrics to ``<log_dir>/metrics.json`` when ``fit`` (or test) ends.

    What a benchmark suite reads back from a run; the same numbers are in TensorBoard.

    Args:
        prefixes: keep the metrics whose names start with one of these (``val/``, ``test/``).
        filename: file name inside the trainer's ``log_dir``.
    """

    def __init__(
        self, prefixes: tuple[str, ...] = ("val/", "test/"), filename: str = "metrics.json"
    ) -> None:
        self.prefixes = tuple(prefixes)
        self.filename = filename

    def _write(self, trainer: Trainer) -> None:
        if not trainer.is_global_zero or trainer.log_dir is None:
            return
        metrics = {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if name.startswith(self.prefixes)
        }
        record = {"global_step": int(trainer.global_step), "metrics": metrics}
        path = Path(trainer.log_dir) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, sort_keys=True))

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._write(trainer)
