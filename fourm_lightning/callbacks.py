"""Lightning callbacks the project's configs use.

``ModelCheckpoint``
    Lightning's, except that ``last.ckpt`` always holds the weights training ended with.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule, Trainer
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
