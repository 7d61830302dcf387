"""Shared fixtures of the tokenizer tests: one small trained text tokenizer per session."""

import pytest

from fourm_lightning.modalities.vocab import COLORS, SHAPE_CLASSES, SIZES
from fourm_lightning.tokenizers.text import TextTokenizer, default_word_tokens

RELATIONS = ("left of", "right of", "in front of", "behind", "next to")


def caption_corpus() -> list[str]:
    """A few hundred scene captions in the style of the built-in dataset (deterministic)."""
    colors, shapes = list(COLORS), list(SHAPE_CLASSES)
    texts = []
    for i in range(300):
        a, b = shapes[i % len(shapes)], shapes[(i * 7 + 3) % len(shapes)]
        ca, cb = colors[i % len(colors)], colors[(i * 3 + 1) % len(colors)]
        size = SIZES[i % len(SIZES)]
        relation = RELATIONS[i % len(RELATIONS)]
        texts.append(
            f"A {size} {ca} {a} is {relation} the {cb} {b}. "
            f"There are {i % 6 + 1} objects on the floor near the wall."
        )
        if i % 10 == 0:  # punctuation the decoder must put back: colons, semicolons, hyphens
            texts.append(f"From the left: a {ca} {a}, a {cb} {b}; a wood-grained floor.")
    return texts


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return caption_corpus()


@pytest.fixture(scope="session")
def text_tokenizer(corpus) -> TextTokenizer:
    # Default layout (64 sentinels, 1000 values per slot) plus a few hundred learned pieces.
    num_fixed = 4 + 64 + 4 * 1000 + len(default_word_tokens())
    return TextTokenizer.train(corpus, vocab_size=num_fixed + 300)
