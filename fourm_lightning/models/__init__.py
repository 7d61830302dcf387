"""The 4M encoder-decoder as plain ``nn.Module``s: domains, blocks, the model (no Lightning)."""

from fourm_lightning.models.domains import (
    Domain,
    ImageTokenDomain,
    LoadContext,
    PixelDomain,
    SeqEmbDomain,
    TextDomain,
    VectorTokenDomain,
    domain_from_config,
)
from fourm_lightning.models.fourm import DomainLoss, Encoded, FourM, FourMOutput

__all__ = [
    "Domain",
    "DomainLoss",
    "Encoded",
    "FourM",
    "FourMOutput",
    "ImageTokenDomain",
    "LoadContext",
    "PixelDomain",
    "SeqEmbDomain",
    "TextDomain",
    "VectorTokenDomain",
    "domain_from_config",
]
