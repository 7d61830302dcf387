"""Text tokenizer: fixed id layout, single-token guarantees, round trips, save/load, determinism."""

import json

import pytest

from fourm_lightning.modalities.vocab import COLORS, SHAPE_CLASSES
from fourm_lightning.tokenizers.serializers import BoxSerializer
from fourm_lightning.tokenizers.text import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    TextTokenizer,
    default_word_tokens,
    parse_number_token,
)


def test_special_ids_are_at_fixed_positions(text_tokenizer):
    tok = text_tokenizer
    assert (tok.pad_id, tok.unk_id, tok.sos_id, tok.eos_id) == (0, 1, 2, 3)
    for token, token_id in [("[PAD]", 0), ("[UNK]", 1), ("[SOS]", 2), ("[EOS]", 3)]:
        assert tok.token_id(token) == token_id
        assert tok.id_to_token(token_id) == token
    assert tok.sentinel_id(0) == 4 == tok.token_id("[S_0]")
    assert tok.sentinel_id(63) == 67 == tok.token_id("[S_63]")
    assert list(tok.sentinel_ids) == list(range(4, 68))
    assert tok.number_id(0, 0) == 68 == tok.token_id("v0=0")
    assert tok.number_id(1, 0) == 68 + 1000 == tok.token_id("v1=0")
    assert tok.number_id(3, 999) == 68 + 4000 - 1 == tok.token_id("v3=999")
    words = default_word_tokens()
    assert tok.token_id(words[0]) == 68 + 4000
    assert tok.num_fixed_tokens == 68 + 4000 + len(words)
    # the tiny corpus runs out of merges before the 300 requested pieces
    assert tok.num_fixed_tokens < tok.vocab_size == len(tok) <= tok.num_fixed_tokens + 300
    with pytest.raises(IndexError):
        tok.sentinel_id(64)
    with pytest.raises(IndexError):
        tok.number_id(4, 0)
    with pytest.raises(IndexError):
        tok.number_id(0, 1000)


@pytest.mark.parametrize("slot", [0, 1, 2, 3])
@pytest.mark.parametrize("value", [0, 7, 42, 500, 999])
def test_number_tokens_are_single_tokens(text_tokenizer, slot, value):
    assert text_tokenizer.encode(f"v{slot}={value}") == [text_tokenizer.number_id(slot, value)]


@pytest.mark.parametrize("word", [*SHAPE_CLASSES, *COLORS, "floor", "wall", "small", "none"])
def test_word_tokens_are_single_tokens(text_tokenizer, word):
    assert text_tokenizer.encode(word) == [text_tokenizer.token_id(word)]
    assert text_tokenizer.encode(word.upper()) == [text_tokenizer.token_id(word)]


@pytest.mark.parametrize("index", [0, 1, 17, 63])
def test_sentinels_are_single_tokens(text_tokenizer, index):
    ids = text_tokenizer.encode(f"a red [S_{index}] cube")
    assert text_tokenizer.sentinel_id(index) in ids
    assert len(ids) == 4


def test_serializer_words_are_in_the_vocabulary(text_tokenizer):
    for word in BoxSerializer().words:
        assert text_tokenizer.encode(word) == [text_tokenizer.token_id(word)]


def test_number_tokens_match_only_whole_words(text_tokenizer):
    ids = text_tokenizer.encode("v0=1234")
    assert text_tokenizer.number_id(0, 123) not in ids
    assert parse_number_token("v0=1234") == (0, 1234)
    assert parse_number_token("v0=") is None
    assert parse_number_token("cube") is None


def test_caption_round_trip_is_lowercased(text_tokenizer):
    caption = "A Small red Cube is left of the blue Sphere. There are 3 objects on the floor."
    ids = text_tokenizer.encode(caption)
    assert text_tokenizer.unk_id not in ids
    assert text_tokenizer.decode(ids) == caption.lower()
    # Colons and semicolons (as in "From the left: ...") come back glued, like . and ,
    # and hyphens inside words stay unspaced (the decoder alone gives "wood - grained").
    listed = "From the left: a red cube, a blue cone; a wood-grained floor."
    ids = text_tokenizer.encode(listed)
    assert text_tokenizer.unk_id not in ids
    assert text_tokenizer.decode(ids) == listed.lower()


def test_sos_eos_and_skipping_special_tokens(text_tokenizer):
    tok = text_tokenizer
    ids = tok.encode("v0=5 cube", add_sos=True, add_eos=True)
    assert ids[0] == tok.sos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "v0=5 cube"
    assert tok.decode([*ids, tok.pad_id, tok.sentinel_id(2)], skip_special_tokens=False) == (
        "[SOS] v0=5 cube [EOS] [PAD] [S_2]"
    )
    # ids outside the vocabulary are dropped, not an error
    assert tok.decode([tok.number_id(0, 5), -3, 10**9]) == "v0=5"


def test_encode_batch_matches_encode(text_tokenizer, corpus):
    texts = corpus[:5]
    assert text_tokenizer.encode_batch(texts) == [text_tokenizer.encode(t) for t in texts]


def test_save_load_gives_identical_ids(text_tokenizer, corpus, tmp_path):
    text_tokenizer.save(tmp_path / "tok")
    assert (tmp_path / "tok" / TOKENIZER_FILE).is_file()
    config = json.loads((tmp_path / "tok" / CONFIG_FILE).read_text())
    assert config["num_sentinels"] == 64 and config["num_values"] == 1000
    loaded = TextTokenizer.load(tmp_path / "tok")
    assert loaded.vocab_size == text_tokenizer.vocab_size
    for text in [*corpus[:20], "v0=1 v1=2 v2=3 v3=4 red cube [S_3]"]:
        assert loaded.encode(text) == text_tokenizer.encode(text)


def test_load_rejects_a_mismatched_config(text_tokenizer, tmp_path):
    text_tokenizer.save(tmp_path)
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    config["num_sentinels"] = 32
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="fixed layout"):
        TextTokenizer.load(tmp_path)


def test_training_is_deterministic(corpus):
    # Hugging Face's trainer alone varies between runs (huggingface/tokenizers#1794); ours not.
    kwargs = dict(vocab_size=500, num_sentinels=4, num_values=50)
    first = TextTokenizer.train(corpus, **kwargs).tokenizer.to_str()
    for _ in range(4):
        assert TextTokenizer.train(corpus, **kwargs).tokenizer.to_str() == first


def test_small_layouts_and_custom_words(corpus):
    tok = TextTokenizer.train(
        corpus, vocab_size=400, num_sentinels=2, num_values=10, word_tokens=("cube", "ring")
    )
    assert tok.token_id("[S_1]") == 5
    assert tok.number_id(0, 0) == 6
    assert tok.number_id(3, 9) == 6 + 39
    assert tok.token_id("cube") == 46 and tok.token_id("ring") == 47
    assert tok.vocab_size <= 400
    # learned pieces never duplicate a fixed token
    vocab = tok.tokenizer.get_vocab()
    assert len(vocab) == tok.vocab_size == len(set(vocab.values()))


def test_too_small_vocab_is_a_clear_error(corpus):
    with pytest.raises(ValueError, match="use vocab_size >="):
        TextTokenizer.train(corpus, vocab_size=4100)


def test_invalid_word_tokens_are_rejected(corpus):
    with pytest.raises(ValueError, match="lowercase"):
        TextTokenizer.train(corpus, vocab_size=5000, word_tokens=("Cube",))
    with pytest.raises(ValueError, match="repeat"):
        TextTokenizer.train(corpus, vocab_size=5000, word_tokens=("cube", "cube"))
