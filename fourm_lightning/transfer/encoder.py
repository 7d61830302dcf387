"""The 4M encoder on RGB pixels, as a backbone for transfer (the decoder is discarded, as in 4M).

``RGBEncoder`` is the pixel patch embedding, the encoder blocks and the final norm of a ``FourM``:
from a pretrained 4M (Lightning checkpoint or ``save_pretrained`` folder) or freshly initialised
with the same sizes (the from-scratch baseline).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from fourm_lightning.models.domains import ImageTokenDomain, PixelDomain
from fourm_lightning.models.fourm import FourM
from fourm_lightning.models.layers import MlpType

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EncoderConfig:
    """Sizes of the encoder (must equal the pretrained model's, so baselines are comparable).

    Args:
        image_size: input side in pixels.
        patch_size: patch side in pixels.
        dim: width.
        depth: encoder blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden ratio.
        mlp: ``"swiglu"`` or ``"gelu"``.
        bias: biases in linear layers and norms.
        qk_norm: per-head query/key norm.
    """

    image_size: int = 64
    patch_size: int = 8
    dim: int = 256
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    mlp: MlpType = "swiglu"
    bias: bool = False
    qk_norm: bool = False


def _pixel_domain(model: FourM, path: str) -> PixelDomain:
    pixels = [d for d in model.domains.values() if isinstance(d, PixelDomain)]
    if not pixels:
        raise ValueError(f"{path}: the 4M model has no pixel (RGB) input domain to transfer")
    return pixels[0]


def _unused_target() -> ImageTokenDomain:
    return ImageTokenDomain(name="_unused", vocab_size=2, grid=1)


def _config_of(model: FourM, domain: PixelDomain) -> EncoderConfig:
    c = model.config
    return EncoderConfig(
        image_size=domain.image_size,
        patch_size=domain.patch_size,
        dim=c["dim"],
        depth=c["encoder_depth"],
        num_heads=c["num_heads"],
        mlp_ratio=c["mlp_ratio"],
        mlp=c["mlp"],
        bias=c["bias"],
        qk_norm=c["qk_norm"],
    )


class RGBEncoder(nn.Module):
    """Pixels -> encoder tokens through a 4M encoder.

    ``forward(images (B, 3, H, W) uint8 or normalised float) -> (B, L, D)``, L = (H / patch)^2.

    Args:
        config: sizes.
        drop_path: stochastic depth over the encoder blocks.
        pretrained: a 4M Lightning checkpoint or ``save_pretrained`` folder whose pixel
            embedding, encoder blocks and encoder norm are copied; its sizes must equal
            ``config``'s.
    """

    def __init__(
        self, config: EncoderConfig, drop_path: float = 0.0, pretrained: str | None = None
    ) -> None:
        super().__init__()
        self.config = config
        domain = PixelDomain(name="rgb", image_size=config.image_size, patch_size=config.patch_size)
        if pretrained is not None:
            from fourm_lightning.commands.generate import load_model

            model = load_model(pretrained)
            domain = _pixel_domain(model, pretrained)
            found = _config_of(model, domain)
            if found != config:
                diff = {
                    k: (v, asdict(found)[k])
                    for k, v in asdict(config).items()
                    if asdict(found)[k] != v
                }
                raise ValueError(
                    f"{pretrained}: the pretrained encoder's sizes differ from the config "
                    f"(name: (config, checkpoint)): {diff}"
                )
        else:
            cfg = asdict(config)
            model = FourM(
                [domain, _unused_target()],  # FourM needs a target domain; only the encoder is kept
                dim=cfg["dim"],
                encoder_depth=cfg["depth"],
                decoder_depth=0,
                num_heads=cfg["num_heads"],
                mlp_ratio=cfg["mlp_ratio"],
                mlp=cfg["mlp"],
                bias=cfg["bias"],
                qk_norm=cfg["qk_norm"],
            )
        self.embed = model.encoder_embeddings[domain.name]
        self.blocks = model.encoder
        self.norm = model.encoder_norm
        rates = [drop_path * i / max(1, len(self.blocks) - 1) for i in range(len(self.blocks))]
        for block, rate in zip(self.blocks, rates, strict=True):
            block.drop_path.p = rate  # the pretrained rate is a training choice, not a weight
        self.register_buffer("mean", torch.tensor(domain.mean)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(domain.std)[:, None, None], persistent=False)
        # Loaded models come in eval mode; Lightning keeps modes as found, so without this a
        # pretrained encoder would fine-tune without stochastic depth and scratch with it.
        self.train()

    @property
    def num_layers(self) -> int:
        """Layers for layer-wise learning-rate decay: embedding, blocks, norm."""
        return len(self.blocks) + 2

    def layer_id(self, name: str) -> int:
        """Layer index of parameter ``name`` (relative to this module): 0 = embedding."""
        if name.startswith("embed."):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return len(self.blocks) + 1

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) uint8 or already-normalised float -> (B, L, D) encoder tokens."""
        if images.dtype == torch.uint8:
            images = (images.float() / 255.0 - self.mean) / self.std
        x, emb = self.embed({"tensor": images})
        h = x + emb
        for block in self.blocks:
            h = block(h, None)
        return self.norm(h)
