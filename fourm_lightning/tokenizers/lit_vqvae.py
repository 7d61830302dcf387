"""``VQVAETokenizer``: trains a ViT VQ-VAE on one image-like modality.

Everything modality-specific (input preparation, loss, sample form, metrics, pictures) comes from
the ``KindAdapter`` of the modality's kind (``fourm_lightning.tokenizers.adapters``); this module
only optimises, logs and checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from fourm_lightning.tokenizers.adapters import KindAdapter, Prepared, default_adapter
from fourm_lightning.tokenizers.lit_base import TokenizerModule, resolve_spec
from fourm_lightning.tokenizers.quantizers import Quantizer
from fourm_lightning.tokenizers.vit_vqvae import ViTVQVAE


class VQVAETokenizer(TokenizerModule):
    """A ViT VQ-VAE tokenizer for one image-like modality, trained with its kind's loss.

    Image-like modalities: RGB, depth, normals, label maps, edges, feature maps.

    Tokenizer API: ``encode(value) -> (B, H/p, W/p)`` int64, ``decode(tokens) -> value``,
    ``vocab_size``, ``num_tokens(resolution)``.

    Args:
        modality: name of the modality to tokenize (a key of the batches).
        quantizer: the bottleneck, e.g. ``CosineVQ`` (EMA codebook, dead-code restart) or
            ``FSQQuantizer``; its ``dim`` is the latent width.
        adapter: per-kind behaviour with options (e.g. ``DepthAdapter(normalization="robust")``);
            None picks the registered adapter of the modality's kind with default options.
        spec: the modality spec, ``ModalitySpec.to_config()`` as JSON; None reads it from
            ``manifest`` or the built-in modalities. Checkpoints record it.
        manifest: dataset folder (or ``manifest.json``) to read the spec from when ``spec`` is
            None; None uses ``builtin_modalities()``.
        image_size: resolution at which position embeddings are defined (other multiples of
            ``patch_size`` work too).
        patch_size: patch side p; the token grid is (H/p, W/p).
        embed_dim: encoder width.
        depth: encoder blocks.
        num_heads: encoder attention heads.
        decoder_embed_dim: decoder width (default ``embed_dim``).
        decoder_depth: decoder blocks (default ``depth``).
        decoder_num_heads: decoder heads (default ``num_heads``).
        mlp_ratio: MLP width of the blocks as a multiple of their width.
        refine_head: two ConvNeXt blocks after unpatchifying, against patch-border artefacts.
        class_embed_dim: channels of the class embedding of label-map inputs.
        codebook_weight: weight of the quantizer's loss (commitment) in the total loss.
        optimizer: optimizer factory; None means AdamW(lr=1e-3, betas=(0.9, 0.99),
            weight_decay=0.05).
        warmup_steps: optimizer steps of linear LR warmup.
        min_lr_ratio: final LR of the cosine decay as a fraction of the peak.
        num_log_images: samples shown in the validation reconstruction grid (0 disables it).
    """

    def __init__(
        self,
        modality: str,
        quantizer: Quantizer,
        adapter: KindAdapter | None = None,
        spec: str | None = None,
        manifest: str | None = None,
        image_size: int = 64,
        patch_size: int = 8,
        embed_dim: int = 192,
        depth: int = 4,
        num_heads: int = 3,
        decoder_embed_dim: int | None = None,
        decoder_depth: int | None = None,
        decoder_num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        refine_head: bool = False,
        class_embed_dim: int = 16,
        codebook_weight: float = 1.0,
        optimizer: OptimizerCallable | None = None,
        warmup_steps: int = 200,
        min_lr_ratio: float = 0.0,
        num_log_images: int = 8,
    ) -> None:
        super().__init__(optimizer, warmup_steps, min_lr_ratio)
        self.save_hyperparameters()
        self.spec = resolve_spec(modality, spec, manifest)
        if adapter is None:
            adapter = default_adapter(self.spec)
        else:
            adapter.bind(self.spec)
        self.adapter = adapter
        self.model = ViTVQVAE(
            quantizer,
            in_channels=adapter.in_channels,
            out_channels=adapter.out_channels,
            num_classes=adapter.num_classes,
            class_embed_dim=class_embed_dim,
            image_size=image_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            decoder_embed_dim=decoder_embed_dim,
            decoder_depth=decoder_depth,
            decoder_num_heads=decoder_num_heads,
            mlp_ratio=mlp_ratio,
            refine_head=refine_head,
        )
        self.codebook_weight = codebook_weight
        self.num_log_images = num_log_images
        # ModuleDict so that Lightning moves the metrics with the model and resets nothing by
        # accident; their states are not part of the state dict.
        self.val_metrics = nn.ModuleDict(adapter.metrics())
        self.val_usage = self._codebook_metric(quantizer.codebook_size)

    # -- tokenizer API ---------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """K, the number of distinct tokens."""
        return self.model.codebook_size

    def num_tokens(self, resolution: int | tuple[int, int]) -> int:
        """Tokens per sample at ``resolution`` (side, or (H, W)): (H/p) * (W/p)."""
        return self.model.num_tokens(resolution)

    def prepare(self, value: Any) -> Prepared:
        """Check a batch value and turn it into core input (see the adapter)."""
        try:
            self.adapter.check(value)
        except ValueError as error:
            where = f" (tokenizer {self.source})" if self.source else ""
            raise ValueError(f"{error}{where}") from error
        return self.adapter.prepare(value.to(self.device))

    @torch.no_grad()
    def encode(self, value: Any) -> Tensor:
        """Tokenize a batch.

        Args:
            value: the modality's batch form, e.g. (B, 3, H, W) uint8 RGB, (B, 1, H, W) depth
                in metres, (B, H, W) class ids; H and W multiples of the patch size.

        Returns:
            (B, H/p, W/p) int64 tokens in ``[0, vocab_size)``.
        """
        prepared = self.prepare(value)
        try:
            return self.model.encode(prepared.input)
        except ValueError as error:
            raise ValueError(f"{self._where()}: {error}") from error

    @torch.no_grad()
    def decode(self, tokens: Tensor, reference: Any = None) -> Any:
        """Detokenize to the modality's batch form.

        Args:
            tokens: (B, h, w) integer tokens.
            reference: the encoded batch value, when the sample form needs per-sample context
                (depth: metric scale); None gives the context-free form (relative depth).

        Returns:
            The batch value, e.g. (B, 3, h*p, w*p) uint8 for RGB.
        """
        tokens = tokens.to(self.device).long()
        if tokens.ndim != 3:
            raise ValueError(
                f"{self._where()}: expected tokens (B, h, w), got {tuple(tokens.shape)}"
            )
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(
                f"{self._where()}: tokens outside [0, {self.vocab_size}): min "
                f"{int(tokens.min())}, max {int(tokens.max())}"
            )
        output = self.model.decode_indices(tokens)
        prepared = self.prepare(reference) if reference is not None else None
        return self.adapter.to_sample(output, prepared)

    # -- training ----------------------------------------------------------------------------

    def _step(self, batch: Mapping[str, Any]) -> tuple[Prepared, Tensor, Any, dict[str, Tensor]]:
        prepared = self.prepare(self._batch_value(batch))
        output, quantized = self.model(prepared.input)
        reconstruction = self.adapter.loss(output, prepared)
        code = quantized.loss.float()
        losses = {
            "loss": reconstruction + self.codebook_weight * code,
            "rec_loss": reconstruction.detach(),
            "code_loss": code.detach(),
            "share_used": quantized.share_used,
            "perplexity": quantized.perplexity,
        }
        return prepared, output, quantized.indices, losses

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        """One optimisation step on ``batch[modality]``; logs ``train/*``."""
        _, _, _, losses = self._step(batch)
        batch_size = len(batch.get("__key__", ())) or None
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in losses.items()},
            prog_bar=False,
            batch_size=batch_size,
        )
        self.log("train/loss_pb", losses["loss"].detach(), prog_bar=True, logger=False)
        self._log_skipped(batch)
        return losses["loss"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Loss, kind metrics, codebook usage; a reconstruction grid of the first batch."""
        value = self._batch_value(batch)
        prepared, output, indices, losses = self._step(batch)
        batch_size = len(batch.get("__key__", ())) or None
        self.log("val/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        self.log("val/rec_loss", losses["rec_loss"], batch_size=batch_size)
        sample = self.adapter.to_sample(output, prepared)
        self._update_metrics(self.adapter, sample, value.to(self.device))
        self.val_usage.update(indices)
        if batch_idx == 0 and self.num_log_images > 0:
            n = self.num_log_images
            original = self.adapter.display(value[:n].to(self.device))
            recon = self.adapter.display(sample[:n])
            # Input and reconstruction side by side, one pair per cell.
            self._log_images(f"val/{self.spec.name}_input|recon", torch.cat([original, recon], -1))

    def on_validation_epoch_end(self) -> None:
        """Log the kind metrics and codebook usage over the whole validation set."""
        for name, metric in self.val_metrics.items():
            self.log(f"val/{name}", metric.compute())
            metric.reset()
        usage = self.val_usage.compute()
        self.log("val/codebook_share_used", usage["share_used"])
        self.log("val/codebook_perplexity", usage["perplexity"])
        self.val_usage.reset()


__all__ = ["VQVAETokenizer"]
