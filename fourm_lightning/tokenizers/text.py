"""The shared text vocabulary: a WordPiece tokenizer with 4M's fixed layout of added tokens.

Every text-like modality (caption, boxes, metadata, palette) is written in this one vocabulary;
each modality still gets its own embedding and output head in the 4M model.

Id layout (``num_sentinels`` = k, ``num_values`` = N, both configurable)::

    0 [PAD]   1 [UNK]   2 [SOS]   3 [EOS]
    4 .. 4+k-1                      sentinels [S_0] .. [S_{k-1}]   (span masking)
    4+k + s*N + v                   number token "v{s}={v}", slot s in 0..3, value v in 0..N-1
    4+k+4N ..                       word tokens (class, colour, size names, structural words)
    ..  vocab_size-1                learned WordPiece pieces

Special tokens ([PAD], [UNK], [SOS], [EOS], sentinels) are matched on the raw text and dropped by
``decode(..., skip_special_tokens=True)``. Number and word tokens are ordinary (non-special) added
tokens matched as whole words after lowercasing, so "v0=12" and "cube" are always single tokens and
survive decoding.

Training is deterministic. Hugging Face's WordPiece trainer is not by itself: it numbers the
``##``-continuation symbols in hash-map order and uses those numbers to break ties between equally
frequent merges (huggingface/tokenizers#1794), so two runs on the same corpus can give different
vocabularies. ``TextTokenizer.train`` therefore registers every continuation symbol of the corpus,
sorted, before training; with all symbol ids fixed up front the merges are reproducible.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import (
    AddedToken,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)

from fourm_lightning.modalities.vocab import (
    COLORS,
    METADATA_RANGES,
    SEMSEG_CLASSES,
    SIZES,
)

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
SOS_TOKEN = "[SOS]"
EOS_TOKEN = "[EOS]"
BASIC_SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN, SOS_TOKEN, EOS_TOKEN)

#: Number of number-token slots ``v0=``, ``v1=``, ``v2=``, ``v3=`` (4M's box coordinate slots).
NUMBER_SLOTS = 4

#: Words the serializers and pseudo-labels use that should never be split into pieces:
#: structural words, then every closed vocabulary of the built-in dataset.
STRUCTURAL_WORDS: tuple[str, ...] = ("none", "box", "palette", "metadata")

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "text_tokenizer_config.json"
_FORMAT = "fourm_lightning.text_tokenizer"
_FORMAT_VERSION = 1

_NUMBER_RE = re.compile(r"v([0-9])=([0-9]+)")


def default_word_tokens() -> tuple[str, ...]:
    """The default whole-word tokens: classes, colours, sizes, structural words, metadata keys.

    Returns:
        Lowercase words in a stable order without duplicates.
    """
    words = (*SEMSEG_CLASSES, *COLORS, *SIZES, *STRUCTURAL_WORDS, *METADATA_RANGES)
    return tuple(dict.fromkeys(word.lower() for word in words))


def sentinel_token(index: int) -> str:
    """The text of sentinel ``index``: ``[S_{index}]``."""
    return f"[S_{index}]"


def number_token(slot: int, value: int) -> str:
    """The text of a number token: ``v{slot}={value}``."""
    return f"v{slot}={value}"


def parse_number_token(token: str) -> tuple[int, int] | None:
    """Split a number token into (slot, value).

    Args:
        token: any string.

    Returns:
        ``(slot, value)`` for a well-formed ``v{slot}={value}``, else None. Range checks against a
        vocabulary are the caller's business.
    """
    match = _NUMBER_RE.fullmatch(token)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2))


def fixed_tokens(
    num_sentinels: int, num_values: int, word_tokens: Sequence[str]
) -> tuple[list[str], list[str]]:
    """The tokens with fixed ids, split into special and ordinary ones.

    Args:
        num_sentinels: k.
        num_values: N values per number slot.
        word_tokens: whole-word tokens.

    Returns:
        ``(special, ordinary)``; ``special + ordinary`` is the id order 0..F-1.
    """
    special = [*BASIC_SPECIAL_TOKENS, *(sentinel_token(i) for i in range(num_sentinels))]
    numbers = [number_token(s, v) for s in range(NUMBER_SLOTS) for v in range(num_values)]
    return special, [*numbers, *word_tokens]


def _bert_normalizer() -> normalizers.Normalizer:
    return normalizers.BertNormalizer(lowercase=True)


def _bert_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.BertPreTokenizer()


class TextTokenizer:
    """WordPiece tokenizer with sentinels, number tokens and word tokens at fixed ids.

    Build one with ``TextTokenizer.train`` or ``TextTokenizer.load``; the constructor wraps an
    existing Hugging Face ``Tokenizer`` and checks that its ids follow the layout.

    Args:
        tokenizer: a Hugging Face tokenizer whose first ids are the fixed tokens.
        num_sentinels: k, sentinel tokens.
        num_values: N, values per number slot.
        word_tokens: the whole-word tokens, in id order.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        num_sentinels: int = 64,
        num_values: int = 1000,
        word_tokens: Sequence[str] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.num_sentinels = num_sentinels
        self.num_values = num_values
        self.word_tokens = tuple(default_word_tokens() if word_tokens is None else word_tokens)
        special, ordinary = fixed_tokens(num_sentinels, num_values, self.word_tokens)
        self._fixed = [*special, *ordinary]
        for expected_id, token in enumerate(self._fixed):
            actual = tokenizer.token_to_id(token)
            if actual != expected_id:
                raise ValueError(
                    f"tokenizer does not follow the fixed layout: {token!r} has id {actual}, "
                    f"expected {expected_id}"
                )
        self._number_offset = len(BASIC_SPECIAL_TOKENS) + num_sentinels

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        *,
        num_sentinels: int = 64,
        num_values: int = 1000,
        word_tokens: Sequence[str] | None = None,
        min_frequency: int = 0,
    ) -> TextTokenizer:
        """Learn WordPiece pieces from a corpus, after the fixed tokens.

        Deterministic: the same corpus and arguments give the same vocabulary (see module docs).

        Args:
            texts: natural-language training texts (e.g. captions); read once into memory.
            vocab_size: total vocabulary size (fixed tokens + learned pieces). The result has at
                most this many entries; fewer if the corpus has fewer distinct pieces.
            num_sentinels: k sentinel tokens (4M: 200; span masking needs one per span).
            num_values: N values per number slot (4M: 1000, i.e. round(x * 999) box coordinates).
            word_tokens: whole-word tokens (default ``default_word_tokens()``).
            min_frequency: pairs seen fewer times than this are never merged.

        Returns:
            The trained tokenizer.
        """
        words = tuple(default_word_tokens() if word_tokens is None else word_tokens)
        special, ordinary = fixed_tokens(num_sentinels, num_values, words)
        fixed = [*special, *ordinary]
        if len(set(fixed)) != len(fixed):
            raise ValueError("word_tokens repeat each other or a special/number token")
        for word in words:
            # Word tokens are matched after lowercasing, as whole words.
            if not word or word != word.lower() or any(char.isspace() for char in word):
                raise ValueError(f"word token {word!r} must be lowercase without whitespace")
        corpus = list(texts)
        if not all(isinstance(text, str) for text in corpus):
            raise TypeError("texts must be strings")
        if not corpus:
            raise ValueError("cannot train a text tokenizer on an empty corpus")

        normalizer, pre_tokenizer = _bert_normalizer(), _bert_pre_tokenizer()
        alphabet: set[str] = set()
        continuations: set[str] = set()
        for text in corpus:
            for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
                alphabet.update(word)
                continuations.update("##" + char for char in word[1:])
        learned_budget = vocab_size - len(fixed)
        minimum = len(alphabet) + len(continuations)
        if learned_budget < minimum:
            raise ValueError(
                f"vocab_size {vocab_size} leaves {learned_budget} learned pieces, fewer than the "
                f"{minimum} single characters of the corpus; use vocab_size >= "
                f"{len(fixed) + minimum}"
            )

        # Pre-registering the sorted continuation symbols as trainer "special tokens" fixes their
        # ids, which is what makes the trainer deterministic (module docstring).
        trainer_special = [UNK_TOKEN, *sorted(continuations)]
        fixed_set = set(fixed)
        trainer = trainers.WordPieceTrainer(
            # + 1 for [UNK], + len(words) because learned pieces equal to a word token are dropped.
            vocab_size=learned_budget + 1 + len(words),
            min_frequency=min_frequency,
            special_tokens=trainer_special,
            show_progress=False,
            continuing_subword_prefix="##",
        )
        scratch = Tokenizer(models.WordPiece(unk_token=UNK_TOKEN, continuing_subword_prefix="##"))
        scratch.normalizer = normalizer
        scratch.pre_tokenizer = pre_tokenizer
        scratch.train_from_iterator(corpus, trainer=trainer)
        learned_vocab = scratch.get_vocab(with_added_tokens=False)
        learned = [
            token
            for token, _ in sorted(learned_vocab.items(), key=lambda item: item[1])
            if token not in fixed_set
        ][:learned_budget]

        vocab = {token: i for i, token in enumerate([*fixed, *learned])}
        return cls(
            cls._assemble(vocab, special, ordinary),
            num_sentinels=num_sentinels,
            num_values=num_values,
            word_tokens=words,
        )

    @staticmethod
    def _assemble(vocab: dict[str, int], special: list[str], ordinary: list[str]) -> Tokenizer:
        tokenizer = Tokenizer(
            models.WordPiece(vocab=vocab, unk_token=UNK_TOKEN, continuing_subword_prefix="##")
        )
        tokenizer.normalizer = _bert_normalizer()
        tokenizer.pre_tokenizer = _bert_pre_tokenizer()
        tokenizer.decoder = decoders.WordPiece(prefix="##")
        # Both calls find the tokens already in the model vocabulary and keep those ids.
        tokenizer.add_special_tokens(
            [AddedToken(token, special=True, normalized=False) for token in special]
        )
        # single_word: "v0=12" inside "v0=123" or "cube" inside "cubes" must not match.
        tokenizer.add_tokens(
            [
                AddedToken(token, single_word=True, normalized=True, special=False)
                for token in ordinary
            ]
        )
        return tokenizer

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` and ``text_tokenizer_config.json`` into a directory.

        Args:
            path: directory, created if missing.
        """
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(directory / TOKENIZER_FILE))
        config = {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "num_sentinels": self.num_sentinels,
            "num_values": self.num_values,
            "word_tokens": list(self.word_tokens),
            "vocab_size": self.vocab_size,
        }
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> TextTokenizer:
        """Read a tokenizer written by ``save``.

        Args:
            path: the directory given to ``save``.

        Returns:
            The tokenizer; raises ``ValueError`` if the files disagree with each other.
        """
        directory = Path(path)
        config = json.loads((directory / CONFIG_FILE).read_text())
        if config.get("format") != _FORMAT:
            raise ValueError(f"{directory / CONFIG_FILE} is not a {_FORMAT} config")
        tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        loaded = cls(
            tokenizer,
            num_sentinels=int(config["num_sentinels"]),
            num_values=int(config["num_values"]),
            word_tokens=[str(word) for word in config["word_tokens"]],
        )
        if loaded.vocab_size != int(config["vocab_size"]):
            raise ValueError(
                f"{directory}: config says vocab_size {config['vocab_size']}, "
                f"tokenizer.json has {loaded.vocab_size}"
            )
        return loaded

    # -- vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Total number of ids (fixed tokens + learned pieces)."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def num_fixed_tokens(self) -> int:
        """F, the number of tokens with fixed ids (ids 0..F-1)."""
        return len(self._fixed)

    @property
    def pad_id(self) -> int:
        """Id of ``[PAD]`` (0)."""
        return 0

    @property
    def unk_id(self) -> int:
        """Id of ``[UNK]`` (1)."""
        return 1

    @property
    def sos_id(self) -> int:
        """Id of ``[SOS]`` (2)."""
        return 2

    @property
    def eos_id(self) -> int:
        """Id of ``[EOS]`` (3)."""
        return 3

    def sentinel_id(self, index: int) -> int:
        """Id of sentinel ``[S_{index}]``.

        Args:
            index: 0..k-1.

        Returns:
            ``4 + index``.
        """
        if not 0 <= index < self.num_sentinels:
            raise IndexError(f"sentinel {index} outside 0..{self.num_sentinels - 1}")
        return len(BASIC_SPECIAL_TOKENS) + index

    @property
    def sentinel_ids(self) -> range:
        """Ids of all sentinels, in order."""
        start = len(BASIC_SPECIAL_TOKENS)
        return range(start, start + self.num_sentinels)

    def number_id(self, slot: int, value: int) -> int:
        """Id of the number token ``v{slot}={value}``.

        Args:
            slot: 0..3.
            value: 0..N-1.

        Returns:
            ``4 + k + slot * N + value``.
        """
        if not 0 <= slot < NUMBER_SLOTS or not 0 <= value < self.num_values:
            raise IndexError(
                f"number token v{slot}={value} outside slots 0..{NUMBER_SLOTS - 1}, "
                f"values 0..{self.num_values - 1}"
            )
        return self._number_offset + slot * self.num_values + value

    def token_id(self, token: str) -> int:
        """Id of a token string (fixed token or learned piece).

        Args:
            token: exact token text, e.g. ``"cube"`` or ``"##s"``.

        Returns:
            Its id; raises ``KeyError`` if the vocabulary lacks it.
        """
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise KeyError(f"token {token!r} is not in the vocabulary")
        return token_id

    def id_to_token(self, token_id: int) -> str:
        """Token text of an id.

        Args:
            token_id: 0..vocab_size-1.

        Returns:
            The token string; raises ``IndexError`` for an unknown id.
        """
        token = self.tokenizer.id_to_token(token_id)
        if token is None:
            raise IndexError(f"id {token_id} outside the vocabulary of {self.vocab_size}")
        return token

    # -- encode / decode --------------------------------------------------------------------

    def encode(self, text: str, *, add_sos: bool = False, add_eos: bool = False) -> list[int]:
        """Tokenize one text.

        Args:
            text: any string; it is lowercased and split like BERT.
            add_sos: prepend ``[SOS]``.
            add_eos: append ``[EOS]`` (4M appends it to every caption).

        Returns:
            Token ids.
        """
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        return [self.sos_id] * add_sos + ids + [self.eos_id] * add_eos

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Tokenize many texts at once (parallel in the Rust library).

        Args:
            texts: strings.

        Returns:
            One id list per text.
        """
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        """Turn ids back into text (pieces joined, ``##`` continuations glued).

        Args:
            ids: token ids; ids outside the vocabulary are dropped.
            skip_special_tokens: drop [PAD], [UNK], [SOS], [EOS] and sentinels (number and word
                tokens are always kept).

        Returns:
            The lowercased text.
        """
        valid = [int(i) for i in ids if 0 <= int(i) < self.vocab_size]
        text = self.tokenizer.decode(valid, skip_special_tokens=skip_special_tokens)
        # The WordPiece decoder's clean-up glues . , ! ? to the previous word but not : or ;
        # ("left to right : a red cube", in 24% of the built-in captions), and it spaces out
        # hyphens inside words ("wood - grained"). Both are put back.
        text = _SPACE_BEFORE_COLON.sub(r"\1", text)
        return _SPACED_HYPHEN.sub(r"\1-", text)


_SPACE_BEFORE_COLON = re.compile(r" ([:;])")
_SPACED_HYPHEN = re.compile(r"(\w) - (?=\w)")

__all__ = [
    "BASIC_SPECIAL_TOKENS",
    "NUMBER_SLOTS",
    "STRUCTURAL_WORDS",
    "TextTokenizer",
    "default_word_tokens",
    "fixed_tokens",
    "number_token",
    "parse_number_token",
    "sentinel_token",
]
