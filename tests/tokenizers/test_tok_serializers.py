"""Serializers: property round trips through the text tokenizer, and tolerant parsing."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fourm_lightning.modalities.vocab import (
    COLORS,
    MAX_PALETTE_COLORS,
    METADATA_RANGES,
    SHAPE_CLASSES,
)
from fourm_lightning.tokenizers.serializers import (
    INTEGER_METADATA_KEYS,
    BoxSerializer,
    MetadataSerializer,
    PaletteSerializer,
    box_sort_key,
)

# database=None: no .hypothesis/ example store written into the working tree.
SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
EPS = 1e-9

BOXES = BoxSerializer()
METADATA = MetadataSerializer()
PALETTE = PaletteSerializer()


def through_tokenizer(tokenizer, text: str) -> str:
    return tokenizer.decode(tokenizer.encode(text))


@st.composite
def box_records(draw):
    x0, x1 = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2, unique=True)))
    y0, y1 = sorted(draw(st.lists(st.floats(0, 1), min_size=2, max_size=2, unique=True)))
    record = {"box": [x0, y0, x1, y1], "class": draw(st.sampled_from(SHAPE_CLASSES))}
    if draw(st.booleans()):
        record["color"] = draw(st.sampled_from(list(COLORS)))
    if draw(st.booleans()):
        record["instance"] = draw(st.integers(1, 6))  # not serialized
    return record


@st.composite
def metadata_values(draw):
    keys = draw(st.lists(st.sampled_from(list(METADATA_RANGES)), unique=True, max_size=10))
    out = {}
    for key in keys:
        lo, hi = METADATA_RANGES[key]
        if key in INTEGER_METADATA_KEYS:
            out[key] = draw(st.integers(int(lo), int(hi)))
        else:
            out[key] = draw(st.floats(lo, hi))
    return out


palettes = st.lists(
    st.fixed_dictionaries(
        {
            "rgb": st.lists(st.integers(0, 255), min_size=3, max_size=3),
            "weight": st.floats(0, 1),
        }
    ),
    min_size=1,
    max_size=MAX_PALETTE_COLORS,
)


@SETTINGS
@given(boxes=st.lists(box_records(), max_size=8))
def test_boxes_round_trip(text_tokenizer, boxes):
    text = BOXES.serialize(boxes)
    parsed = BOXES.parse(through_tokenizer(text_tokenizer, text))
    expected = sorted(boxes, key=box_sort_key)
    assert len(parsed) == len(expected)
    for got, want in zip(parsed, expected, strict=True):
        assert got["class"] == want["class"]
        assert got.get("color") == want.get("color")
        assert "instance" not in got
        for a, b in zip(got["box"], want["box"], strict=True):
            assert abs(a - b) <= 0.5 / 999 + EPS


@SETTINGS
@given(metadata=metadata_values())
def test_metadata_round_trip(text_tokenizer, metadata):
    text = METADATA.serialize(metadata)
    parsed = METADATA.parse(through_tokenizer(text_tokenizer, text))
    assert set(parsed) == set(metadata)
    for key, value in metadata.items():
        if key in INTEGER_METADATA_KEYS:
            assert parsed[key] == value
        else:
            assert abs(parsed[key] - value) <= METADATA.bin_width(key) / 2 + EPS


@SETTINGS
@given(palette=palettes)
def test_palette_round_trip(text_tokenizer, palette):
    text = PALETTE.serialize(palette)
    parsed = PALETTE.parse(through_tokenizer(text_tokenizer, text))
    assert [c["rgb"] for c in parsed] == [c["rgb"] for c in palette]
    assert sum(c["weight"] for c in parsed) == pytest.approx(1.0)


garbage_tokens = st.one_of(
    st.builds(lambda s, v: f"v{s}={v}", st.integers(0, 9), st.integers(0, 2000)),
    st.sampled_from([*SHAPE_CLASSES, *COLORS, "[EOS]", "[PAD]", "[S_0]", "v0=", "=", "##s"]),
    st.text(max_size=8),
)


@settings(max_examples=300, deadline=None, database=None)
@given(tokens=st.lists(garbage_tokens, max_size=40))
def test_parsing_garbage_never_raises(tokens):
    text = " ".join(tokens)
    boxes = BOXES.parse(text)
    assert all(b["class"] in SHAPE_CLASSES and len(b["box"]) == 4 for b in boxes)
    assert all(0 <= c <= 1 for b in boxes for c in b["box"])
    metadata = METADATA.parse(text)
    assert set(metadata) <= set(METADATA_RANGES)
    palette = PALETTE.parse(text)
    assert len(palette) <= MAX_PALETTE_COLORS
    assert all(0 <= v <= 255 for c in palette for v in c["rgb"])


@SETTINGS
@given(ids=st.lists(st.integers(-5, 5000), max_size=60))
def test_parsing_random_model_output_never_raises(text_tokenizer, ids):
    text = text_tokenizer.decode(ids)
    BOXES.parse(text)
    METADATA.parse(text)
    PALETTE.parse(text)


@pytest.mark.parametrize("value", [None, 3, b"v0=1", ["v0=1"]])
def test_parsing_non_strings_returns_empty(value):
    assert BOXES.parse(value) == []
    assert METADATA.parse(value) == {}
    assert PALETTE.parse(value) == []


def test_box_format_and_order_follow_4m():
    boxes = [
        {"box": [0.5, 0.5, 0.9, 0.9], "class": "cube", "color": "red"},
        {"box": [0.0, 0.1, 0.2, 1.0], "class": "sphere"},
    ]
    assert BOXES.serialize(boxes) == (
        "v0=0 v1=100 v2=200 v3=999 sphere v0=500 v1=500 v2=899 v3=899 red cube"
    )


def test_box_parse_skips_malformed_chunks():
    text = (
        "v0=1 v1=2 v2=3 cube "  # missing v3
        "v0=10 v1=20 v2=30 v3=40 red "  # no class
        "v1=5 v0=1 v2=2 v3=3 cone "  # wrong slot order
        "v0=100 v1=200 v2=300 v3=400 blue cylinder sphere green"
    )
    assert BOXES.parse(text) == [
        {"box": [100 / 999, 200 / 999, 300 / 999, 400 / 999], "color": "blue", "class": "cylinder"}
    ]


def test_box_serialize_rejects_bad_records():
    with pytest.raises(ValueError, match="unknown class"):
        BOXES.serialize([{"box": [0, 0, 1, 1], "class": "dragon"}])
    with pytest.raises(ValueError, match="unknown color"):
        BOXES.serialize([{"box": [0, 0, 1, 1], "class": "cube", "color": "mauve"}])
    with pytest.raises(ValueError, match="4 finite"):
        BOXES.serialize([{"box": [0, 0, 1], "class": "cube"}])


def test_metadata_format_and_binning():
    text = METADATA.serialize({"brightness": 255.0, "instance_count": 4, "entropy": 0.0})
    # key indices follow METADATA_RANGES; 255 falls in the last of 50 bins
    assert text == "v1=0 v0=49 v1=4 v0=0 v1=5 v0=4"
    assert METADATA.parse(text) == {
        "brightness": pytest.approx(255 - 2.55),
        "entropy": pytest.approx(0.1),
        "instance_count": 4.0,
    }
    shuffled = METADATA.serialize(
        {"brightness": 255.0, "entropy": 0.0}, order=["entropy", "brightness"]
    )
    assert shuffled == "v1=4 v0=0 v1=0 v0=49"


def test_metadata_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown metadata"):
        METADATA.serialize({"height": 3.0})
    with pytest.raises(ValueError, match="finite"):
        METADATA.serialize({"brightness": float("nan")})
    with pytest.raises(ValueError, match="exactly once"):
        METADATA.serialize({"brightness": 1.0}, order=["entropy"])


def test_metadata_parse_ignores_invalid_chunks():
    # key index out of range, bin out of range, first chunk of a key wins
    assert METADATA.parse("v1=99 v0=1 v1=0 v0=50 v1=0 v0=3 v1=0 v0=7") == {
        "brightness": pytest.approx(3.5 * 255 / 50)
    }


def test_palette_format_and_tolerant_parse():
    palette = [{"rgb": [255, 0, 10], "weight": 0.7}, {"rgb": [1, 2, 3], "weight": 0.3}]
    assert PALETTE.serialize(palette) == "v1=2 v0=255 v0=0 v0=10 v0=1 v0=2 v0=3"
    # truncated output: only complete triples; out-of-range channels drop their colour
    assert PALETTE.parse("v1=3 v0=1 v0=2 v0=3 v0=300 v0=0 v0=0 v0=9") == [
        {"rgb": [1, 2, 3], "weight": 1.0}
    ]
    with pytest.raises(ValueError, match="max_colors"):
        PALETTE.serialize([{"rgb": [0, 0, 0]}] * (MAX_PALETTE_COLORS + 1))
    with pytest.raises(ValueError, match=r"0\.\.255"):
        PALETTE.serialize([{"rgb": [0, 0, 256]}])
    with pytest.raises(ValueError, match="num_values"):
        PaletteSerializer(num_values=100)
