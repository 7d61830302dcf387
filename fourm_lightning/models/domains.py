"""Model domains: what the 4M model sees of a modality, and how it embeds, masks and predicts it.

A *domain* is one entry of the model's input/output vocabulary, e.g. ``tok_depth`` (depth as 8x8
tokens of a 1024-code tokenizer), ``rgb`` (RGB pixel patches, input only) or ``caption`` (text in
the shared WordPiece vocabulary). Domains are frozen, YAML-describable dataclasses; each class
knows, for its family:

- ``load``: a decoded token-dataset sample -> this domain's value (one crop of it);
- ``mask``: value + input/target budgets -> fixed-size ``{"tensor", "input_mask",
  "target_mask"}`` (numpy, in DataLoader workers);
- ``encoder_embedding`` / ``decoder_embedding``: the nn modules that turn those tensors into
  (content, position + modality embedding) pairs, and the decoder's output head.

Generic code (masking, model, LightningModule) only calls these methods. Adding a modality is a
YAML entry naming one of these classes; a new family is one new class.

Family            tensor per sample               positions         input  target
================  ==============================  ================  =====  ======
PixelDomain       float (C, H, W) normalised      2D sin-cos        yes    no
ImageTokenDomain  int64 (grid * grid,)            2D sin-cos        yes    yes
VectorTokenDomain int64 (length,)                 learned           yes    yes
TextDomain        int64 (2 * max_tokens,) packed  1D sin-cos        yes    yes (causal)
SeqEmbDomain      float (max_tokens, dim) + ids   1D sin-cos        yes    no
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from fourm_lightning.datamodules.masking import KeepScheme, image_masks, span_mask

MaskedValue = dict[str, np.ndarray]


class LoadContext:
    """What ``Domain.load`` may need besides the sample: raw specs and text tokenizers.

    Args:
        raw_specs: the token dataset's raw modalities (``TokenManifest.raw``).
        train: training (random chunk order for chunked sequences) or evaluation.
        rng: the generator of this sample.
        cache: loaded text tokenizers by path, shared across samples (loading one takes ~15 ms).
    """

    def __init__(
        self,
        raw_specs: Mapping[str, Any],
        train: bool,
        rng: np.random.Generator,
        cache: dict[str, Any] | None = None,
    ) -> None:
        self.raw_specs = raw_specs
        self.train = train
        self.rng = rng
        self._text: dict[str, Any] = {} if cache is None else cache

    def text_tokenizer(self, path: str) -> Any:
        """The ``TextTokenizer`` saved at ``path`` (loaded once per worker)."""
        if path not in self._text:
            from fourm_lightning.tokenizers.text import TextTokenizer

            self._text[path] = TextTokenizer.load(path)
        return self._text[path]


def sincos_1d(length: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """1D sin-cos position table: (length, dim), ``[sin(p w_j), cos(p w_j)]``."""
    if dim % 2 != 0:
        raise ValueError(f"1D sin-cos embedding needs an even width, got {dim}")
    half = dim // 2
    omega = 1.0 / temperature ** (torch.arange(half, dtype=torch.float32) / half)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * omega
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def _sincos_2d(grid: int, dim: int) -> Tensor:
    from fourm_lightning.tokenizers.layers import sincos_pos_embed_2d

    return sincos_pos_embed_2d(grid, grid, dim)


@dataclass(frozen=True)
class Domain(ABC):
    """Base of every domain. ``name`` is the batch key; ``source`` the dataset modality.

    Args:
        name: unique domain name (batch key, mixture key, head name), e.g. ``tok_depth``.
        source: the modality it is read from in a token dataset (default: ``name`` without a
            ``tok_`` prefix).
    """

    name: str
    source: str | None = None

    #: Whether the decoder can predict this domain.
    has_target: ClassVar[bool] = True
    #: Whether decoder targets attend causally (sequences) instead of bidirectionally.
    causal: ClassVar[bool] = False
    #: Whether inputs and targets share positions (then no position is both).
    image_like: ClassVar[bool] = False
    #: Whether the value is a tokenizer's output (``tok_<source>`` in a token dataset).
    tokenized: ClassVar[bool] = False

    @property
    def source_name(self) -> str:
        """The dataset modality this domain is read from."""
        if self.source:
            return self.source
        return self.name[4:] if self.name.startswith("tok_") else self.name

    @property
    @abstractmethod
    def max_tokens(self) -> int:
        """Token slots of one sample (the most tokens it can contribute)."""

    @abstractmethod
    def load(self, sample: Mapping[str, Any], crop: int, context: LoadContext) -> Any:
        """A decoded token-dataset sample -> this domain's value for crop ``crop``."""

    def input_capacity(self, value: Any) -> int:
        """Most input tokens ``value`` can provide."""
        return self.max_tokens

    def target_capacity(self, value: Any) -> int:
        """Most target tokens ``value`` can provide (before inputs are taken out)."""
        return self.max_tokens if self.has_target else 0

    @abstractmethod
    def mask(
        self,
        value: Any,
        num_input: int,
        num_target: int,
        rng: np.random.Generator,
        keep: KeepScheme = "random",
    ) -> MaskedValue:
        """Value + budgets -> ``{"tensor", "input_mask", "target_mask"}`` (fixed sizes)."""

    @abstractmethod
    def empty(self) -> MaskedValue:
        """A fully masked placeholder (no inputs, no targets) for a sample lacking this domain."""

    @abstractmethod
    def encoder_embedding(self, dim: int) -> nn.Module:
        """Module: batch tensors -> (content (B, L, D), position + modality emb (B, L, D))."""

    def decoder_embedding(self, dim: int) -> nn.Module | None:
        """Module giving decoder inputs and the output head (None: input-only domain)."""
        return None

    def tokenizer_vocab_size(self) -> int | None:
        """Vocabulary of the tokenizer (checkpoint, export or text folder) at ``tokenizer``."""
        from fourm_lightning.tokenizers.loading import load_tokenizer

        path = getattr(self, "tokenizer", None)
        return None if path is None else int(load_tokenizer(str(path)).vocab_size)

    def tokenizer_record(self) -> dict[str, Any] | None:
        """``{"path", "sha256", "vocab_size"}`` of this domain's tokenizer, checked.

        Returns None when the domain names no tokenizer, or names one that does not exist here
        (a model loaded on another machine keeps the records it was trained with).

        Raises:
            ValueError: the tokenizer's vocabulary differs from the domain's ``vocab_size``.
        """
        path = getattr(self, "tokenizer", None)
        if path is None or not Path(path).exists():
            return None
        from fourm_lightning.datamodules.shards import path_sha256

        vocab = self.tokenizer_vocab_size()
        expected = getattr(self, "vocab_size", None)
        if vocab != expected:
            raise ValueError(
                f"domain {self.name!r}: vocab_size {expected} but its tokenizer {path} has "
                f"{vocab} codes; set vocab_size: {vocab} or point at the right tokenizer"
            )
        return {"path": str(path), "sha256": path_sha256(Path(path)), "vocab_size": vocab}

    def detokenize(self, entry: Mapping[str, Tensor], context: Any) -> list[Any]:
        """A generated (or given) batch entry -> one sample-form modality value per sample.

        Args:
            entry: ``{"tensor", "input_mask", ...}`` of this domain, batch first.
            context: gives ``tokenizer(path)``, ``text_tokenizer(path)`` (each loaded once) and
                ``kind(source)`` (the data kind of a source modality).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be turned back into values")

    def to_config(self) -> dict[str, Any]:
        """``{"class_path", "init_args"}`` (how checkpoints and exports record domains)."""
        cls = type(self)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": asdict(self)}


def domain_from_config(config: Mapping[str, Any]) -> Domain:
    """Inverse of ``Domain.to_config``; only ``Domain`` subclasses can be named."""
    import importlib

    path = str(config.get("class_path", ""))
    module_name, _, class_name = path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None) if module_name else None
    if not (isinstance(cls, type) and issubclass(cls, Domain)):
        raise ValueError(f"{path!r} is not a Domain class")
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in config["init_args"].items()}
    return cls(**args)


# ----------------------------------------------------------------------------------------------
# Token grids and vectors
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TokenDomain(Domain):
    """Tokens of a fixed-length tokenizer output (image grid or vector), masked per position."""

    vocab_size: int = 1024
    tokenizer: str | None = None

    image_like: ClassVar[bool] = True
    tokenized: ClassVar[bool] = True

    def load(self, sample: Mapping[str, Any], crop: int, context: LoadContext) -> np.ndarray:
        """The tokens of crop ``crop``, flattened: (L,) int64."""
        tokens = sample[f"tok_{self.source_name}"][crop]
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if tokens.shape[0] != self.max_tokens:
            raise ValueError(
                f"domain {self.name!r}: {tokens.shape[0]} tokens, expected {self.max_tokens}"
            )
        if tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError(
                f"domain {self.name!r}: token ids outside 0..{self.vocab_size - 1} "
                f"(min {tokens.min()}, max {tokens.max()})"
            )
        return tokens

    def mask(
        self,
        value: np.ndarray,
        num_input: int,
        num_target: int,
        rng: np.random.Generator,
        keep: KeepScheme = "random",
    ) -> MaskedValue:
        input_mask, target_mask = image_masks(self.max_tokens, num_input, num_target, rng)
        return {"tensor": value, "input_mask": input_mask, "target_mask": target_mask}

    def empty(self) -> MaskedValue:
        n = self.max_tokens
        return {
            "tensor": np.zeros(n, np.int64),
            "input_mask": np.zeros(n, bool),
            "target_mask": np.zeros(n, bool),
        }

    def positions(self, dim: int) -> tuple[Tensor, bool]:
        """(L, D) position table and whether it is learned."""
        raise NotImplementedError

    @property
    def token_shape(self) -> tuple[int, ...]:
        """Shape of one sample's tokens as the tokenizer gives and takes them."""
        return (self.max_tokens,)

    def detokenize(self, entry: Mapping[str, Tensor], context: Any) -> list[Any]:
        """Tokens (B, L) -> the tokenizer's decoded maps or vectors, one per sample."""
        if self.tokenizer is None:
            raise ValueError(f"domain {self.name!r} names no tokenizer to decode its tokens")
        tokens = entry["tensor"].reshape(-1, *self.token_shape)
        with torch.no_grad():
            return list(context.tokenizer(self.tokenizer).decode(tokens).cpu())

    def encoder_embedding(self, dim: int) -> nn.Module:
        table, learned = self.positions(dim)
        return TokenEncoderEmbedding(self.vocab_size, dim, table, learned)

    def decoder_embedding(self, dim: int) -> nn.Module:
        table, learned = self.positions(dim)
        return TokenDecoderEmbedding(self.vocab_size, dim, table, learned)


@dataclass(frozen=True)
class ImageTokenDomain(_TokenDomain):
    """A ``grid x grid`` token map of an image tokenizer (RGB, depth, normals, semseg, edges).

    Args:
        name: domain name, e.g. ``tok_depth``.
        source: dataset modality (default: ``name`` without ``tok_``).
        vocab_size: codebook size of the tokenizer.
        tokenizer: the tokenizer checkpoint (checked and hashed at model construction).
        grid: tokens per side.
    """

    grid: int = 8

    @property
    def max_tokens(self) -> int:  # noqa: D102
        return self.grid * self.grid

    @property
    def token_shape(self) -> tuple[int, ...]:  # noqa: D102
        return (self.grid, self.grid)

    def positions(self, dim: int) -> tuple[Tensor, bool]:  # noqa: D102
        return _sincos_2d(self.grid, dim), False


@dataclass(frozen=True)
class VectorTokenDomain(_TokenDomain):
    """A fixed-length token vector (e.g. an MLP-VQ of a global vector); learned positions.

    Args:
        name: domain name, e.g. ``tok_camera``.
        source: dataset modality.
        vocab_size: codebook size.
        tokenizer: the tokenizer checkpoint.
        length: tokens per sample.
    """

    length: int = 8

    @property
    def max_tokens(self) -> int:  # noqa: D102
        return self.length

    def positions(self, dim: int) -> tuple[Tensor, bool]:  # noqa: D102
        return torch.zeros(self.length, dim), True


# ----------------------------------------------------------------------------------------------
# Pixels
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PixelDomain(Domain):
    """Image pixels cut into patches, an input only (4M's RGB input).

    Args:
        name: domain name, e.g. ``rgb``.
        source: dataset modality (a ``RGBImage``-like kind kept raw in the token dataset).
        image_size: side in pixels.
        patch_size: patch side in pixels.
        channels: channels.
        mean: per-channel mean (0..1 scale) subtracted before the patch projection.
        std: per-channel std (0..1 scale).
    """

    image_size: int = 64
    patch_size: int = 8
    channels: int = 3
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    has_target: ClassVar[bool] = False
    image_like: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"domain {self.name!r}: image_size {self.image_size} is not a multiple of "
                f"patch_size {self.patch_size}"
            )

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def max_tokens(self) -> int:  # noqa: D102
        return self.grid * self.grid

    def normalize(self, image: np.ndarray | Tensor) -> np.ndarray:
        """uint8 (H, W, C) or (C, H, W) -> normalised float32 (C, H, W), checking the size."""
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[-1] == self.channels and array.shape[0] != self.channels:
            array = array.transpose(2, 0, 1)
        if array.shape != (self.channels, self.image_size, self.image_size):
            raise ValueError(
                f"domain {self.name!r}: image of shape {tuple(np.asarray(image).shape)}, "
                f"expected {self.image_size}x{self.image_size} with {self.channels} channels"
            )
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        return ((array.astype(np.float32) / 255.0 - mean) / std).astype(np.float32)

    def detokenize(self, entry: Mapping[str, Tensor], context: Any) -> list[Any]:
        """Normalised pixels (B, C, H, W) -> uint8 images (C, H, W), one per sample."""
        mean = torch.tensor(self.mean)[:, None, None]
        std = torch.tensor(self.std)[:, None, None]
        images = ((entry["tensor"].float().cpu() * std + mean) * 255).round().clamp(0, 255)
        return list(images.to(torch.uint8))

    def load(self, sample: Mapping[str, Any], crop: int, context: LoadContext) -> np.ndarray:
        """Crop ``crop`` of the raw image, normalised: (C, H, W) float32."""
        value = sample[self.source_name]
        return self.normalize(value[crop] if isinstance(value, list) else value)

    def mask(  # noqa: D102
        self,
        value: np.ndarray,
        num_input: int,
        num_target: int,
        rng: np.random.Generator,
        keep: KeepScheme = "random",
    ) -> MaskedValue:
        input_mask, target_mask = image_masks(self.max_tokens, num_input, 0, rng)
        return {"tensor": value, "input_mask": input_mask, "target_mask": target_mask}

    def empty(self) -> MaskedValue:  # noqa: D102
        n = self.max_tokens
        return {
            "tensor": np.zeros((self.channels, self.image_size, self.image_size), np.float32),
            "input_mask": np.zeros(n, bool),
            "target_mask": np.zeros(n, bool),
        }

    def encoder_embedding(self, dim: int) -> nn.Module:  # noqa: D102
        return PixelEncoderEmbedding(
            self.patch_size, self.channels, dim, _sincos_2d(self.grid, dim)
        )


# ----------------------------------------------------------------------------------------------
# Text sequences
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextDomain(Domain):
    """A sequence in the shared WordPiece vocabulary (caption, boxes, metadata, palette).

    The packed tensor holds the input ids at ``[0 : len_in]`` and the target ids at
    ``[max_tokens : max_tokens + len_tgt]`` (``[PAD]`` = 0 elsewhere); positions restart at 0 in
    each half, and the sentinels tie the halves together.

    Args:
        name: domain name, e.g. ``caption``.
        source: dataset modality, a kind with ``text_chunks`` (caption, boxes, ...).
        vocab_size: size of the text vocabulary.
        tokenizer: the ``TextTokenizer`` folder.
        max_tokens: most tokens of the sequence, ``[EOS]`` included (longer ones are cut).
        chunked: mask whole chunks (e.g. metadata entries) instead of single tokens; chunks
            are shuffled in training and cut only at chunk boundaries.
    """

    vocab_size: int = 30000
    tokenizer: str | None = None
    max_tokens: int = 64
    chunked: bool = False

    causal: ClassVar[bool] = True

    def units(
        self, chunks: list[str], tokenizer: Any, rng: np.random.Generator | None
    ) -> list[np.ndarray]:
        """Text chunks -> masking units (token arrays) ending with ``[EOS]``, cut to fit."""
        if rng is not None and self.chunked:
            chunks = [chunks[i] for i in rng.permutation(len(chunks))]
        room = self.max_tokens - 1  # [EOS] always fits
        units: list[np.ndarray] = []
        for chunk in chunks:
            ids = np.asarray(tokenizer.encode(chunk), dtype=np.int64)
            if self.chunked:
                if len(ids) > room:
                    break
                units.append(ids)
            else:
                units.extend(ids[:room, None])
            room -= min(len(ids), room)
            if room <= 0:
                break
        units.append(np.array([tokenizer.eos_id], dtype=np.int64))
        return units

    def load(self, sample: Mapping[str, Any], crop: int, context: LoadContext) -> dict[str, Any]:
        """``{"units": list of int arrays, "sentinels": int array}`` for crop ``crop``."""
        if self.tokenizer is None:
            raise ValueError(f"domain {self.name!r} needs a text tokenizer folder (tokenizer:)")
        spec = context.raw_specs.get(self.source_name)
        if spec is None:
            raise ValueError(f"domain {self.name!r}: the dataset has no {self.source_name!r}")
        value = sample[self.source_name]
        if spec.kind.spatial:
            value = value[crop]
        # The vocabulary was checked once (TokenDataModule.check_domains), not per sample.
        tokenizer = context.text_tokenizer(self.tokenizer)
        chunks = spec.kind.text_chunks(value)
        units = self.units(chunks, tokenizer, context.rng if context.train else None)
        return {"units": units, "sentinels": np.asarray(tokenizer.sentinel_ids, np.int64)}

    def encode_text(self, text: str, tokenizer: Any) -> Tensor:
        """A (possibly partial) text -> the packed (2 * max_tokens,) ids, its input half filled.

        Text with sentinels (``"a red sphere [S_1]"``) is kept as written, so generation fills
        the sentinels; a text without any ends with ``[EOS]``.

        Raises:
            ValueError: the text needs more tokens than ``max_tokens``.
        """
        ids = list(tokenizer.encode(text))
        sentinels = set(tokenizer.sentinel_ids)
        if not any(i in sentinels for i in ids):
            ids.append(tokenizer.eos_id)
        if len(ids) > self.max_tokens:
            raise ValueError(
                f"{self.name} text of {len(ids)} tokens is longer than the modality allows "
                f"(max_tokens {self.max_tokens}): {text[:60]!r}"
            )
        return self.pack(ids)

    def pack(self, ids: Sequence[int]) -> Tensor:
        """Input ids (at most ``max_tokens``) -> the packed (2 * max_tokens,) tensor."""
        if len(ids) > self.max_tokens:
            raise ValueError(f"{self.name}: {len(ids)} ids exceed max_tokens {self.max_tokens}")
        out = torch.zeros(2 * self.max_tokens, dtype=torch.long)
        out[: len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        return out

    def detokenize(self, entry: Mapping[str, Tensor], context: Any) -> list[Any]:
        """Input-half ids -> text -> the data kind's value (``kind.from_text``), per sample."""
        tokenizer = context.text_tokenizer(self.tokenizer)
        kind = context.kind(self.source_name)
        out = []
        for ids, valid in zip(entry["tensor"], entry["input_mask"], strict=True):
            text = tokenizer.decode(ids[: self.max_tokens][valid[: self.max_tokens]].tolist())
            out.append(kind.to_tensor(kind.from_text(text)))
        return out

    def input_capacity(self, value: dict[str, Any]) -> int:  # noqa: D102
        return int(sum(len(u) for u in value["units"]))

    def target_capacity(self, value: dict[str, Any]) -> int:
        """All tokens plus two sentinels (keep nothing: ``S1 <all> S2``), at most max_tokens."""
        return min(self.max_tokens, self.input_capacity(value) + 2)

    def mask(  # noqa: D102
        self,
        value: dict[str, Any],
        num_input: int,
        num_target: int,
        rng: np.random.Generator,
        keep: KeepScheme = "random",
    ) -> MaskedValue:
        # sentinel_ids starts at S_0; 4M numbers spans from S_1.
        sentinels = value["sentinels"][1:]
        input_ids, target_ids = span_mask(
            value["units"], num_input, num_target, sentinels, keep, rng
        )
        out = self.empty()
        n = self.max_tokens
        out["tensor"][: len(input_ids)] = input_ids
        out["input_mask"][: len(input_ids)] = True
        out["tensor"][n : n + len(target_ids)] = target_ids
        out["target_mask"][n : n + len(target_ids)] = True
        return out

    def empty(self) -> MaskedValue:  # noqa: D102
        n = 2 * self.max_tokens
        return {
            "tensor": np.zeros(n, np.int64),
            "input_mask": np.zeros(n, bool),
            "target_mask": np.zeros(n, bool),
        }

    def encoder_embedding(self, dim: int) -> nn.Module:  # noqa: D102
        return SequenceEncoderEmbedding(self.vocab_size, dim, self.max_tokens)

    def decoder_embedding(self, dim: int) -> nn.Module:  # noqa: D102
        return SequenceDecoderEmbedding(self.vocab_size, dim, self.max_tokens)


# ----------------------------------------------------------------------------------------------
# Continuous sequence embeddings (input only)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeqEmbDomain(Domain):
    """A sequence of continuous vectors (e.g. T5 or sentence-encoder states), input only.

    Masked like text, position by position: each dropped run becomes one learned sentinel
    vector (the original used zero vectors). The tensor is (max_tokens, embed_dim) float plus
    ``sentinel`` (max_tokens,) int: 0 for a vector slot, i for sentinel S_i.

    Args:
        name: domain name.
        source: dataset modality (a ``SequenceEmbedding`` kind: (L, E) float).
        embed_dim: E, the vector size.
        max_tokens: most positions.
        num_sentinels: learned sentinel vectors.
    """

    embed_dim: int = 384
    max_tokens: int = 64
    num_sentinels: int = 64

    has_target: ClassVar[bool] = False

    def load(self, sample: Mapping[str, Any], crop: int, context: LoadContext) -> np.ndarray:
        """(L, E) float32, cut to ``max_tokens`` rows."""
        value = np.asarray(sample[self.source_name], dtype=np.float32)
        if value.ndim != 2 or value.shape[1] != self.embed_dim:
            raise ValueError(
                f"domain {self.name!r}: embedding of shape {value.shape}, expected (L, "
                f"{self.embed_dim})"
            )
        return value[: self.max_tokens]

    def input_capacity(self, value: np.ndarray) -> int:  # noqa: D102
        return int(value.shape[0])

    def mask(  # noqa: D102
        self,
        value: np.ndarray,
        num_input: int,
        num_target: int,
        rng: np.random.Generator,
        keep: KeepScheme = "random",
    ) -> MaskedValue:
        # Span-mask row indices shifted by one (0 marks "no row"); negative ids are sentinels.
        rows = [np.array([i + 1]) for i in range(value.shape[0])]
        sentinels = -np.arange(1, self.num_sentinels + 1)
        input_ids, _ = span_mask(rows, num_input, 0, sentinels, keep, rng)
        out = self.empty()
        is_row = input_ids > 0
        out["tensor"][: len(input_ids)][is_row] = value[input_ids[is_row] - 1]
        out["sentinel"][: len(input_ids)] = np.where(is_row, 0, -input_ids)
        out["input_mask"][: len(input_ids)] = True
        return out

    def empty(self) -> MaskedValue:  # noqa: D102
        n = self.max_tokens
        return {
            "tensor": np.zeros((n, self.embed_dim), np.float32),
            "sentinel": np.zeros(n, np.int64),
            "input_mask": np.zeros(n, bool),
            "target_mask": np.zeros(n, bool),
        }

    def encoder_embedding(self, dim: int) -> nn.Module:  # noqa: D102
        return SeqEmbEncoderEmbedding(self.embed_dim, dim, self.max_tokens, self.num_sentinels)


# ----------------------------------------------------------------------------------------------
# Embedding modules
# ----------------------------------------------------------------------------------------------


class _Embedding(nn.Module):
    """Holds a position table (buffer, or parameter when learned) and a modality embedding."""

    def __init__(self, dim: int, positions: Tensor, learned: bool = False) -> None:
        super().__init__()
        if learned:
            self.pos_emb = nn.Parameter(positions.clone())
            nn.init.normal_(self.pos_emb, std=0.02)
        else:
            self.register_buffer("pos_emb", positions, persistent=False)
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.normal_(self.mod_emb, std=0.02)

    def emb(self, batch: int) -> Tensor:
        """(B, L, D) positions + modality embedding."""
        return (self.pos_emb[None] + self.mod_emb).expand(batch, -1, -1)


class TokenEncoderEmbedding(_Embedding):
    """Token ids -> (content, emb); ``forward(tensor (B, L)) -> (B, L, D), (B, L, D)``."""

    def __init__(self, vocab_size: int, dim: int, positions: Tensor, learned: bool = False) -> None:
        super().__init__(dim, positions, learned)
        self.token_emb = nn.Embedding(vocab_size, dim)

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        ids = batch["tensor"].reshape(batch["tensor"].shape[0], -1)
        return self.token_emb(ids), self.emb(ids.shape[0])


class PixelEncoderEmbedding(_Embedding):
    """Pixels -> patch content; ``forward(tensor (B, C, H, W)) -> (B, L, D), (B, L, D)``."""

    def __init__(self, patch_size: int, channels: int, dim: int, positions: Tensor) -> None:
        super().__init__(dim, positions)
        self.patch_size = patch_size
        self.proj = nn.Linear(patch_size * patch_size * channels, dim, bias=False)

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        p = self.patch_size
        patches = rearrange(batch["tensor"], "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)
        return self.proj(patches), self.emb(patches.shape[0])


class SequenceEncoderEmbedding(_Embedding):
    """Packed text ids -> (content, emb); the input half's positions are 0..L-1."""

    def __init__(self, vocab_size: int, dim: int, max_tokens: int) -> None:
        table = sincos_1d(max_tokens, dim)
        super().__init__(dim, torch.cat([table, table]))
        self.token_emb = nn.Embedding(vocab_size, dim)

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        ids = batch["tensor"]
        return self.token_emb(ids), self.emb(ids.shape[0])


class SeqEmbEncoderEmbedding(_Embedding):
    """Continuous vectors (+ learned sentinels) -> (content, emb)."""

    def __init__(self, embed_dim: int, dim: int, max_tokens: int, num_sentinels: int) -> None:
        super().__init__(dim, sincos_1d(max_tokens, dim))
        self.proj = nn.Linear(embed_dim, dim, bias=False)
        self.sentinel_emb = nn.Embedding(num_sentinels + 1, dim)

    def forward(self, batch: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        sentinel = batch["sentinel"]
        content = torch.where(
            (sentinel > 0)[..., None], self.sentinel_emb(sentinel), self.proj(batch["tensor"])
        )
        return content, self.emb(sentinel.shape[0])


class DecoderInputs(dict):
    """What a decoder embedding gives the model: content, emb, targets, valid (all (B, L, ...)).

    ``content`` is None where the model fills in its ``mask_token`` (image-like targets).
    """


class TokenDecoderEmbedding(_Embedding):
    """Image-like targets: the decoder input is the mask token at each target position.

    ``forward(batch) -> DecoderInputs`` with ``targets`` = the ids and ``valid`` = target_mask;
    ``head`` maps decoder outputs (n, D) to logits (n, V).
    """

    def __init__(self, vocab_size: int, dim: int, positions: Tensor, learned: bool = False) -> None:
        super().__init__(dim, positions, learned)
        self.head = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, batch: Mapping[str, Tensor]) -> DecoderInputs:
        ids = batch["tensor"].reshape(batch["tensor"].shape[0], -1)
        return DecoderInputs(
            content=None, emb=self.emb(ids.shape[0]), targets=ids, valid=batch["target_mask"]
        )


class SequenceDecoderEmbedding(_Embedding):
    """Sequence targets with teacher forcing: token t is the input that predicts token t+1.

    A position predicts only when it and its successor are targets, so a target span of n tokens
    gives n - 1 predictions (the first sentinel is never predicted: it is given).
    """

    def __init__(self, vocab_size: int, dim: int, max_tokens: int) -> None:
        table = sincos_1d(max_tokens, dim)
        super().__init__(dim, torch.cat([table, table]))
        self.token_emb = nn.Embedding(vocab_size, dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, batch: Mapping[str, Tensor]) -> DecoderInputs:
        ids, target_mask = batch["tensor"], batch["target_mask"]
        next_ids = torch.cat([ids[:, 1:], torch.zeros_like(ids[:, :1])], dim=1)
        next_is_target = torch.cat([target_mask[:, 1:], torch.zeros_like(target_mask[:, :1])], 1)
        return DecoderInputs(
            content=self.token_emb(ids),
            emb=self.emb(ids.shape[0]),
            targets=next_ids,
            valid=target_mask & next_is_target,
        )


__all__ = [
    "Domain",
    "ImageTokenDomain",
    "LoadContext",
    "PixelDomain",
    "SeqEmbDomain",
    "TextDomain",
    "VectorTokenDomain",
    "domain_from_config",
    "sincos_1d",
]
