"""The project's callbacks: ModelCheckpoint keeps the final weights in last.ckpt;
StepsFromTime ends the LR schedule inside the time limit."""

import time

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fourm_lightning.callbacks import ModelCheckpoint, StepsFromTime
from fourm_lightning.datamodules.multimodal import MultimodalDataModule
from fourm_lightning.pretraining import CosineSchedule
from fourm_lightning.tokenizers.lit_mlp_vq import VectorVQTokenizer


def test_last_checkpoint_holds_the_final_step_when_stopped_between_saves(tiny_dataset, tmp_path):
    module = VectorVQTokenizer.from_config(
        {
            "modality": "camera",
            "quantizer": {
                "class_path": "fourm_lightning.tokenizers.quantizers.FSQQuantizer",
                "init_args": {"levels": [5, 5, 3]},
            },
            "num_tokens": 2,
            "hidden_dim": 16,
            "warmup_steps": 1,
        }
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=2)
    # max_steps=3 stops one step after the periodic save at step 2, as max_time does mid-interval.
    trainer = L.Trainer(
        max_steps=3,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint],
    )
    data = MultimodalDataModule(str(tiny_dataset), ["camera"], batch_size=4, num_workers=0)
    trainer.fit(module, data)

    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3
    saved = last["state_dict"]
    for name, value in module.state_dict().items():
        assert torch.equal(saved[name], value), name


class _Regression(L.LightningModule):
    """A linear model with the project's warmup + cosine schedule (min ratio 0.1)."""

    def __init__(self, total_steps: int, slow_from: int | None = None) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.total_steps = total_steps
        self.slow_from = slow_from

    def training_step(self, batch, batch_idx):
        if self.slow_from is not None and self.global_step >= self.slow_from:
            time.sleep(0.01)  # steps get slower after the first plan
        x, y = batch
        return nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        schedule = CosineSchedule(warmup_steps=5, total_steps=self.total_steps, min_ratio=0.1)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
                "interval": "step",
            },
        }


def _fit(module, callback, max_time, max_epochs=None):
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    trainer = L.Trainer(
        max_time=max_time,
        max_steps=-1,
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=[callback],
    )
    trainer.fit(module, DataLoader(data, batch_size=8))
    return trainer


def test_steps_from_time_ends_the_schedule_before_the_time_limit():
    # Planned for 10**6 steps, limited to 3 s: without the callback the run would stop at
    # the time limit with the LR still at its peak.
    module = _Regression(total_steps=10**6)
    callback = StepsFromTime(start=5, window=20, margin=0.1)
    trainer = _fit(module, callback, max_time={"seconds": 3}, max_epochs=10**6)
    assert callback.total_steps is not None and 25 < callback.total_steps < 10**6
    # It stopped on the fitted step count, not the clock, with the cosine at its end.
    assert trainer.global_step == callback.total_steps
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.1, rel=1e-3)
    assert callback.state_dict() == {"total_steps": trainer.global_step}


def test_steps_from_time_caps_at_max_steps_and_needs_a_time_limit():
    callback = StepsFromTime(start=2, window=3, max_steps=12)
    trainer = _fit(_Regression(total_steps=10**6), callback, max_time={"minutes": 5})
    assert trainer.global_step == callback.total_steps == 12
    with pytest.raises(ValueError, match=r"needs a time limit: set trainer\.max_time"):
        _fit(_Regression(total_steps=100), StepsFromTime(), max_time=None, max_epochs=1)
    with pytest.raises(ValueError, match="margin"):
        StepsFromTime(margin=1.0)


@pytest.mark.parametrize("replan", [0.1, 0.0])
def test_replanning_follows_steps_that_slow_down(replan):
    # Steps 5-25 are fast, later ones 10 ms slower: the first plan is far too long. Planning
    # again from the average speed still ends the cosine in time; planning once does not.
    module = _Regression(total_steps=10**6, slow_from=30)
    callback = StepsFromTime(start=5, window=20, margin=0.1, replan=replan)
    trainer = _fit(module, callback, max_time={"seconds": 3}, max_epochs=10**6)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    if replan:
        assert trainer.global_step == callback.total_steps
        assert lr == pytest.approx(0.1 * 0.1, rel=1e-3)
    else:  # the control: the clock stopped it mid-cosine
        assert trainer.global_step < callback.total_steps
        assert lr > 0.1 * 0.1 * 1.5
