"""The tokenizer API every family implements, and ``load_tokenizer`` for self-describing files.

``load_tokenizer(path)`` reads, without guessing from state-dict keys:

- a Lightning checkpoint (``.ckpt``): its ``tokenizer_class`` entry names the class, whose
  ``load_from_checkpoint`` rebuilds it (``torch.load(weights_only=True)``: no unpickling of code);
- an export folder (``config.json`` + ``model.safetensors``, written by ``export``);
- a text tokenizer folder (``tokenizer.json`` + ``text_tokenizer_config.json``).

Only subclasses of ``TokenizerModule`` defined in ``fourm_lightning`` (or already imported) can be
named by a file, so a file from elsewhere cannot make this import and run arbitrary code.
"""

from __future__ import annotations

import importlib
import json
import pickle
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from fourm_lightning.tokenizers.lit_base import (
    CONFIG_FILE,
    TOKENIZER_FORMAT,
    TOKENIZER_FORMAT_VERSION,
    WEIGHTS_FILE,
    TokenizerModule,
)


@runtime_checkable
class ModalityTokenizer(Protocol):
    """What every tokenizer offers, whatever its family.

    - ``encode(value)``: a modality's batch value -> int64 tokens. Image-like maps give
      (B, H/p, W/p), global vectors (B, T), texts (B, L) padded.
    - ``decode(tokens)``: the inverse, back to the modality's batch form.
    - ``vocab_size``: number of distinct token ids.
    - ``num_tokens(resolution)``: tokens per sample at a resolution (None when variable).
    """

    @property
    def vocab_size(self) -> int:
        """Number of distinct token ids."""
        ...

    def encode(self, value: Any) -> Tensor:
        """Batch value -> int64 tokens."""
        ...

    def decode(self, tokens: Tensor) -> Any:
        """Tokens -> batch value."""
        ...

    def num_tokens(self, resolution: int) -> int | None:
        """Tokens per sample at ``resolution``."""
        ...


def _tokenizer_class(class_path: Any, file: Path) -> type[TokenizerModule]:
    if not isinstance(class_path, str) or "." not in class_path:
        raise ValueError(f"{file}: invalid tokenizer class {class_path!r}")
    module_name, _, name = class_path.rpartition(".")
    cls = None
    if module_name == "fourm_lightning" or module_name.startswith("fourm_lightning."):
        cls = getattr(importlib.import_module(module_name), name, None)
    else:
        # Outside this package only classes the caller has already imported are accepted.
        cls = next(
            (
                c
                for c in _subclasses(TokenizerModule)
                if f"{c.__module__}.{c.__qualname__}" == class_path
            ),
            None,
        )
    if not (isinstance(cls, type) and issubclass(cls, TokenizerModule)):
        raise ValueError(
            f"{file}: {class_path!r} is not a known tokenizer class (import its module first if it "
            "lives outside fourm_lightning)"
        )
    return cls


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def _load_checkpoint(path: Path, map_location: str, weights_only: bool) -> TokenizerModule:
    try:
        raw = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: the checkpoint holds pickled Python objects, which are not loaded by default "
            "(they can run code). Checkpoints of tokenizers built by the CLI or with "
            "`from_config` hold plain data only; pass weights_only=False only for a file you "
            f"trust. ({str(error).splitlines()[0]})"
        ) from error
    if not isinstance(raw, dict) or "tokenizer_class" not in raw:
        raise ValueError(
            f"{path}: not a fourm_lightning tokenizer checkpoint (no 'tokenizer_class' entry)"
        )
    cls = _tokenizer_class(raw["tokenizer_class"], path)
    del raw
    return cls.load_from_checkpoint(path, map_location=map_location, weights_only=weights_only)


def _load_export(directory: Path, map_location: str) -> TokenizerModule:
    from safetensors.torch import load_file

    config_file = directory / CONFIG_FILE
    config = json.loads(config_file.read_text(encoding="utf-8"))
    fmt = config.get("format") or {}
    if (
        fmt.get("name") != TOKENIZER_FORMAT
        or int(fmt.get("version", 99)) > TOKENIZER_FORMAT_VERSION
    ):
        raise ValueError(
            f"{config_file}: not a {TOKENIZER_FORMAT} v{TOKENIZER_FORMAT_VERSION} export"
        )
    cls = _tokenizer_class(config.get("class_path"), config_file)
    module = cls.from_config(config["init_args"])
    state = load_file(str(directory / WEIGHTS_FILE), device=map_location)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(
            f"{directory / WEIGHTS_FILE}: weights do not fit {config['class_path']} as configured "
            f"in {config_file}: {error}"
        ) from error
    return module.to(map_location)


def load_tokenizer(
    path: str | Path,
    *,
    modality: str | None = None,
    expected_vocab_size: int | None = None,
    map_location: str = "cpu",
    weights_only: bool = True,
) -> ModalityTokenizer:
    """Load any tokenizer from a self-describing file or folder, in eval mode.

    Args:
        path: a ``.ckpt`` file, an export folder, or a text tokenizer folder.
        modality: the modality the caller wants tokenized; checked against the file's.
        expected_vocab_size: the vocabulary the caller was built for (e.g. a 4M model's
            embedding size); a different size is an error.
        map_location: device of the loaded weights.
        weights_only: refuse pickled Python objects in checkpoints (keep True for files from
            elsewhere).

    Returns:
        The tokenizer (a ``TokenizerModule`` or a ``TextModalityTokenizer``).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: an unknown format, or a modality or vocabulary mismatch (names the file).
    """
    from fourm_lightning.tokenizers.lit_text import TextModalityTokenizer
    from fourm_lightning.tokenizers.text import CONFIG_FILE as TEXT_CONFIG
    from fourm_lightning.tokenizers.text import TextTokenizer

    path = Path(path)
    tokenizer: Any
    if path.is_file():
        tokenizer = _load_checkpoint(path, map_location, weights_only)
    elif (path / CONFIG_FILE).is_file():
        tokenizer = _load_export(path, map_location)
    elif (path / TEXT_CONFIG).is_file():
        tokenizer = TextModalityTokenizer(
            TextTokenizer.load(path), modality=modality or "caption", source=str(path)
        )
    elif path.exists():
        raise ValueError(
            f"{path}: not a tokenizer (expected a .ckpt file, an export folder with {CONFIG_FILE}, "
            f"or a text tokenizer folder with {TEXT_CONFIG})"
        )
    else:
        raise FileNotFoundError(f"no tokenizer at {path}")

    if isinstance(tokenizer, TokenizerModule):
        tokenizer.eval()
        tokenizer.source = str(path)
        name = tokenizer.spec.name
    else:
        name = tokenizer.modality
    if modality is not None and name != modality:
        raise ValueError(f"{path} is a tokenizer for modality {name!r}, not {modality!r}")
    if expected_vocab_size is not None and tokenizer.vocab_size != expected_vocab_size:
        raise ValueError(
            f"vocabulary mismatch for modality {name!r}: {path} has vocab_size "
            f"{tokenizer.vocab_size}, expected {expected_vocab_size}"
        )
    return tokenizer


__all__ = ["ModalityTokenizer", "load_tokenizer"]
