"""The project's ModelCheckpoint keeps the weights training ended with in last.ckpt."""

import lightning as L
import torch

from fourm_lightning.callbacks import ModelCheckpoint
from fourm_lightning.datamodules.multimodal import MultimodalDataModule
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
