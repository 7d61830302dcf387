"""``TransferModule``: a 4M encoder (pretrained or not) plus a task head, fine-tuned or probed.

One LightningModule for the three task families of the transfer benchmarks; the task decides the
head, the loss and the metrics:

==============  ==============================  =======================  ======================
task            head                            loss                     metrics
==============  ==============================  =======================  ======================
classification  mean pool, LayerNorm, Linear    cross-entropy            ``acc``
segmentation    ``DenseHead`` (C channels)      per-pixel cross-entropy  ``miou``, ``pixel_acc``
depth           ``DenseHead`` (1, log depth)    L1 on log depth          ``abs_rel``, ``delta1``
==============  ==============================  =======================  ======================

Options: ``layer_decay`` (layer-wise learning-rate decay: the head gets ``lr``, encoder layer i
of n gets ``lr * layer_decay ** (n - i)``) and ``freeze_encoder`` (linear probe / frozen
backbone: only the head trains).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from fourm_lightning.pretraining import CosineSchedule, no_decay
from fourm_lightning.transfer.encoder import EncoderConfig, RGBEncoder
from fourm_lightning.transfer.heads import ClassificationHead, DenseHead
from fourm_lightning.transfer.metrics import DepthMetrics, SegmentationIoU

Task = Literal["classification", "segmentation", "depth"]
#: Smallest depth (metres) treated as valid ground truth.
MIN_DEPTH = 1e-3


class TransferModule(LightningModule):
    """Fine-tune (or probe) a 4M encoder on a transfer task.

    Batches are the project's DataModule batches: ``batch["rgb"]`` (B, 3, H, W) uint8 and
    ``batch[target_key]``: (B,) int64 classes, (B, H, W) int64 labels or (B, 1, H, W) metres.

    Args:
        task: ``classification``, ``segmentation`` or ``depth``.
        num_classes: classes (classification and segmentation).
        encoder: encoder sizes (must equal the pretrained model's).
        pretrained: a 4M checkpoint or export folder; None trains from scratch.
        target_key: batch key of the labels (``target`` for derived labels, ``label``,
            ``depth``).
        image_key: batch key of the RGB images.
        freeze_encoder: train only the head (linear probe for classification).
        layer_decay: layer-wise learning-rate decay (1.0: none).
        lr: peak learning rate of the head (and of the top encoder layer).
        weight_decay: AdamW weight decay (not on norms and biases).
        warmup_steps: linear warmup steps, then cosine to ``min_lr_ratio * lr``.
        min_lr_ratio: final learning rate as a fraction of the peak.
        drop_path: stochastic depth in the encoder while fine-tuning.
        ignore_index: label ignored by the loss and metrics (-1: a crop with no object).
    """

    def __init__(
        self,
        task: Task,
        num_classes: int | None = None,
        encoder: EncoderConfig | None = None,
        pretrained: str | None = None,
        target_key: str = "target",
        image_key: str = "rgb",
        freeze_encoder: bool = False,
        layer_decay: float = 1.0,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.01,
        drop_path: float = 0.0,
        ignore_index: int = -1,
    ) -> None:
        super().__init__()
        if task in ("classification", "segmentation") and (num_classes or 0) < 2:
            raise ValueError(f"task {task!r} needs num_classes >= 2, got {num_classes}")
        if not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
        if isinstance(encoder, dict):  # plain Python callers may pass the sizes as a dict
            encoder = EncoderConfig(**encoder)
        encoder = encoder or EncoderConfig()
        self.save_hyperparameters()
        self.task = task
        self.encoder = RGBEncoder(encoder, 0.0 if freeze_encoder else drop_path, pretrained)
        patch = encoder.patch_size
        if task == "classification":
            self.head: torch.nn.Module = ClassificationHead(encoder.dim, int(num_classes or 0))
        else:
            out = int(num_classes or 0) if task == "segmentation" else 1
            self.head = DenseHead(encoder.dim, out, patch)
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        self.metrics = torch.nn.ModuleDict(
            {stage: self._make_metric() for stage in ("val", "test")}
        )

    def _make_metric(self) -> Metric:
        hp = self.hparams
        if self.task == "classification":
            return MulticlassAccuracy(hp.num_classes, average="micro", ignore_index=hp.ignore_index)
        if self.task == "segmentation":
            return SegmentationIoU(hp.num_classes, ignore_index=hp.ignore_index)
        return DepthMetrics(min_depth=MIN_DEPTH)

    def train(self, mode: bool = True) -> TransferModule:
        """Keep a frozen encoder in eval mode (no stochastic depth) while the head trains."""
        super().train(mode)
        if self.hparams.freeze_encoder:
            self.encoder.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 -> logits (B, C), logits (B, C, H, W) or depth (B, 1, H, W) metres."""
        out = self.head(self.encoder(images))
        return out.exp() if self.task == "depth" else out

    def _loss(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """(loss, prediction for the metrics, target)."""
        if self.hparams.image_key not in batch or self.hparams.target_key not in batch:
            raise KeyError(
                f"the batch needs {self.hparams.image_key!r} and {self.hparams.target_key!r}; "
                f"it has {sorted(k for k in batch if not k.startswith('__'))}"
            )
        target = batch[self.hparams.target_key]
        out = self.head(self.encoder(batch[self.hparams.image_key])).float()
        if self.task == "depth":
            valid = target > MIN_DEPTH
            log_target = target.clamp_min(MIN_DEPTH).log()
            loss = (out - log_target).abs()[valid].mean()
            return loss, out.exp(), target
        target = target.long()
        loss = F.cross_entropy(out, target, ignore_index=self.hparams.ignore_index)
        if torch.isnan(loss):  # every label ignored in this batch: nothing to learn from it
            loss = out.sum() * 0.0
        return loss, out.argmax(1), target

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:  # noqa: D102
        loss, _, _ = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["__key__"]))
        return loss

    def _eval_step(self, batch: Mapping[str, Any], stage: str) -> Tensor:
        loss, pred, target = self._loss(batch)
        self.metrics[stage].update(pred, target)
        self.log(f"{stage}/loss", loss, batch_size=len(batch["__key__"]), sync_dist=True)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:  # noqa: D102
        return self._eval_step(batch, "val")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:  # noqa: D102
        return self._eval_step(batch, "test")

    def _log_metric(self, stage: str) -> None:
        value = self.metrics[stage].compute()
        values = value if isinstance(value, dict) else {"acc": value}
        self.log_dict({f"{stage}/{k}": float(v) for k, v in values.items()})
        self.metrics[stage].reset()

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._log_metric("val")

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self._log_metric("test")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: per encoder layer (layer decay) x decay/no-decay, then the head."""
        hp = self.hparams
        n = self.encoder.num_layers
        groups: dict[tuple[int, bool], list[Tensor]] = {}
        for name, param in self.encoder.named_parameters():
            if param.requires_grad:
                groups.setdefault((self.encoder.layer_id(name), no_decay(name)), []).append(param)
        for name, param in self.head.named_parameters():
            groups.setdefault((n, no_decay(name)), []).append(param)
        return [
            {
                "params": params,
                "weight_decay": 0.0 if skip else hp.weight_decay,
                "lr_scale": hp.layer_decay ** (n - layer),
            }
            for (layer, skip), params in sorted(groups.items())
        ]

    def configure_optimizers(self) -> Any:  # noqa: D102
        hp = self.hparams
        groups = self.parameter_groups()
        for group in groups:
            group["lr"] = hp.lr * group["lr_scale"]
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=(0.9, 0.999))
        trainer = getattr(self, "_trainer", None)  # None: a module built without a Trainer
        total = int(trainer.estimated_stepping_batches) if trainer is not None else 10**9
        if not math.isfinite(total) or total <= 0:
            total = 10**9
        schedule = CosineSchedule(hp.warmup_steps, total, hp.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


__all__ = ["Task", "TransferModule"]
