"""One optimizer step of a small 4M on a fixed global batch, under a chosen Lightning strategy.

Run by tests/models/test_distributed.py in a subprocess (Lightning's "ddp" and
``ModelParallelStrategy`` launchers re-run the current command for rank 1, which must not be
pytest itself)::

    python tests/models/distributed_run.py {single,ddp,fsdp} OUT_DIR [LENGTH_GROUPS]

Every rank writes ``OUT_DIR/rank<r>.json``: its step-0 loss, the global batch keys it saw, and
whether its block weights are sharded (the local shard's share of the full tensor). Rank 0 also
writes ``OUT_DIR/weights.pt``, the full weights after the step.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from torch.utils.data import DataLoader, Dataset

from fourm_lightning.datamodules.tokens import collate_masked
from fourm_lightning.models.domains import ImageTokenDomain, PixelDomain, VectorTokenDomain
from fourm_lightning.pretraining import FourMPretraining

GLOBAL_BATCH = 4
DOMAINS = [
    PixelDomain("rgb", image_size=16, patch_size=4),
    ImageTokenDomain("tok_depth", vocab_size=40, grid=4),
    VectorTokenDomain("tok_camera", vocab_size=20, length=4),
]


class FixedSamples(Dataset):
    """GLOBAL_BATCH masked samples: two short (3 targets a domain) and two long ones (all
    but one token).

    Each rank gets one of each (samples r and r + 2), so both ranks hold the same per-domain
    target counts and the mean of their losses equals the global loss; within a rank the
    lengths differ, so ``length_groups=2`` really runs two passes.
    """

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.samples = []
        for i in range(GLOBAL_BATCH):
            sample = {"__key__": f"{i:04d}"}
            for domain in DOMAINS:
                if isinstance(domain, PixelDomain):
                    value = rng.normal(size=(3, 16, 16)).astype(np.float32)
                else:
                    value = rng.integers(0, domain.vocab_size, size=domain.max_tokens)
                n_tgt = 3 if i < GLOBAL_BATCH // 2 else domain.max_tokens - 1
                n_tgt = n_tgt if domain.has_target else 0
                sample[domain.name] = domain.mask(value, 1, n_tgt, rng)
            self.samples.append(sample)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


class SGDPretraining(FourMPretraining):
    """Plain SGD: AdamW's first step, g / (|g| + eps), would turn float noise in near-zero
    gradients into full-size updates, hiding whether the ranks' gradients were averaged right."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


class Record(Callback):
    """Write each rank's first loss, keys and shard facts; rank 0 writes the final weights."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.losses: list[float] = []
        self.keys: list[str] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))
        self.keys.extend(batch["__key__"])

    def on_train_end(self, trainer, pl_module) -> None:
        weight = pl_module.model.encoder[0].attn.qkv.weight
        local = weight.to_local() if hasattr(weight, "to_local") else weight
        full = {}
        for name, param in pl_module.model.state_dict().items():
            full[name] = (param.full_tensor() if hasattr(param, "full_tensor") else param).cpu()
        record = {
            "loss": self.losses[0],
            "keys": self.keys,
            "sharded": hasattr(weight, "to_local"),
            "local_share": local.numel() / weight.numel(),
        }
        rank = trainer.global_rank
        (self.out / f"rank{rank}.json").write_text(json.dumps(record))
        if rank == 0:
            torch.save(full, self.out / "weights.pt")


def main(mode: str, out: Path, length_groups: int = 1) -> None:
    """Train one step in ``mode`` (single, ddp or fsdp) and write the records to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(0)
    module = SGDPretraining(
        DOMAINS, dim=32, encoder_depth=2, decoder_depth=2, num_heads=2, attention="sdpa",
        length_groups=length_groups,
    )  # fmt: skip
    if mode == "single":
        strategy, devices, batch = "auto", 1, GLOBAL_BATCH
    elif mode == "ddp":
        strategy, devices, batch = "ddp", 2, GLOBAL_BATCH // 2
    else:
        from lightning.pytorch.strategies import ModelParallelStrategy

        strategy = ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)
        devices, batch = 2, GLOBAL_BATCH // 2
    trainer = Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Record(out)],
    )
    loader = DataLoader(FixedSamples(), batch_size=batch, shuffle=False, collate_fn=collate_masked)
    trainer.fit(module, loader)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), *(int(a) for a in sys.argv[3:]))
