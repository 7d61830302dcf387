"""Tokenizer cores: quantizers, ViT VQ-VAE, MLP VQ, the WordPiece text tokenizer and serializers.

The cores are plain PyTorch / Hugging Face ``tokenizers`` code without Lightning. The training layer
(``lit_*.py`` LightningModules, per-kind ``adapters``, ``metrics``, ``loading.load_tokenizer``)
imports Lightning, but only when one of its names is used. Names are imported lazily on first
access, so ``import fourm_lightning.tokenizers`` costs nothing until a name is used.

This package is ``fourm_lightning.tokenizers``, not a top-level ``tokenizers``, so it never shadows
Hugging Face's ``tokenizers`` library, which ``text.py`` uses.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fourm_lightning.tokenizers.adapters import (
        KindAdapter,
        default_adapter,
        register_adapter,
    )
    from fourm_lightning.tokenizers.lit_mlp_vq import VectorVQTokenizer
    from fourm_lightning.tokenizers.lit_text import TextModalityTokenizer, train_text_tokenizer
    from fourm_lightning.tokenizers.lit_vqvae import VQVAETokenizer
    from fourm_lightning.tokenizers.loading import ModalityTokenizer, load_tokenizer
    from fourm_lightning.tokenizers.mlp_vq import MLPVQ
    from fourm_lightning.tokenizers.quantizers import (
        CosineVQ,
        FSQQuantizer,
        Quantizer,
        QuantizerOutput,
        codebook_usage,
        dead_code_threshold,
    )
    from fourm_lightning.tokenizers.serializers import (
        BoxSerializer,
        MetadataSerializer,
        PaletteSerializer,
    )
    from fourm_lightning.tokenizers.text import TextTokenizer, default_word_tokens
    from fourm_lightning.tokenizers.vit_vqvae import ViTVQVAE

_LAZY: dict[str, str] = {
    "CosineVQ": "quantizers",
    "FSQQuantizer": "quantizers",
    "Quantizer": "quantizers",
    "QuantizerOutput": "quantizers",
    "codebook_usage": "quantizers",
    "dead_code_threshold": "quantizers",
    "ViTVQVAE": "vit_vqvae",
    "MLPVQ": "mlp_vq",
    "TextTokenizer": "text",
    "default_word_tokens": "text",
    "BoxSerializer": "serializers",
    "MetadataSerializer": "serializers",
    "PaletteSerializer": "serializers",
    "KindAdapter": "adapters",
    "default_adapter": "adapters",
    "register_adapter": "adapters",
    "VQVAETokenizer": "lit_vqvae",
    "VectorVQTokenizer": "lit_mlp_vq",
    "TextModalityTokenizer": "lit_text",
    "train_text_tokenizer": "lit_text",
    "ModalityTokenizer": "loading",
    "load_tokenizer": "loading",
}

__all__ = [
    "MLPVQ",
    "BoxSerializer",
    "CosineVQ",
    "FSQQuantizer",
    "KindAdapter",
    "MetadataSerializer",
    "ModalityTokenizer",
    "PaletteSerializer",
    "Quantizer",
    "QuantizerOutput",
    "TextModalityTokenizer",
    "TextTokenizer",
    "VQVAETokenizer",
    "VectorVQTokenizer",
    "ViTVQVAE",
    "codebook_usage",
    "dead_code_threshold",
    "default_adapter",
    "default_word_tokens",
    "load_tokenizer",
    "register_adapter",
    "train_text_tokenizer",
]


def __getattr__(name: str) -> Any:
    """Import a public name from its submodule on first access (PEP 562)."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
