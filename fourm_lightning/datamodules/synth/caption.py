"""Captions from the scene graph, with many phrasings and only true statements.

``make_caption`` returns the caption and the structured statements it rendered, so tests (and
curious users) can check each claim against the geometry. Relations are read from camera-space
object centres (x right, z towards the camera; depth = -z) and only stated with a safety margin,
so they hold clearly, not just barely:

* "A left of B": ``x_A < x_B - LEFT_MARGIN`` and A's centre also projects left of B's in the image.
* "A in front of B": ``depth_A < depth_B - DEPTH_MARGIN``.
* "A next to B": the floor gap between their footprint discs is under ``NEXT_TO_GAP``.
* "A near the wall": A's footprint is within ``WALL_GAP`` of a wall that is in the image.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fourm_lightning.datamodules.synth.scene import Scene

LEFT_MARGIN = 0.3
DEPTH_MARGIN = 0.5
NEXT_TO_GAP = 0.4
WALL_GAP = 0.75
#: Hard limit on caption length, in words.
MAX_WORDS = 40

#: Words used for each shape, colour and size (the first is the canonical name).
SHAPE_WORDS: dict[str, tuple[str, ...]] = {
    "sphere": ("sphere", "ball"),
    "cube": ("cube", "box", "block"),
    "cylinder": ("cylinder",),
    "cone": ("cone",),
}
SHAPE_PLURALS: dict[str, str] = {
    "sphere": "spheres",
    "ball": "balls",
    "cube": "cubes",
    "box": "boxes",
    "block": "blocks",
    "cylinder": "cylinders",
    "cone": "cones",
}
COLOR_WORDS: dict[str, tuple[str, ...]] = {"gray": ("gray", "grey")}
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
TEXTURE_WORDS: dict[str, tuple[str, ...]] = {
    "plain": ("plain", "uniform"),
    "checker": ("checkered", "tiled"),
    "stripes": ("striped",),
    "noise": ("speckled", "mottled"),
    "wood": ("wood-grained", "wooden"),
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six")


@dataclass(frozen=True)
class Placement:
    """Where an object is, as the relation rules read it (metres unless stated)."""

    x: float  # camera space, right
    depth: float  # distance along the optical axis
    u: float  # x / depth: image-plane position (unitless)
    wx: float  # world x of the base centre
    wz: float  # world z of the base centre
    footprint: float  # radius of the footprint disc


# The rules every relation in a caption obeys; the caption-truth metric checks captions with
# the same functions (fourm_lightning.transfer.metrics).
def left_of(a: Placement, b: Placement) -> bool:
    """A is clearly left of B: in camera x by ``LEFT_MARGIN`` and in the image."""
    return b.x - a.x > LEFT_MARGIN and b.u > a.u


def in_front_of(a: Placement, b: Placement) -> bool:
    """A is clearly closer to the camera than B (by ``DEPTH_MARGIN``)."""
    return a.depth < b.depth - DEPTH_MARGIN


def next_to(a: Placement, b: Placement) -> bool:
    """The floor gap between the footprint discs is under ``NEXT_TO_GAP``."""
    return math.hypot(a.wx - b.wx, a.wz - b.wz) - a.footprint - b.footprint < NEXT_TO_GAP


def near_wall(a: Placement, normal: Sequence[float], offset: float) -> bool:
    """A's footprint is within ``WALL_GAP`` of the wall plane ``normal . p + offset = 0``."""
    return a.wx * normal[0] + a.wz * normal[2] + offset - a.footprint < WALL_GAP


@dataclass(frozen=True)
class _Obj(Placement):
    k: int
    shape: str
    color: str
    size: str


class _Writer:
    """Picks words and templates with the sample's generator."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[int(self.rng.integers(len(options)))]

    def pick_item(self, options: list[Any]) -> Any:
        return options[int(self.rng.integers(len(options)))]

    def shape(self, shape: str, plural: bool = False) -> str:
        word = self.pick(SHAPE_WORDS[shape])
        return SHAPE_PLURALS[word] if plural else word

    def color(self, color: str) -> str:
        return self.pick(COLOR_WORDS.get(color, (color,)))

    def size(self, size: str) -> str:
        return self.pick(SIZE_WORDS[size])


def _article(word: str) -> str:
    # "uni..." is said with a consonant ("a uniform floor").
    return "an" if word[0] in "aeiou" and not word.startswith("uni") else "a"


def _join(items: list[str], writer: _Writer) -> str:
    if len(items) == 1:
        return items[0]
    if len(items) > 2 and writer.rng.random() < 0.3:
        return ", ".join(items[:-1]) + ", and " + items[-1]  # the Oxford comma, sometimes
    return ", ".join(items[:-1]) + " and " + items[-1]


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _words(text: str) -> int:
    return len(text.split())


def _objects(scene: Scene, visible: np.ndarray) -> list[_Obj]:
    out = []
    for k, obj in enumerate(scene.objects, start=1):
        if visible[k - 1] <= 0:
            continue
        x, _, z = scene.camera.to_camera(obj.center)
        out.append(
            _Obj(x, -z, x / -z, obj.x, obj.z, obj.footprint, k, obj.shape, obj.color, obj.size)
        )
    return out


def _references(objs: list[_Obj]) -> dict[int, tuple[str | None]]:
    """The attributes that single out each object: size (or None) for a unique description."""
    refs: dict[int, tuple[str | None]] = {}
    for o in objs:
        same = [p for p in objs if (p.color, p.shape) == (o.color, o.shape)]
        if len(same) == 1:
            refs[o.k] = (None,)
        elif sum(p.size == o.size for p in same) == 1:
            refs[o.k] = (o.size,)
    return refs


def _ref(o: _Obj, size: str | None, writer: _Writer) -> str:
    words = ([writer.size(size)] if size else []) + [writer.color(o.color), writer.shape(o.shape)]
    return "the " + " ".join(words)


def _listing(objs: list[_Obj], writer: _Writer) -> tuple[list[str], list[dict[str, Any]]]:
    """Noun phrases for the visible objects, grouped by colour and shape ("two red cubes")."""
    groups: dict[tuple[str, str], list[_Obj]] = {}
    for o in objs:
        groups.setdefault((o.color, o.shape), []).append(o)
    phrases, statements = [], []
    for (color, shape), members in groups.items():
        sizes = {o.size for o in members}
        size = members[0].size if len(sizes) == 1 and writer.rng.random() < 0.35 else None
        count = len(members)
        words = ([writer.size(size)] if size else []) + [writer.color(color)]
        words.append(writer.shape(shape, plural=count > 1))
        head = _article(words[0]) if count == 1 else NUMBER_WORDS[count]
        phrase = head + " " + " ".join(words)
        phrases.append(phrase)
        statements.append(
            {
                "type": "objects",
                "text": phrase,
                "instances": [o.k for o in members],
                "count": count,
                "color": color,
                "shape": shape,
                "size": size,
            }
        )
    return phrases, statements


def _listing_sentence(
    objs: list[_Obj], scene: Scene, writer: _Writer
) -> tuple[str, list[dict[str, Any]]]:
    # Left-to-right enumeration, when every object stands clearly apart from its neighbours.
    by_x = sorted(objs, key=lambda o: o.x)
    ordered = (
        len(objs) >= 2
        and all(b.x - a.x > LEFT_MARGIN and b.u > a.u for a, b in itertools.pairwise(by_x))
        and writer.rng.random() < 0.25
    )
    if ordered:
        phrases, statements = [], []
        for o in by_x:
            words = [writer.color(o.color), writer.shape(o.shape)]
            if writer.rng.random() < 0.3:
                words.insert(0, writer.size(o.size))
            phrase = _article(words[0]) + " " + " ".join(words)
            phrases.append(phrase)
            statements.append(
                {
                    "type": "objects",
                    "text": phrase,
                    "instances": [o.k],
                    "count": 1,
                    "color": o.color,
                    "shape": o.shape,
                    "size": o.size if len(words) == 3 else None,
                }
            )
        lead = writer.pick(("From left to right", "Left to right", "From the left"))
        sentence = f"{lead}: {_join(phrases, writer)}."
        order = {"type": "order", "instances": [o.k for o in by_x], "template": "list:order"}
        return sentence, [*statements, order]

    phrases, statements = _listing(objs, writer)
    listing = _join(phrases, writer)
    many = len(objs) > 1
    be = "are" if many else "is"
    # "There is a ball and two cubes": "there is/are" agrees with the first noun phrase.
    there = "are" if statements[0]["count"] > 1 else "is"
    floor_words = TEXTURE_WORDS[scene.surfaces[0].texture.kind]
    templates = [
        ("list:there", f"There {there} {listing}."),
        ("list:contains", f"The scene contains {listing}."),
        (
            "list:shows",
            f"{writer.pick(('This image', 'The picture', 'The render'))} shows {listing}.",
        ),
        ("list:see", f"We can see {listing}."),
        ("list:in_room", f"{_cap(listing)} {be} in the room."),
        ("list:room_with", f"A room with {listing}."),
        ("list:in_the_room", f"In the room there {there} {listing}."),
        (
            "list:on_floor",
            f"{_cap(listing)} {'stand' if many else 'stands'} on a "
            f"{writer.pick(floor_words)} floor.",
        ),
    ]
    if many:
        templates.append(("list:count", f"{_cap(NUMBER_WORDS[len(objs)])} objects: {listing}."))
    name, sentence = templates[int(writer.rng.integers(len(templates)))]
    extra: list[dict[str, Any]] = [{"type": "listing", "template": name, "count": len(objs)}]
    if name == "list:on_floor":
        extra.append(
            {"type": "room", "surface": "floor", "texture": scene.surfaces[0].texture.kind}
        )
    return sentence, statements + extra


def _rel(subj: _Obj, relation: str, obj: _Obj, template: str) -> dict[str, Any]:
    return {
        "type": "relation",
        "subject": subj.k,
        "relation": relation,
        "object": obj.k,
        "template": template,
    }


def _relations(
    objs: list[_Obj], refs: dict[int, tuple[str | None]], writer: _Writer, sides: bool
) -> list[list[tuple[str, list[dict[str, Any]]]]]:
    """Candidate relation sentences (each true) with their statements, grouped by object pair.

    ``sides=False`` leaves out left/right (after a left-to-right listing they would repeat it).
    """
    groups = []
    named = [o for o in objs if o.k in refs]
    for i, first in enumerate(named):
        for second in named[i + 1 :]:
            out: list[tuple[str, list[dict[str, Any]]]] = []
            # a is the one further left
            a, b = (first, second) if first.x <= second.x else (second, first)
            left = sides and left_of(a, b)
            front = None
            if in_front_of(a, b):
                front = (a, b)
            elif in_front_of(b, a):
                front = (b, a)
            ra, rb = _ref(a, refs[a.k][0], writer), _ref(b, refs[b.k][0], writer)

            if left:
                name = writer.pick(("rel:left", "rel:left2", "rel:right", "rel:to_left", "rel:r2"))
                text = {
                    "rel:left": f"{_cap(ra)} is to the left of {rb}.",
                    "rel:left2": f"{_cap(ra)} is left of {rb}.",
                    "rel:right": f"{_cap(rb)} is to the right of {ra}.",
                    "rel:to_left": f"To the left of {rb} is {ra}.",
                    "rel:r2": f"{_cap(rb)} sits to the right of {ra}.",
                }[name]
                right = name in ("rel:right", "rel:r2")
                subj, relation, obj = (b, "right of", a) if right else (a, "left of", b)
                out.append((text, [{**_rel(subj, relation, obj, name), "text": text}]))
            if front is not None:
                near, far = front
                rn, rf = (ra, rb) if near is a else (rb, ra)
                name = writer.pick(("rel:front", "rel:behind", "rel:closer", "rel:behind2"))
                text = {
                    "rel:front": f"{_cap(rn)} is in front of {rf}.",
                    "rel:behind": f"{_cap(rf)} is behind {rn}.",
                    "rel:closer": f"{_cap(rn)} is closer to the camera than {rf}.",
                    "rel:behind2": f"Behind {rn} {writer.pick(('is', 'stands'))} {rf}.",
                }[name]
                if name in ("rel:behind", "rel:behind2"):
                    statement = _rel(far, "behind", near, name)
                else:
                    statement = _rel(near, "in front of", far, name)
                out.append((text, [{**statement, "text": text}]))
                if left:
                    # Both relations in one sentence, from the near object's point of view.
                    side = "left" if near is a else "right"
                    text = f"{_cap(rn)} is in front of and to the {side} of {rf}."
                    out.append(
                        (
                            text,
                            [
                                {**_rel(near, "in front of", far, "rel:combo"), "text": text},
                                {**_rel(near, f"{side} of", far, "rel:combo"), "text": text},
                            ],
                        )
                    )
            if next_to(a, b):
                name = writer.pick(("rel:next", "rel:beside", "rel:together"))
                text = {
                    "rel:next": f"{_cap(ra)} is next to {rb}.",
                    "rel:beside": f"{_cap(ra)} stands beside {rb}.",
                    "rel:together": f"{_cap(ra)} and {rb} are close together.",
                }[name]
                out.append((text, [{**_rel(a, "next to", b, name), "text": text}]))
            if out:
                groups.append(out)
    return groups


def _wall_sentences(
    objs: list[_Obj],
    refs: dict[int, tuple[str | None]],
    scene: Scene,
    walls_visible: set[str],
    writer: _Writer,
) -> list[list[tuple[str, list[dict[str, Any]]]]]:
    out = []
    for o in objs:
        if o.k not in refs:
            continue
        for surf in scene.surfaces[1:]:
            if surf.name not in walls_visible:
                continue
            if near_wall(o, surf.normal, surf.offset):
                ref = _ref(o, refs[o.k][0], writer)
                name = writer.pick(("wall:near", "wall:close", "wall:front"))
                text = {
                    "wall:near": f"{_cap(ref)} is near the wall.",
                    "wall:close": f"{_cap(ref)} stands close to the wall.",
                    "wall:front": f"Near the wall {writer.pick(('is', 'stands'))} {ref}.",
                }[name]
                statement = {
                    "type": "near_wall",
                    "subject": o.k,
                    "wall": surf.name,
                    "template": name,
                    "text": text,
                }
                out.append([(text, [statement])])
                break
    return out


def _room_sentences(
    scene: Scene, walls_visible: set[str], writer: _Writer
) -> list[tuple[str, list[dict[str, Any]]]]:
    floor = scene.surfaces[0].texture.kind
    word = writer.pick(TEXTURE_WORDS[floor])
    name = writer.pick(("room:floor_is", "room:has_floor", "room:on_floor"))
    text = {
        "room:floor_is": f"The floor is {word}.",
        "room:has_floor": f"The room has {_article(word)} {word} floor.",
        "room:on_floor": f"Everything rests on {_article(word)} {word} floor.",
    }[name]
    out = [(text, [{"type": "room", "surface": "floor", "texture": floor, "template": name}])]
    if walls_visible:
        wall = scene.surfaces[1].texture.kind
        word = writer.pick(TEXTURE_WORDS[wall])
        name = writer.pick(("room:walls_are", "room:behind_wall"))
        text = {
            "room:walls_are": f"The {'walls are' if len(walls_visible) > 1 else 'wall is'} {word}.",
            "room:behind_wall": f"In the back there is {_article(word)} {word} wall.",
        }[name]
        out.append((text, [{"type": "room", "surface": "wall", "texture": wall, "template": name}]))
    return out


def make_caption(
    scene: Scene, visible: np.ndarray, walls_visible: set[str], rng: np.random.Generator
) -> tuple[str, list[dict[str, Any]]]:
    """Describe the visible objects, some relations between them, and sometimes the room.

    Args:
        scene: the scene graph.
        visible: (N,) visible pixel count of each object (instance order).
        walls_visible: names of the walls with at least one pixel in the image.
        rng: the sample's generator (phrasing choices).

    Returns:
        ``(caption, statements)``: the caption (at most ``MAX_WORDS`` words) and JSON-safe dicts,
        one per claim it makes: ``objects`` (a noun phrase and the instances it denotes),
        ``listing``, ``order`` (instances listed left to right), ``relation`` (subject, relation,
        object instance ids), ``near_wall`` and ``room`` (texture of the floor or walls).
    """
    writer = _Writer(rng)
    objs = _objects(scene, visible)
    if not objs:
        kind = scene.surfaces[0].texture.kind
        word = writer.pick(TEXTURE_WORDS[kind])
        text = f"An empty room with {_article(word)} {word} floor."
        return text, [{"type": "room", "surface": "floor", "texture": kind, "template": "empty"}]
    refs = _references(objs)
    first, statements = _listing_sentence(objs, scene, writer)
    ordered = any(st["type"] == "order" for st in statements)
    extras = _relations(objs, refs, writer, sides=not ordered) + _wall_sentences(
        objs, refs, scene, walls_visible, writer
    )
    # At most one sentence per object pair (or per object for the wall), so no claim repeats.
    order = rng.permutation(len(extras)).tolist()
    chosen = [writer.pick_item(extras[i]) for i in order[: int(rng.integers(1, 4))]]
    if rng.random() < 0.4 or not chosen:
        rooms = _room_sentences(scene, walls_visible, writer)
        chosen.insert(int(rng.integers(len(chosen) + 1)), rooms[int(rng.integers(len(rooms)))])
    sentences = [first]
    budget = MAX_WORDS - _words(first)
    for text, claims in chosen:
        if _words(text) <= budget:
            sentences.append(text)
            statements.extend(claims)
            budget -= _words(text)
    return " ".join(sentences), statements
