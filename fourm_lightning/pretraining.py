"""``FourMPretraining``: the 4M masked multimodal model as a LightningModule.

It owns optimisation, logging and checkpoints only; the network is ``models.FourM`` and the
masking runs in ``TokenDataModule``'s workers. Train it with::

    fourm-lightning fit --config configs/experiment/fourm_nano_synth.yaml

Optimisation follows the reference (section 7.1): AdamW, betas (0.9, 0.95), weight decay 0.05
except on norms and biases, linear warmup then cosine decay by steps, gradient clipping from the
Trainer (``gradient_clip_val``), bf16 autocast with ``precision: bf16-mixed``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import Tensor

from fourm_lightning.models.domains import Domain, domain_from_config
from fourm_lightning.models.fourm import FourM, FourMOutput
from fourm_lightning.models.layers import AttentionImpl, MlpType


def no_decay(name: str) -> bool:
    """Whether a parameter is kept out of weight decay: norms and biases.

    Token, modality and mask embeddings are decayed, as in 4M.
    """
    return "norm" in name or name.endswith("bias")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup from 0 over ``warmup_steps``, cosine to ``min_ratio``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_stable_decay(
    step: int, warmup_steps: int, total_steps: int, min_ratio: float, cooldown: float
) -> float:
    """LR multiplier: linear warmup from 0, the peak held, then a linear decay to ``min_ratio``.

    The decay takes the last ``cooldown`` share of the steps after warmup ("WSD"). At equal steps
    it keeps the learning rate high for longer than a cosine: the sum of the multipliers is
    about ``1 - cooldown / 2`` of the steps, against a half for the cosine.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_start = total_steps - cooldown * (total_steps - warmup_steps)
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1.0, total_steps - decay_start))
    return 1.0 - (1.0 - min_ratio) * progress


@dataclass
class CosineSchedule:
    """``warmup_cosine`` as a callable object for ``LambdaLR``.

    An object, not a closure: ``LambdaLR`` keeps its numbers in checkpoints, and
    ``callbacks.StepsFromTime`` can change ``total_steps`` once it has timed the first steps.
    """

    warmup_steps: int
    total_steps: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        """The multiplier at optimizer step ``step``."""
        return warmup_cosine(step, self.warmup_steps, self.total_steps, self.min_ratio)


@dataclass
class StableDecaySchedule:
    """``warmup_stable_decay`` as a callable object for ``LambdaLR`` (see ``CosineSchedule``)."""

    warmup_steps: int
    total_steps: int
    min_ratio: float
    cooldown: float

    def __call__(self, step: int) -> float:
        """The multiplier at optimizer step ``step``."""
        return warmup_stable_decay(
            step, self.warmup_steps, self.total_steps, self.min_ratio, self.cooldown
        )


#: The pretraining LR schedules: warmup then cosine, or warmup, constant and linear decay.
LRSchedule = Literal["cosine", "wsd"]


class FourMPretraining(LightningModule):
    """4M pretraining on masked token batches.

    Args:
        domains: the model's domains (YAML list of ``class_path`` + ``init_args``); the
            ``TokenDataModule`` reads and masks the same ones.
        dim: width D.
        encoder_depth: encoder blocks.
        decoder_depth: decoder blocks.
        num_heads: attention heads.
        mlp_ratio: MLP ratio.
        mlp: ``"swiglu"`` or ``"gelu"``.
        bias: biases in linear layers and norms.
        qk_norm: per-head query/key LayerNorm.
        drop_path: stochastic depth rate.
        share_modality_embeddings: decoder reuses the encoder's modality embeddings.
        attention: ``"auto"`` (SDPA, or two matmuls for bf16 on CPU where they are faster),
            ``"sdpa"`` or ``"matmul"``.
        embedding_std: init std of the token and text embeddings (``FourM``; 4M: 0.02; the
            quickstart plans use 1.0, see ``FourM``).
        lr: peak learning rate (4M: 1e-4 x global batch / 256).
        weight_decay: AdamW decay on everything but norms and biases.
        betas: AdamW betas.
        warmup_steps: linear warmup steps.
        min_lr_ratio: final LR of the schedule as a fraction of ``lr``.
        lr_schedule: ``"cosine"`` (4M's: warmup, then cosine decay) or ``"wsd"`` (warmup, the
            peak held, then a linear decay over the last ``cooldown`` of the steps).
        cooldown: share of the steps after warmup that ``"wsd"`` decays over.
        check_tokenizers: at construction, check every domain's tokenizer vocabulary and record
            its hash (tokenizers missing on this machine are skipped, their records kept).
        length_groups: run each batch as up to this many sub-batches of samples with similar
            target counts (``FourM.forward``): the same loss and gradients with less decoder
            padding when a mixture mixes short and long target budgets. 1 = one pass.
    """

    def __init__(
        self,
        domains: list[Domain],
        dim: int = 256,
        encoder_depth: int = 4,
        decoder_depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        mlp: MlpType = "swiglu",
        bias: bool = False,
        qk_norm: bool = False,
        drop_path: float = 0.0,
        share_modality_embeddings: bool = True,
        attention: AttentionImpl = "auto",
        embedding_std: float = 0.02,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.95),
        warmup_steps: int = 200,
        min_lr_ratio: float = 0.0,
        lr_schedule: LRSchedule = "cosine",
        cooldown: float = 0.2,
        check_tokenizers: bool = True,
        length_groups: int = 1,
    ) -> None:
        super().__init__()
        if length_groups < 1:
            raise ValueError(f"length_groups must be at least 1, got {length_groups}")
        if lr_schedule not in get_args(LRSchedule):
            raise ValueError(f"lr_schedule must be 'cosine' or 'wsd', got {lr_schedule!r}")
        if not 0.0 < cooldown <= 1.0:
            raise ValueError(f"cooldown must be in (0, 1], got {cooldown}")
        objects = [domain_from_config(d) if isinstance(d, Mapping) else d for d in domains]
        # save_hyperparameters reads the arguments from this frame: the domains go in as plain
        # configs, so hparams.yaml shows them and checkpoints reload without pickled objects.
        domains = [d.to_config() for d in objects]
        self.save_hyperparameters()
        self.model = FourM(
            objects,
            dim=dim,
            encoder_depth=encoder_depth,
            decoder_depth=decoder_depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            mlp=mlp,
            bias=bias,
            qk_norm=qk_norm,
            drop_path=drop_path,
            share_modality_embeddings=share_modality_embeddings,
            attention=attention,
            embedding_std=embedding_std,
        )
        #: domain -> {"path", "sha256", "vocab_size"} of the tokenizer it was trained against.
        self.tokenizer_records: dict[str, Any] = {}
        if check_tokenizers:
            for domain in objects:
                record = domain.tokenizer_record()
                if record is not None:
                    self.tokenizer_records[domain.name] = record

    def configure_model(self) -> None:
        """Under ``ModelParallelStrategy``, shard each block and then the rest with FSDP2.

        Each encoder and decoder block is one ``fully_shard`` unit (4M's FSDP wrap policy);
        embeddings, heads and norms form the root unit. Other strategies leave the model as is.
        """
        mesh = getattr(self, "device_mesh", None)
        if mesh is None or getattr(self, "_sharded", False):
            return
        from torch.distributed.fsdp import fully_shard

        data_mesh = mesh["data_parallel"]
        for block in [*self.model.encoder, *self.model.decoder]:
            fully_shard(block, mesh=data_mesh)
        fully_shard(self.model, mesh=data_mesh)
        self._sharded = True

    @property
    def domains(self) -> dict[str, Domain]:
        """The model's domains by name (``TokenDataModule`` reads these when given none)."""
        return self.model.domains

    # -- steps ----------------------------------------------------------------------------------

    def _check_batch(self, batch: Mapping[str, Any]) -> None:
        missing = [name for name in self.model.domains if name not in batch]
        if missing:
            raise KeyError(
                f"training batch lacks the model's modalities {missing}; a sample without a "
                "modality must carry a fully masked placeholder (Domain.empty(), as "
                "TokenDataModule does), so that every rank runs every embedding and head"
            )

    def _shared_step(self, batch: Mapping[str, Any], stage: str) -> FourMOutput:
        self._check_batch(batch)
        out = self.model(batch, length_groups=self.hparams.length_groups)
        size = len(batch.get("__key__", ())) or None
        on_step = stage == "train"
        self.log(f"{stage}/loss", out.loss, prog_bar=True, batch_size=size, sync_dist=not on_step)
        for name, item in out.domains.items():
            if item.num_targets == 0:
                continue
            self.log(f"{stage}/loss_{name}", item.loss, batch_size=size, sync_dist=not on_step)
            self.log(f"{stage}/acc_{name}", item.accuracy, batch_size=size, sync_dist=not on_step)
        if "__skipped__" in batch:
            self.log(f"{stage}/skipped", float(batch["__skipped__"]), reduce_fx="sum")
        return out

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:  # noqa: D102
        return self._shared_step(batch, "train").loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:  # noqa: D102
        return self._shared_step(batch, "val").loss

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:  # noqa: D102
        return self._shared_step(batch, "test").loss

    # -- optimisation ---------------------------------------------------------------------------

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: decayed weights and undecayed norms/biases (shared params once)."""
        decay, plain = [], []
        for name, param in self.model.named_parameters():
            if param.requires_grad:
                (plain if no_decay(name) else decay).append(param)
        return [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": plain, "weight_decay": 0.0},
        ]

    def use_fused_adamw(self) -> bool:
        """Whether AdamW can use its fused kernel here.

        It is 5x faster than the default on this CPU (12 vs 60 ms for 25M parameters). Lightning
        refuses gradient clipping with it only under mixed precision (``MixedPrecision``: the
        fused step would unscale gradients itself), so clipping in float32 or bf16-true keeps
        it. FSDP2's sharded parameters keep the default kernel.
        """
        if self.device_mesh is not None:
            return False
        trainer = getattr(self, "_trainer", None)
        if trainer is None or not trainer.gradient_clip_val:
            return True
        return not isinstance(trainer.precision_plugin, MixedPrecision)

    def configure_optimizers(self) -> Any:  # noqa: D102
        optimizer = torch.optim.AdamW(
            self.parameter_groups(),
            lr=self.hparams.lr,
            betas=tuple(self.hparams.betas),
            fused=self.use_fused_adamw(),
        )
        # Without a Trainer (a module built by hand) the schedule has no end: warmup, then peak.
        trainer = getattr(self, "_trainer", None)
        total = int(trainer.estimated_stepping_batches) if trainer is not None else 10**9
        if not math.isfinite(total) or total <= 0:
            total = 10**9
        hp = self.hparams
        schedule: CosineSchedule | StableDecaySchedule
        if hp.lr_schedule == "wsd":
            schedule = StableDecaySchedule(hp.warmup_steps, total, hp.min_lr_ratio, hp.cooldown)
        else:
            schedule = CosineSchedule(hp.warmup_steps, total, hp.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # -- weights --------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the tokenizers (paths, hashes, vocabularies) the model was trained against."""
        checkpoint["tokenizers"] = self.tokenizer_records

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:  # noqa: D102
        self.tokenizer_records = dict(checkpoint.get("tokenizers", {}))

    def save_pretrained(self, directory: str | Path, bundle_tokenizers: bool = True) -> Path:
        """Weights, config and (by default) the tokenizers; see ``FourM.save_pretrained``."""
        return self.model.save_pretrained(directory, self.tokenizer_records, bundle_tokenizers)

    @staticmethod
    def from_pretrained(directory: str | Path, check_tokenizers: bool = False) -> FourM:
        """The plain ``FourM`` of an export folder (no Lightning needed to use it)."""
        return FourM.from_pretrained(directory, check_tokenizers=check_tokenizers)


__all__ = [
    "CosineSchedule",
    "FourMPretraining",
    "LRSchedule",
    "StableDecaySchedule",
    "no_decay",
    "warmup_cosine",
    "warmup_stable_decay",
]
