"""``VectorVQTokenizer``: trains an MLP VQ on one global-vector modality (the built-in ``camera``).

The core standardises its input with persistent buffers; this module fits them once, before the
first optimisation step, from the first ``norm_batches`` training batches (or takes them from
``norm_mean``/``norm_std``), so the loss is an MSE in standardised units where a metre, a unit
direction and a degree of field of view weigh the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from fourm_lightning.tokenizers.adapters import KindAdapter, default_adapter
from fourm_lightning.tokenizers.lit_base import TokenizerModule, resolve_spec
from fourm_lightning.tokenizers.mlp_vq import MLPVQ
from fourm_lightning.tokenizers.quantizers import Quantizer


class VectorVQTokenizer(TokenizerModule):
    """An MLP VQ tokenizer for one global vector per sample.

    Tokenizer API: ``encode(value (B, D)) -> (B, T)`` int64, ``decode(tokens) -> (B, D)``,
    ``vocab_size``, ``num_tokens(resolution) -> T`` (independent of the resolution).

    Args:
        modality: name of the vector modality (a key of the batches).
        quantizer: the bottleneck (``CosineVQ``, ``FSQQuantizer``); its ``dim`` is the per-token
            latent width.
        adapter: per-kind behaviour; None picks the registered adapter of the modality's kind.
        spec: the modality spec, ``ModalitySpec.to_config()`` as JSON; None reads it from
            ``manifest`` or the built-in modalities.
        manifest: dataset folder (or ``manifest.json``) to read the spec from.
        num_tokens: tokens per vector T.
        hidden_dim: width of the residual MLP trunks.
        depth: residual blocks of the encoder.
        decoder_depth: residual blocks of the decoder (default ``depth``).
        mlp_ratio: hidden width of each block as a multiple of ``hidden_dim``.
        norm_batches: training batches whose vectors set the standardisation statistics at the
            start of training (ignored when ``norm_mean`` and ``norm_std`` are given).
        norm_mean: fixed per-entry mean (length D), instead of fitting it.
        norm_std: fixed per-entry std (length D), instead of fitting it.
        codebook_weight: weight of the quantizer's loss in the total loss.
        optimizer: optimizer factory; None means AdamW(lr=1e-3, betas=(0.9, 0.99),
            weight_decay=0.05).
        warmup_steps: optimizer steps of linear LR warmup.
        min_lr_ratio: final LR of the cosine decay as a fraction of the peak.
    """

    normalization_fitted: Tensor

    def __init__(
        self,
        modality: str,
        quantizer: Quantizer,
        adapter: KindAdapter | None = None,
        spec: str | None = None,
        manifest: str | None = None,
        num_tokens: int = 4,
        hidden_dim: int = 256,
        depth: int = 2,
        decoder_depth: int | None = None,
        mlp_ratio: float = 4.0,
        norm_batches: int = 8,
        norm_mean: list[float] | None = None,
        norm_std: list[float] | None = None,
        codebook_weight: float = 1.0,
        optimizer: OptimizerCallable | None = None,
        warmup_steps: int = 200,
        min_lr_ratio: float = 0.0,
    ) -> None:
        super().__init__(optimizer, warmup_steps, min_lr_ratio)
        self.save_hyperparameters()
        self.spec = resolve_spec(modality, spec, manifest)
        if adapter is None:
            adapter = default_adapter(self.spec)
        else:
            adapter.bind(self.spec)
        self.adapter = adapter
        self.model = MLPVQ(
            quantizer,
            input_dim=adapter.in_channels,
            num_tokens=num_tokens,
            hidden_dim=hidden_dim,
            depth=depth,
            decoder_depth=decoder_depth,
            mlp_ratio=mlp_ratio,
        )
        self.norm_batches = norm_batches
        self.codebook_weight = codebook_weight
        # Persistent: a reloaded or resumed tokenizer must not refit its statistics.
        self.register_buffer("normalization_fitted", torch.tensor(False))
        if (norm_mean is None) != (norm_std is None):
            raise ValueError("give both norm_mean and norm_std, or neither")
        if norm_mean is not None and norm_std is not None:
            self.model.set_normalization(torch.tensor(norm_mean), torch.tensor(norm_std))
            self.normalization_fitted.fill_(True)
        self.val_metrics = nn.ModuleDict(adapter.metrics())
        self.val_usage = self._codebook_metric(quantizer.codebook_size)

    # -- tokenizer API ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """K, the number of distinct tokens."""
        return self.model.codebook_size

    def num_tokens(self, resolution: int | tuple[int, int] | None = None) -> int:
        """Tokens per vector T (vectors have no resolution; the argument is ignored)."""
        return self.model.num_tokens

    def _checked(self, value: Any) -> Tensor:
        try:
            self.adapter.check(value)
        except ValueError as error:
            where = f" (tokenizer {self.source})" if self.source else ""
            raise ValueError(f"{error}{where}") from error
        return self.adapter.prepare(value.to(self.device)).input

    @torch.no_grad()
    def encode(self, value: Tensor) -> Tensor:
        """Tokenize.

        Args:
            value: (B, D) float vectors in data units.

        Returns:
            (B, T) int64 tokens in ``[0, vocab_size)``.
        """
        return self.model.encode(self._checked(value))

    @torch.no_grad()
    def decode(self, tokens: Tensor, reference: Any = None) -> Tensor:
        """Detokenize.

        Args:
            tokens: (B, T) integer tokens.
            reference: unused (vectors need no per-sample context); kept for a uniform API.

        Returns:
            (B, D) float32 vectors in data units.
        """
        tokens = tokens.to(self.device).long()
        if tokens.ndim != 2 or tokens.shape[1] != self.model.num_tokens:
            raise ValueError(
                f"{self._where()}: expected tokens (B, {self.model.num_tokens}), "
                f"got {tuple(tokens.shape)}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"{self._where()}: tokens outside [0, {self.vocab_size})")
        return self.adapter.to_sample(self.model.decode_indices(tokens))

    # -- normalisation -----------------------------------------------------------------------

    def _fit_normalization(self, first_batch: Mapping[str, Any]) -> None:
        vectors = [self._checked(self._batch_value(first_batch))]
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and self.norm_batches > 1:
            # A fresh pass over the training loader, so the statistics do not depend on how far
            # training has gone; only the first few batches are read.
            for i, batch in enumerate(datamodule.train_dataloader()):
                if i >= self.norm_batches - 1:
                    break
                vectors.append(self._checked(self._batch_value(batch)))
        data = torch.cat(vectors).float()
        if data.shape[0] < 2:
            raise ValueError(
                f"{self._where()}: need at least 2 vectors to fit the normalisation, got "
                f"{data.shape[0]}; raise batch_size or norm_batches, or give norm_mean/norm_std"
            )
        self.model.fit_normalization(data)
        self.normalization_fitted.fill_(True)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Fit the standardisation once, before the first optimisation step."""
        if not bool(self.normalization_fitted):
            self._fit_normalization(batch)

    # -- training ----------------------------------------------------------------------------

    def _step(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        value = self._checked(self._batch_value(batch))
        reconstruction, quantized = self.model(value)
        # Compare in standardised units (see the module docstring).
        pred = self.model.normalize(reconstruction.float())
        target = self.model.normalize(value)
        rec = F.mse_loss(pred, target)
        code = quantized.loss.float()
        losses = {
            "loss": rec + self.codebook_weight * code,
            "rec_loss": rec.detach(),
            "code_loss": code.detach(),
            "share_used": quantized.share_used,
            "perplexity": quantized.perplexity,
        }
        return pred, target, quantized.indices, losses

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """One optimisation step on ``batch[modality]``; logs ``train/*``."""
        _, _, _, losses = self._step(batch)
        batch_size = len(batch.get("__key__", ())) or None
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=batch_size)
        self._log_skipped(batch)
        return losses["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Loss, cosine similarity and MSE in standardised units, codebook usage."""
        pred, target, indices, losses = self._step(batch)
        batch_size = len(batch.get("__key__", ())) or None
        self.log("val/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        self._update_metrics(self.adapter, pred.detach(), target)
        self.val_usage.update(indices)

    def on_validation_epoch_end(self) -> None:
        """Log the metrics and codebook usage over the whole validation set."""
        for name, metric in self.val_metrics.items():
            self.log(f"val/{name}", metric.compute())
            metric.reset()
        usage = self.val_usage.compute()
        self.log("val/codebook_share_used", usage["share_used"])
        self.log("val/codebook_perplexity", usage["perplexity"])
        self.val_usage.reset()


__all__ = ["VectorVQTokenizer"]
