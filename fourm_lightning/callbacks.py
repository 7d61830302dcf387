"""Lightning callbacks the project's configs use.

``ModelCheckpoint``
    Lightning's, except that ``last.ckpt`` always holds the weights training ended with.
``MetricsToJson``
    The last logged validation/test metrics as ``metrics.json`` in the run folder.
``StepsFromTime``
    Sets the step budget, and the LR schedule's length with it, from the speed of the first
    steps, so that a run limited by ``max_time`` still finishes its schedule.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import Callback, Timer
from lightning.pytorch.callbacks import ModelCheckpoint as _LightningModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info


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

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._write(trainer)

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._write(trainer)


class StepsFromTime(Callback):
    """Fit the step budget, and the LR schedule with it, to the time limit ``trainer.max_time``.

    A run limited by time alone stops wherever the clock runs out, usually in the middle of the
    cosine with the learning rate still high (the quickstart's 4M, planned for 800 steps in 14.5
    minutes, stopped at step 782). This callback times the steps from ``start`` on and, once
    ``window`` steps are timed, sets the run's total to the steps that fit in the remaining
    time less ``margin`` of the whole budget; the schedule then ends when the time does, on a
    slower or a faster machine alike.

    It plans again every ``replan`` of the budget, from the average speed since ``start``
    (validation passes and checkpoints included), until 80% of the budget is spent: the first
    steps can run faster than the average (a nano 4M measured 1.57 step/s over steps 10-50 and
    averaged 1.39), and a total planned from them alone ran past the limit. A new total changes
    the cosine's remaining length, a small step in the LR.

    The module's LR schedules must be ``LambdaLR`` with callables that have a ``total_steps``
    attribute (``tokenizers.lit_base.WarmupCosine``, ``pretraining.CosineSchedule``). Every rank
    takes rank 0's total. The total is in the checkpoint; a resumed run keeps it and times anew.

    Args:
        start: global step at which timing starts (the first steps are slower).
        window: steps timed before the first plan.
        margin: share of the whole time budget never planned (the last validation, the last
            checkpoint, speed changes after the last plan).
        replan: plan again after this share of the budget has passed since the last plan
            (0: plan once).
        max_steps: the most steps to plan (default: no limit besides the time).
    """

    #: No plans after this share of the budget: late plans would react to noise.
    LAST_PLAN = 0.8

    def __init__(
        self,
        start: int = 10,
        window: int = 40,
        margin: float = 0.03,
        replan: float = 0.1,
        max_steps: int | None = None,
    ) -> None:
        if start < 1 or window < 1 or not 0.0 <= margin < 1.0 or not 0.0 <= replan < 1.0:
            raise ValueError(
                "need start, window >= 1, 0 <= margin < 1 and 0 <= replan < 1; got "
                f"{start}, {window}, {margin}, {replan}"
            )
        self.start = start
        self.window = window
        self.margin = margin
        self.replan = replan
        self.max_steps = max_steps
        #: The total planned last (None until the first plan).
        self.total_steps: int | None = None
        self._t0: tuple[int, float] | None = None  # (step, time) where timing began
        self._last_plan = 0.0

    @staticmethod
    def _timer(trainer: Trainer) -> Timer:
        timers = [cb for cb in trainer.callbacks if isinstance(cb, Timer)]  # type: ignore[attr-defined]
        if not timers or timers[0].time_remaining() is None:
            raise ValueError("StepsFromTime needs a time limit: set trainer.max_time")
        return timers[0]

    @staticmethod
    def _schedules(trainer: Trainer) -> list[Any]:
        found = [
            fn
            for config in trainer.lr_scheduler_configs
            for fn in getattr(config.scheduler, "lr_lambdas", [])
            if hasattr(fn, "total_steps")
        ]
        if not found:
            raise ValueError(
                "StepsFromTime found no LR schedule to fit: it needs LambdaLR schedules whose "
                "callables have a total_steps attribute (WarmupCosine, CosineSchedule)"
            )
        return found

    def _apply(self, trainer: Trainer, total: int) -> None:
        self.total_steps = total
        trainer.fit_loop.epoch_loop.max_steps = total
        for schedule in self._schedules(trainer):
            schedule.total_steps = total
        # The progress bar sized itself at the epoch start; show the new end (tqdm's bar only).
        bar = getattr(trainer.progress_bar_callback, "_train_progress_bar", None)
        if bar is not None and hasattr(bar, "total") and bar.total:
            bar.total = total
            bar.refresh()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Check the setup; a resumed run re-applies the total it planned before."""
        self._timer(trainer)
        self._schedules(trainer)
        if self.total_steps is not None:
            self._apply(trainer, self.total_steps)

    def _plan(self, trainer: Trainer, step: int, now: float, budget: float) -> None:
        assert self._t0 is not None
        rate = (step - self._t0[0]) / (now - self._t0[1])
        remaining = float(self._timer(trainer).time_remaining() or 0.0)
        total = step + int(rate * max(0.0, remaining - self.margin * budget))
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        total = int(trainer.strategy.broadcast(max(total, step + 1), src=0))
        self._last_plan = now
        if total != self.total_steps:
            rank_zero_info(
                f"StepsFromTime: at step {step}, {rate:.2f} steps/s and {remaining:.0f} s left: "
                f"{total} steps in all"
            )
            self._apply(trainer, total)

    def on_train_batch_end(  # noqa: D102
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step, now = trainer.global_step, time.monotonic()
        if self._t0 is None:
            if step >= self.start:
                self._t0 = (step, now)
            return
        if step - self._t0[0] < self.window:
            return
        timer = self._timer(trainer)
        elapsed = timer.time_elapsed()
        budget = elapsed + float(timer.time_remaining() or 0.0)
        due = (
            self.replan > 0
            and now - self._last_plan >= self.replan * budget
            and elapsed < self.LAST_PLAN * budget
        )
        if self.total_steps is None or due:
            self._plan(trainer, step, now, budget)

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"total_steps": self.total_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        self.total_steps = state_dict.get("total_steps")


__all__ = ["MetricsToJson", "ModelCheckpoint", "StepsFromTime"]
