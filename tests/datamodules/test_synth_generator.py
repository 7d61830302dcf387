"""Procedural scene generator: geometry consistency, boxes, captions, determinism, ranges."""

import hashlib
import itertools
import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from fourm_lightning.datamodules.synth import SceneConfig, generate_sample
from fourm_lightning.datamodules.synth.caption import (
    COLOR_WORDS,
    MAX_WORDS,
    NUMBER_WORDS,
    SHAPE_PLURALS,
    SHAPE_WORDS,
    SIZE_WORDS,
    TEXTURE_WORDS,
)
from fourm_lightning.modalities.vocab import (
    CAMERA_FIELDS,
    COLORS,
    MAX_OBJECTS,
    MAX_PALETTE_COLORS,
    METADATA_RANGES,
    SEMSEG_CLASSES,
    SHAPE_CLASSES,
    SIZES,
)

SEEDS = [0, 1, 2, 3, 4, 5]
KEYS = {
    "rgb",
    "depth",
    "normal",
    "semseg",
    "instance",
    "det",
    "caption",
    "canny_edge",
    "instance_edge",
    "color_palette",
    "metadata",
    "camera",
    "scene",
}


def _sample(index, split="train", seed=0, **config):
    return generate_sample(seed, split, index, SceneConfig(**config))


# ----------------------------------------------------------------------------------------------
# 1. Normals agree with the depth map
# ----------------------------------------------------------------------------------------------


def _backproject(depth, fov_deg):
    """Camera-space points (x right, y up, z towards the camera) of every pixel centre."""
    h, w = depth.shape
    tan = math.tan(math.radians(fov_deg) / 2)
    cols = (np.arange(w) + 0.5) / w * 2 - 1
    rows = 1 - (np.arange(h) + 0.5) / h * 2
    x = cols[None, :] * tan * depth
    y = rows[:, None] * tan * depth
    return np.stack([x, y, -depth.astype(np.float64)], axis=-1)


def _angles_deg(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1, 1)))


@pytest.mark.parametrize(("index", "res"), [(i, 64) for i in SEEDS] + [(0, 128), (1, 128)])
def test_normals_match_depth(index, res):
    s = _sample(index, resolution=res)
    depth, normal = s["depth"], s["normal"]
    points = _backproject(depth, s["scene"]["camera"]["fov"])
    # Central differences: d/dx along columns, d/dy upwards (row i-1 minus row i+1).
    ddx = points[1:-1, 2:] - points[1:-1, :-2]
    ddy = points[:-2, 1:-1] - points[2:, 1:-1]
    from_depth = np.cross(ddx, ddy)
    boundary = s["instance_edge"].astype(bool)
    sem = s["semseg"]
    boundary[:, 1:] |= sem[:, 1:] != sem[:, :-1]
    boundary[1:] |= sem[1:] != sem[:-1]
    near_edge = ndimage.binary_dilation(boundary, structure=np.ones((5, 5), bool))
    keep = ~near_edge
    keep[:2] = keep[-2:] = False
    keep[:, :2] = keep[:, -2:] = False
    keep = keep[1:-1, 1:-1]
    err = _angles_deg(from_depth, normal[1:-1, 1:-1])
    inner_sem = sem[1:-1, 1:-1]
    assert keep.sum() > 500
    assert np.median(err[keep]) < 5.0
    for name, mask in (("floor", inner_sem == 0), ("objects", inner_sem >= 2)):
        region = keep & mask
        if region.sum() >= 20:
            assert np.median(err[region]) < 5.0, name


@pytest.mark.parametrize("index", SEEDS)
def test_normals_are_unit_and_face_the_camera(index):
    s = _sample(index)
    normal = s["normal"]
    assert np.abs(np.linalg.norm(normal, axis=-1) - 1).max() < 1e-4
    # Every surface is seen from its front: the normal points against the pixel's viewing ray.
    h, w = s["depth"].shape
    tan = math.tan(math.radians(s["scene"]["camera"]["fov"]) / 2)
    cols = (np.arange(w) + 0.5) / w * 2 - 1
    rows = 1 - (np.arange(h) + 0.5) / h * 2
    ray = np.stack(np.broadcast_arrays(cols[None] * tan, rows[:, None] * tan, -1.0), -1)
    ray /= np.linalg.norm(ray, axis=-1, keepdims=True)
    facing = -(normal * ray).sum(-1)
    assert (facing > -1e-4).all()  # exact tangents at silhouettes may round either way
    assert (facing > 0).mean() > 0.999
    # n_z > 0 holds exactly on floor and walls. On objects it holds for all but the rare grazing
    # silhouette pixels near the image sides (perspective: seen, yet turned slightly away).
    room = s["semseg"] <= 1
    assert (normal[..., 2][room] > 0).all()
    assert (normal[..., 2] > 0).mean() > 0.995


# ----------------------------------------------------------------------------------------------
# 2. Boxes are the instance masks' extents
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [*SEEDS, 11, 12, 13, 14])
def test_boxes_equal_instance_extents(index):
    s = _sample(index)
    instance = s["instance"]
    objects = s["scene"]["objects"]
    by_instance = {d["instance"]: d for d in s["det"]}
    assert len(by_instance) == len(s["det"])
    for obj in objects:
        k = obj["instance"]
        ys, xs = np.nonzero(instance == k)
        assert obj["visible_pixels"] == len(xs)
        if len(xs) == 0:
            assert k not in by_instance
            continue
        det = by_instance[k]
        assert det["box"] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert all(isinstance(v, int) for v in det["box"])
        assert (det["class"], det["color"], det["size"]) == (
            obj["shape"],
            obj["color"],
            obj["size"],
        )
    assert set(np.unique(instance)) - {0} == set(by_instance)
    json.dumps(s["det"])


# ----------------------------------------------------------------------------------------------
# 3. Captions say only true things
# ----------------------------------------------------------------------------------------------

_COLOR = {w: c for c in COLORS for w in COLOR_WORDS.get(c, (c,))}
_SIZE = {w: s for s, words in SIZE_WORDS.items() for w in words}
_SHAPE = {w: s for s, words in SHAPE_WORDS.items() for w in words}
_SHAPE.update({SHAPE_PLURALS[w]: s for w, s in list(_SHAPE.items())})
_MENTION = re.compile(
    r"\b(?:(" + "|".join([*NUMBER_WORDS[1:], "a", "an", "the"]) + r")\s+)?"
    r"(?:(" + "|".join(_SIZE) + r")\s+)?"
    r"(" + "|".join(_COLOR) + r")\s+"
    r"(" + "|".join(sorted(_SHAPE, key=len, reverse=True)) + r")\b",
    re.IGNORECASE,
)


def _visible(objects):
    return [o for o in objects if o["visible_pixels"] > 0]


def _depth(obj):
    return -obj["camera_center"][2]


def _check_text_mentions(caption, objects):
    visible = _visible(objects)
    mentions = list(_MENTION.finditer(caption))
    for m in mentions:
        det, size, color, shape = m.groups()
        det = det.lower() if det else None
        shape_word = shape.lower()
        matching = [
            o
            for o in visible
            if o["color"] == _COLOR[color.lower()]
            and o["shape"] == _SHAPE[shape_word]
            and (size is None or o["size"] == _SIZE[size.lower()])
        ]
        assert matching, f"{m.group(0)!r} is not in the scene: {caption}"
        plural = shape_word in SHAPE_PLURALS.values()
        if det in NUMBER_WORDS:
            assert len(matching) == NUMBER_WORDS.index(det), (m.group(0), caption)
        elif plural:
            assert len(matching) >= 2, (m.group(0), caption)
        if det == "the":  # a definite description must single out one visible object
            assert len(matching) == 1, (m.group(0), caption)
    return mentions


def _check_statement(st, scene, caption):
    objects = {o["instance"]: o for o in scene["objects"]}
    visible = _visible(scene["objects"])
    if "text" in st:  # (a listed noun phrase may start the caption, capitalised)
        assert st["text"].lower() in caption.lower()
    kind = st["type"]
    if kind == "objects":
        members = [objects[k] for k in st["instances"]]
        assert len(members) == st["count"] >= 1
        for o in members:
            assert o["visible_pixels"] > 0
            assert (o["color"], o["shape"]) == (st["color"], st["shape"])
            if st["size"] is not None:
                assert o["size"] == st["size"]
    elif kind == "listing":
        assert st["count"] == len(visible)
    elif kind == "order":
        assert sorted(st["instances"]) == sorted(o["instance"] for o in visible)
        xs = [objects[k]["camera_center"][0] for k in st["instances"]]
        assert all(a < b for a, b in itertools.pairwise(xs)), xs
    elif kind == "relation":
        a, b = objects[st["subject"]], objects[st["object"]]
        assert a["visible_pixels"] > 0 and b["visible_pixels"] > 0
        rel = st["relation"]
        if rel == "left of":
            assert a["camera_center"][0] < b["camera_center"][0]
        elif rel == "right of":
            assert a["camera_center"][0] > b["camera_center"][0]
        elif rel == "in front of":
            assert _depth(a) < _depth(b)
        elif rel == "behind":
            assert _depth(a) > _depth(b)
        elif rel == "next to":
            gap = math.dist(a["center"][::2], b["center"][::2])
            assert gap < a["footprint_radius"] + b["footprint_radius"] + 0.5
        else:
            raise AssertionError(f"unknown relation {rel!r}")
    elif kind == "near_wall":
        a = objects[st["subject"]]
        wall = next(w for w in scene["room"]["walls"] if w["name"] == st["wall"])
        assert wall["visible"]
        dist = a["center"][0] * wall["normal"][0] + a["center"][2] * wall["normal"][2]
        assert dist + wall["offset"] - a["footprint_radius"] < 0.8
    elif kind == "room":
        assert scene["room"][st["surface"]]["kind"] == st["texture"]
        words = TEXTURE_WORDS[st["texture"]]
        assert any(w in caption for w in words)
    else:
        raise AssertionError(f"unknown statement type {kind!r}")


@pytest.mark.parametrize("index", range(12))
def test_caption_statements_are_true(index):
    s = _sample(index, split="val")
    caption, scene = s["caption"], s["scene"]
    assert 0 < len(caption.split()) <= MAX_WORDS
    statements = scene["caption_statements"]
    assert statements
    for st in statements:
        _check_statement(st, scene, caption)
    mentions = _check_text_mentions(caption, scene["objects"])
    # Every visible object is mentioned in the listing.
    listed = {k for st in statements if st["type"] == "objects" for k in st["instances"]}
    assert listed == {o["instance"] for o in _visible(scene["objects"])}
    assert len(mentions) >= len([st for st in statements if st["type"] == "objects"])
    assert scene["relations"] == [
        st for st in statements if st["type"] in ("relation", "near_wall", "order")
    ]


def test_captions_have_many_structures():
    templates, skeletons, listing = set(), set(), set()
    relations = 0
    for index in range(50):
        s = _sample(index, split="caption", resolution=32)
        statements = s["scene"]["caption_statements"]
        for st in statements:
            _check_statement(st, s["scene"], s["caption"])
        _check_text_mentions(s["caption"], s["scene"]["objects"])
        templates.add(tuple(st["template"] for st in statements if "template" in st))
        listing.update(st["template"] for st in statements if st["type"] == "listing")
        relations += sum(st["type"] == "relation" for st in statements)
        skeleton = _MENTION.sub("X", s["caption"])
        skeletons.add(re.sub(r"\b(is|are|stands|stand)\b", "V", skeleton))
    assert len(listing) >= 6, listing
    assert len(templates) >= 15
    assert len(skeletons) >= 30
    assert relations >= 20


# ----------------------------------------------------------------------------------------------
# 4. Determinism
# ----------------------------------------------------------------------------------------------


def _same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
        else:
            assert json.dumps(a[key], sort_keys=True) == json.dumps(b[key], sort_keys=True), key


def _digest(sample):
    h = hashlib.sha256()
    for key in sorted(sample):
        value = sample[key]
        if isinstance(value, np.ndarray):
            h.update(value.tobytes())
        else:
            h.update(json.dumps(value, sort_keys=True).encode())
    return h.hexdigest()


def test_same_arguments_same_sample_in_any_order():
    first = {i: _sample(i, seed=7) for i in (3, 1, 2)}
    second = {i: _sample(i, seed=7) for i in (2, 3, 1)}
    for i in first:
        _same(first[i], second[i])
    assert first[1]["rgb"].tobytes() != first[2]["rgb"].tobytes()
    assert first[1]["scene"] != first[2]["scene"]
    other_split = _sample(1, split="val", seed=7)
    other_seed = _sample(1, seed=8)
    assert other_split["rgb"].tobytes() != first[1]["rgb"].tobytes()
    assert other_seed["rgb"].tobytes() != first[1]["rgb"].tobytes()


def test_same_sample_in_another_process():
    code = (
        "import hashlib, json, numpy as np\n"
        "from fourm_lightning.datamodules.synth import generate_sample\n"
        "s = generate_sample(7, 'train', 5)\n"
        "h = hashlib.sha256()\n"
        "for k in sorted(s):\n"
        "    v = s[k]\n"
        "    h.update(v.tobytes() if isinstance(v, np.ndarray) "
        "else json.dumps(v, sort_keys=True).encode())\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == _digest(generate_sample(7, "train", 5))


# ----------------------------------------------------------------------------------------------
# 5. Shapes, dtypes and ranges
# ----------------------------------------------------------------------------------------------


def _check_sample(s, res):
    assert set(s) == KEYS
    assert s["rgb"].shape == (res, res, 3) and s["rgb"].dtype == np.uint8
    assert s["depth"].shape == (res, res) and s["depth"].dtype == np.float32
    assert np.isfinite(s["depth"]).all() and (s["depth"] > 0).all() and s["depth"].max() < 50
    assert s["normal"].shape == (res, res, 3) and s["normal"].dtype == np.float32
    for key, high in (("semseg", len(SEMSEG_CLASSES)), ("instance", MAX_OBJECTS + 1)):
        assert s[key].shape == (res, res) and s[key].dtype == np.uint8
        assert s[key].max() < high
    for key in ("canny_edge", "instance_edge"):
        assert s[key].shape == (res, res) and s[key].dtype == np.uint8
        assert set(np.unique(s[key])) <= {0, 1}
    # Objects' classes in the semseg map agree with the instance map.
    objects = s["scene"]["objects"]
    assert 1 <= len(objects) <= MAX_OBJECTS
    for obj in objects:
        mask = s["instance"] == obj["instance"]
        assert (s["semseg"][mask] == SEMSEG_CLASSES.index(obj["shape"])).all()
        assert obj["shape"] in SHAPE_CLASSES and obj["color"] in COLORS and obj["size"] in SIZES
    assert ((s["semseg"] >= 2) == (s["instance"] > 0)).all()
    assert isinstance(s["caption"], str) and s["caption"]
    palette = s["color_palette"]
    assert 1 <= len(palette) <= MAX_PALETTE_COLORS
    weights = [p["weight"] for p in palette]
    assert weights == sorted(weights, reverse=True) and sum(weights) <= 1.001
    for p in palette:
        assert len(p["rgb"]) == 3 and all(isinstance(c, int) and 0 <= c <= 255 for c in p["rgb"])
    meta = s["metadata"]
    assert set(meta) == set(METADATA_RANGES)
    for key, (low, high) in METADATA_RANGES.items():
        assert isinstance(meta[key], int | float) and low <= meta[key] <= high, key
    assert meta["instance_count"] == len(s["det"])
    assert meta["semantic_diversity"] == len(np.unique(s["semseg"]))
    assert meta["walkability"] == pytest.approx(float((s["semseg"] == 0).mean()))
    cam = s["camera"]
    assert cam.shape == (len(CAMERA_FIELDS),) and cam.dtype == np.float32
    assert np.linalg.norm(cam[3:6]) == pytest.approx(1, abs=1e-5)
    assert np.linalg.norm(cam[7:10]) == pytest.approx(1, abs=1e-5)
    assert cam[6] == pytest.approx(s["scene"]["camera"]["fov"], abs=1e-4)
    json.loads(json.dumps(s["scene"]))


@pytest.mark.parametrize("res", [32, 64, 128])
def test_shapes_dtypes_and_ranges(res):
    for index in range(3):
        _check_sample(_sample(index, resolution=res), res)


def test_samples_pass_the_modality_validators():
    from fourm_lightning.datamodules.build import scene_to_stored
    from fourm_lightning.modalities import builtin_modalities

    for index in range(3):
        stored = scene_to_stored(_sample(index, resolution=32), 32)
        for spec in builtin_modalities():
            spec.kind.validate(stored[spec.name], 32)


@pytest.mark.parametrize("res", [16, 31, 257, 300])
def test_bad_resolution_is_rejected(res):
    with pytest.raises(ValueError, match=str(res)):
        SceneConfig(resolution=res)


def test_object_count_follows_the_config():
    counts = {
        len(_sample(i, resolution=32, min_objects=2, max_objects=3)["scene"]["objects"])
        for i in range(10)
    }
    assert counts <= {2, 3}
    with pytest.raises(ValueError):
        SceneConfig(max_objects=MAX_OBJECTS + 1)


# ----------------------------------------------------------------------------------------------
# 6. A picture to look at, plus coarse "looks decent" checks
# ----------------------------------------------------------------------------------------------


def test_visual_grid(tmp_path):
    """Writes a grid of modalities; set SYNTH_CHECK_PNG=/tmp/synth_check.png to keep it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["rgb", "depth", "normal", "semseg", "instance", "canny_edge", "instance_edge"]
    rows = 4
    fig, axes = plt.subplots(rows, len(keys), figsize=(2 * len(keys), 2.2 * rows))
    for i in range(rows):
        s = _sample(20 + i)
        meta = s["metadata"]
        assert 50 < meta["brightness"] < 220
        for obj in s["det"]:  # objects stand out from what surrounds them
            x0, y0, x1, y1 = obj["box"]
            assert (x1 - x0) * (y1 - y0) >= 1
        for j, key in enumerate(keys):
            value = s[key]
            ax = axes[i, j]
            if key == "depth":
                ax.imshow(1 / value, cmap="magma")
            elif key == "normal":
                ax.imshow((value + 1) / 2)
            elif key in ("semseg", "instance"):
                ax.imshow(value, cmap="tab10", vmin=0, vmax=9, interpolation="nearest")
            else:
                ax.imshow(value, cmap="gray" if value.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_title(s["caption"][:80], fontsize=5, loc="left")
    fig.tight_layout()
    out = os.environ.get("SYNTH_CHECK_PNG") or str(tmp_path / "synth_check.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    assert os.path.getsize(out) > 10_000
