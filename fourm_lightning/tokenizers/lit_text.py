"""Text tokenizer training from a shard dataset, and the text tokenizer behind the common API.

``train_text_tokenizer(data_dir, out_dir)`` reads every caption-like modality of the training
split (by kind, ``CaptionText``), adds the words the box serializer writes (class and colour
names) to the whole-word tokens, trains the shared WordPiece ``TextTokenizer`` and saves it.

``evaluate_text_tokenizer(tokenizer, data_dir)`` measures it on the validation texts: the share
that decode back exactly (after the BERT lower-casing), unknown tokens, and sequence lengths.

Run both as ``python -m fourm_lightning.tokenizers.lit_text --data_dir data/synth
--out_dir runs/tok_text`` (prints the evaluation as JSON).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fourm_lightning.modalities.kinds import CaptionText
from fourm_lightning.tokenizers.serializers import BoxSerializer
from fourm_lightning.tokenizers.text import TextTokenizer, default_word_tokens


def _dataset_texts(data_dir: str, split: str, modalities: list[str] | None) -> list[str]:
    """Every text of ``modalities`` (default: each ``CaptionText`` modality) in a split.

    Raises:
        ValueError: the dataset has no caption modality, or the split has no texts.
    """
    from fourm_lightning.datamodules.shards import iter_samples, read_manifest

    manifest = read_manifest(data_dir)
    if modalities is None:
        modalities = [n for n, s in manifest.specs.items() if isinstance(s.kind, CaptionText)]
    if not modalities:
        raise ValueError(f"{data_dir} has no caption modality to train a text tokenizer on")
    texts = [
        sample[name] for sample in iter_samples(data_dir, split, modalities) for name in modalities
    ]
    if not texts:
        raise ValueError(f"{data_dir}: split {split!r} has no texts in {modalities}")
    return texts


def train_text_tokenizer(
    data_dir: str,
    out_dir: str,
    vocab_size: int = 5000,
    split: str = "train",
    modalities: list[str] | None = None,
    num_sentinels: int = 64,
    num_values: int = 1000,
    min_frequency: int = 0,
) -> TextTokenizer:
    """Train the WordPiece text tokenizer on a dataset's captions and save it.

    Args:
        data_dir: dataset folder (``manifest.json`` + shards).
        out_dir: folder to write ``tokenizer.json`` and ``text_tokenizer_config.json`` into.
        vocab_size: total vocabulary (fixed tokens + learned pieces); about 4.1k ids are fixed
            with the default sentinels and number tokens.
        split: split whose texts are read.
        modalities: text modalities to read; None reads every ``CaptionText`` modality.
        num_sentinels: sentinel tokens (span masking needs one per span).
        num_values: values per number slot (box coordinates, metadata bins).
        min_frequency: pairs seen fewer times are never merged.

    Returns:
        The trained tokenizer (also saved in ``out_dir``).
    """
    texts = _dataset_texts(data_dir, split, modalities)
    # Serializer words become whole-word tokens so that "cube" or "purple" is never split.
    words = tuple(
        dict.fromkeys([*default_word_tokens(), *(w.lower() for w in BoxSerializer().words)])
    )
    tokenizer = TextTokenizer.train(
        texts,
        vocab_size,
        num_sentinels=num_sentinels,
        num_values=num_values,
        word_tokens=words,
        min_frequency=min_frequency,
    )
    tokenizer.save(out_dir)
    return tokenizer


def evaluate_text_tokenizer(
    tokenizer: TextTokenizer,
    data_dir: str,
    split: str = "val",
    modalities: list[str] | None = None,
) -> dict[str, float | int]:
    """Round-trip and length statistics of ``tokenizer`` on a split's caption-like texts.

    Args:
        tokenizer: a trained text tokenizer.
        data_dir: dataset folder.
        split: split whose texts are read.
        modalities: text modalities to read; None reads every ``CaptionText`` modality.

    Returns:
        ``texts`` (count), ``exact_round_trip`` (share whose ``decode(encode(t))`` equals the
        lower-cased ``t``), ``unk_tokens`` (count of ``[UNK]`` ids), ``mean_tokens`` and
        ``max_tokens`` (ids per text, without ``[SOS]``/``[EOS]``).
    """
    texts = _dataset_texts(data_dir, split, modalities)
    ids = tokenizer.encode_batch(texts)
    exact = sum(tokenizer.decode(i) == t.lower() for i, t in zip(ids, texts, strict=True))
    lengths = [len(i) for i in ids]
    return {
        "texts": len(texts),
        "exact_round_trip": exact / len(texts),
        "unk_tokens": sum(i.count(tokenizer.unk_id) for i in ids),
        "mean_tokens": sum(lengths) / len(lengths),
        "max_tokens": max(lengths),
    }


def main(
    data_dir: str,
    out_dir: str,
    vocab_size: int = 5000,
    num_sentinels: int = 64,
    num_values: int = 1000,
    eval_split: str = "val",
) -> dict[str, float | int]:
    """Train the text tokenizer on ``data_dir``'s training texts, save it, evaluate it.

    Args:
        data_dir: dataset folder.
        out_dir: where the tokenizer is saved.
        vocab_size: total vocabulary size.
        num_sentinels: sentinel tokens.
        num_values: values per number slot.
        eval_split: split the round trip is measured on.

    Returns:
        ``evaluate_text_tokenizer``'s figures plus ``vocab_size`` and ``train_seconds``.
    """
    import json
    import time

    start = time.perf_counter()
    tokenizer = train_text_tokenizer(
        data_dir, out_dir, vocab_size, num_sentinels=num_sentinels, num_values=num_values
    )
    seconds = time.perf_counter() - start
    report = {
        "vocab_size": tokenizer.vocab_size,
        "train_seconds": round(seconds, 1),
        **evaluate_text_tokenizer(tokenizer, data_dir, eval_split),
    }
    print(json.dumps(report))
    return report


class TextModalityTokenizer:
    """A ``TextTokenizer`` behind the common tokenizer API (batches of strings <-> id tensors).

    Args:
        tokenizer: the trained text tokenizer.
        modality: the modality name this tokenizer serves (for error messages).
        add_eos: append ``[EOS]`` to every text (4M does for captions).
        source: where it was loaded from, for error messages.
    """

    def __init__(
        self,
        tokenizer: TextTokenizer,
        modality: str = "caption",
        add_eos: bool = True,
        source: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.modality = modality
        self.add_eos = add_eos
        self.source = source

    @property
    def vocab_size(self) -> int:
        """Total number of ids."""
        return self.tokenizer.vocab_size

    def num_tokens(self, resolution: int | None = None) -> int | None:
        """None: texts have a variable number of tokens."""
        return None

    def encode(self, value: Sequence[str]) -> Tensor:
        """Tokenize a batch of texts.

        Args:
            value: B strings.

        Returns:
            (B, L) int64, padded with the ``[PAD]`` id to the longest text.
        """
        if isinstance(value, str) or not all(isinstance(v, str) for v in value):
            raise ValueError(
                f"modality {self.modality!r}: expected a list of strings"
                + (f" (tokenizer {self.source})" if self.source else "")
            )
        ids = [self.tokenizer.encode(text, add_eos=self.add_eos) for text in value]
        length = max((len(i) for i in ids), default=0)
        out = torch.full((len(ids), length), self.tokenizer.pad_id, dtype=torch.long)
        for row, item in enumerate(ids):
            out[row, : len(item)] = torch.tensor(item, dtype=torch.long)
        return out

    def decode(self, tokens: Tensor, reference: object = None) -> list[str]:
        """Texts of a (B, L) id tensor (padding and special tokens dropped)."""
        return [self.tokenizer.decode(row.tolist()) for row in tokens]


if __name__ == "__main__":
    from jsonargparse import CLI

    CLI(main, as_positional=False)


__all__ = ["TextModalityTokenizer", "evaluate_text_tokenizer", "train_text_tokenizer"]
