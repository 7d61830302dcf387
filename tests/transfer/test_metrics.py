"""Transfer metrics against hand-computed values, accumulation, and bad inputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fourm_lightning.datamodules.synth.caption import LEFT_MARGIN
from fourm_lightning.modalities.kinds import BoxesText
from fourm_lightning.modalities.vocab import SHAPE_CLASSES
from fourm_lightning.transfer.metrics import (
    CameraError,
    CaptionTruth,
    DepthMetrics,
    EdgeF1,
    NormalAngularError,
    SegmentationIoU,
    check_caption,
    detection_map,
)


def values(metric) -> dict[str, float]:
    return {k: float(v) for k, v in metric.compute().items()}


# ----------------------------------------------------------------------------------------------
# Depth
# ----------------------------------------------------------------------------------------------


def test_depth_hand_computed_per_image_mean():
    # Image 0, target [[1, 2], [4, 0]] (the 0 is invalid), pred [[1.1, 2], [2, 7]]:
    #   |1.1-1|/1 = 0.1, |2-2|/2 = 0, |2-4|/4 = 0.5 -> abs_rel = 0.6 / 3 = 0.2
    #   ratios 1.1, 1, 2 -> delta1 = 2 / 3
    # Image 1, target [[1, 0], [0, 0]], pred [[2, 5], [5, 5]]: one valid pixel,
    #   abs_rel = 1, ratio 2 -> delta1 = 0
    # Image 2, no valid pixel: skipped.
    # Per-image mean: abs_rel = (0.2 + 1) / 2 = 0.6 (pixel pooling would give 1.6 / 4 = 0.4),
    # delta1 = (2/3 + 0) / 2 = 1/3.
    target = torch.tensor([[[1.0, 2.0], [4.0, 0.0]], [[1.0, 0.0], [0.0, 0.0]], [[0.0] * 2] * 2])
    pred = torch.tensor([[[1.1, 2.0], [2.0, 7.0]], [[2.0, 5.0], [5.0, 5.0]], [[3.0] * 2] * 2])
    metric = DepthMetrics()
    metric.update(pred, target)
    out = values(metric)
    assert out["abs_rel"] == pytest.approx(0.6, abs=1e-6)
    assert out["delta1"] == pytest.approx(1 / 3, abs=1e-6)
    # The (B, 1, H, W) layout gives the same numbers.
    metric = DepthMetrics()
    metric.update(pred[:, None], target[:, None])
    assert values(metric) == pytest.approx(out)


def test_depth_clamps_bad_predictions():
    # pred -3 at a valid pixel of depth 1 is clamped to min_depth 0.5: abs_rel 0.5, ratio 2.
    metric = DepthMetrics(min_depth=0.5)
    metric.update(torch.tensor([[[-3.0]]]), torch.tensor([[[1.0]]]))
    assert values(metric) == pytest.approx({"abs_rel": 0.5, "delta1": 0.0})


def test_depth_rejects_bad_shapes():
    with pytest.raises(ValueError, match="differ"):
        DepthMetrics().update(torch.ones(1, 2, 2), torch.ones(1, 2, 3))
    with pytest.raises(ValueError, match="shape"):
        DepthMetrics().update(torch.ones(1, 3, 2, 2), torch.ones(1, 3, 2, 2))
    with pytest.raises(ValueError, match="min_depth"):
        DepthMetrics(min_depth=0.0)


# ----------------------------------------------------------------------------------------------
# Normals
# ----------------------------------------------------------------------------------------------


def test_normal_angles_hand_computed():
    # Target +z everywhere except pixel 3, which has no normal (zero vector, ignored).
    # Predictions: +z twice as long (0 deg), (1, 0, 1) (45 deg), +y (90 deg), anything.
    # mean = (0 + 45 + 90) / 3 = 45; within 11.25 deg: 1 of 3.
    target = torch.tensor([[0.0, 0, 1], [0, 0, 1], [0, 0, 1], [0, 0, 0]]).T.reshape(1, 3, 1, 4)
    pred = torch.tensor([[0.0, 0, 2], [1, 0, 1], [0, 1, 0], [1, 0, 0]]).T.reshape(1, 3, 1, 4)
    metric = NormalAngularError()
    metric.update(pred, target)
    out = values(metric)
    assert out["mean_angle"] == pytest.approx(45.0, abs=1e-4)
    assert out["within_11_25"] == pytest.approx(1 / 3, abs=1e-6)


def test_normal_threshold_is_strict_and_in_degrees():
    # 10 degrees is within 11.25, 12 degrees is not.
    angles = torch.deg2rad(torch.tensor([10.0, 12.0]))
    pred = torch.stack([torch.sin(angles), torch.zeros(2), torch.cos(angles)]).reshape(1, 3, 1, 2)
    target = torch.tensor([0.0, 0.0, 1.0])[None, :, None, None].expand(1, 3, 1, 2)
    metric = NormalAngularError()
    metric.update(pred, target)
    assert values(metric) == pytest.approx({"mean_angle": 11.0, "within_11_25": 0.5}, abs=1e-4)


def test_normal_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        NormalAngularError().update(torch.ones(1, 2, 2, 2), torch.ones(1, 2, 2, 2))


# ----------------------------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------------------------


def test_segmentation_two_class_confusion():
    # target [[0, 0], [1, 1]], pred [[0, 1], [1, 1]]: confusion (rows = target) [[1, 1], [0, 2]].
    # IoU0 = 1 / (1 + 1 + 0) = 1/2, IoU1 = 2 / (2 + 1 + 0) = 2/3 -> miou 7/12; pixel acc 3/4.
    target = torch.tensor([[[0, 0], [1, 1]]], dtype=torch.uint8)
    pred = torch.tensor([[[0, 1], [1, 1]]])
    metric = SegmentationIoU(2)
    metric.update(pred, target)
    assert values(metric) == pytest.approx({"miou": 7 / 12, "pixel_acc": 0.75})
    assert metric.confusion.tolist() == [[1, 1], [0, 2]]
    # A third class absent from target and prediction does not count in the mean.
    metric = SegmentationIoU(3)
    metric.update(pred, target)
    assert values(metric)["miou"] == pytest.approx(7 / 12)


def test_segmentation_ignore_index():
    # The wrong pixel (target 0, pred 1) becomes ignored: everything left is right.
    target = torch.tensor([[[0, -1], [1, 1]]])
    pred = torch.tensor([[[0, 1], [1, 1]]])
    metric = SegmentationIoU(2, ignore_index=-1)
    metric.update(pred, target)
    assert values(metric) == pytest.approx({"miou": 1.0, "pixel_acc": 1.0})


def test_segmentation_rejects_bad_labels():
    with pytest.raises(ValueError, match="target label 7"):
        SegmentationIoU(2, ignore_index=255).update(
            torch.zeros(1, 2, 2, dtype=torch.long), torch.tensor([[[0, 255], [7, 1]]])
        )
    with pytest.raises(ValueError, match="integer"):
        SegmentationIoU(2).update(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))


# ----------------------------------------------------------------------------------------------
# Edges
# ----------------------------------------------------------------------------------------------


def _column(col: int) -> torch.Tensor:
    edges = torch.zeros(1, 5, 5, dtype=torch.uint8)
    edges[0, :, col] = 1
    return edges


def test_edge_f1_tolerance():
    target = _column(2)
    # A one-pixel shift is inside tolerance 1 and outside tolerance 0.
    for tolerance, expected in ((1, 1.0), (0, 0.0)):
        metric = EdgeF1(tolerance)
        metric.update(_column(3), target)
        assert values(metric) == pytest.approx(
            dict.fromkeys(("precision", "recall", "f1"), expected)
        )
    # A two-pixel shift is outside tolerance 1.
    metric = EdgeF1(1)
    metric.update(_column(4), target)
    assert values(metric)["f1"] == 0.0
    # Column 3 plus a stray pixel at (0, 0), two columns from the target: precision 5/6,
    # recall 5/5, f1 = 2 * (5/6) / (5/6 + 1) = 10/11.
    pred = _column(3)
    pred[0, 0, 0] = 1
    metric = EdgeF1(1)
    metric.update(pred, target)
    assert values(metric) == pytest.approx({"precision": 5 / 6, "recall": 1.0, "f1": 10 / 11})


def test_edge_tolerance_is_chebyshev():
    # A diagonal neighbour is one pixel away in Chebyshev distance (two in Manhattan distance).
    target = torch.zeros(1, 5, 5)
    target[0, 2, 2] = 1
    pred = torch.zeros(1, 5, 5)
    pred[0, 3, 3] = 1
    metric = EdgeF1(1)
    metric.update(pred, target)
    assert values(metric)["f1"] == pytest.approx(1.0)


def test_edge_empty_is_zero_and_bad_values_fail():
    metric = EdgeF1()
    metric.update(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3))
    assert values(metric) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    with pytest.raises(ValueError, match="0 or 1"):
        EdgeF1().update(torch.full((1, 3, 3), 2), torch.zeros(1, 3, 3))


# ----------------------------------------------------------------------------------------------
# Camera
# ----------------------------------------------------------------------------------------------


def test_camera_errors_hand_computed():
    # Sample 0: position off by (3, 4, 0) -> 5 m; forward (1, 0, -1) vs (0, 0, -1) -> 45 deg;
    # fov 47 vs 45 -> 2 deg; light identical. Squared errors: 9 + 16 + 1 + 4 = 30.
    # Sample 1: exact. Means: position 2.5, forward 22.5, fov 1; rmse = sqrt(30 / 20).
    target = torch.tensor([[0.0, 0, 0, 0, 0, -1, 45, 0, 1, 0]] * 2)
    pred = target.clone()
    pred[0, :3] = torch.tensor([3.0, 4.0, 0.0])
    pred[0, 3:6] = torch.tensor([1.0, 0.0, -1.0])
    pred[0, 6] = 47.0
    metric = CameraError()
    metric.update(pred, target)
    assert values(metric) == pytest.approx(
        {
            "rmse": math.sqrt(1.5),
            "position_error": 2.5,
            "forward_angle": 22.5,
            "fov_error": 1.0,
            "light_angle": 0.0,
        },
        abs=1e-4,
    )


def test_camera_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, 10\)"):
        CameraError().update(torch.zeros(2, 9), torch.zeros(2, 9))


# ----------------------------------------------------------------------------------------------
# Accumulation: two updates (or two processes' states merged) equal one update over all
# ----------------------------------------------------------------------------------------------


def _depth_inputs(g):
    target = torch.rand(4, 1, 6, 6, generator=g) * 5
    target[0] = 0  # an image without valid pixels
    return torch.rand(4, 1, 6, 6, generator=g) * 5, target


def _normal_inputs(g):
    return torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)


def _seg_inputs(g):
    return torch.randint(0, 3, (4, 5, 5), generator=g), torch.randint(0, 3, (4, 5, 5), generator=g)


def _edge_inputs(g):
    return (torch.rand(4, 8, 8, generator=g) < 0.2).long(), (
        torch.rand(4, 8, 8, generator=g) < 0.2
    ).long()


def _camera_inputs(g):
    return torch.randn(4, 10, generator=g), torch.randn(4, 10, generator=g)


@pytest.mark.parametrize(
    ("make", "inputs"),
    [
        (DepthMetrics, _depth_inputs),
        (NormalAngularError, _normal_inputs),
        (lambda: SegmentationIoU(3), _seg_inputs),
        (EdgeF1, _edge_inputs),
        (CameraError, _camera_inputs),
    ],
)
def test_accumulation_equals_concatenation(make, inputs):
    g = torch.Generator().manual_seed(0)
    pred, target = inputs(g)
    whole, parts, merged = make(), make(), make()
    whole.update(pred, target)
    parts.update(pred[:1], target[:1])
    parts.update(pred[1:], target[1:])
    # Two "processes" each see a half; merging their states is what DDP's sum reduction does.
    other = make()
    merged.update(pred[:2], target[:2])
    other.update(pred[2:], target[2:])
    merged.merge_state(other)
    expected = values(whole)
    assert values(parts) == pytest.approx(expected, abs=1e-5)
    assert values(merged) == pytest.approx(expected, abs=1e-5)
    # Not vacuous: one sample alone gives other values than the whole batch.
    single = make()
    single.update(pred[1:2], target[1:2])
    assert values(single) != pytest.approx(expected, abs=1e-5)


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------


def _obj(shape, color, size, x, depth, wx, wz, radius=0.3, visible=100):
    return {
        "shape": shape,
        "color": color,
        "size": size,
        "camera_center": [x, 0.3, -depth],
        "center": [wx, 0.3, wz],
        "footprint_radius": radius,
        "visible_pixels": visible,
    }


def _scene():
    # A small red cube at camera x = -1 and a large blue sphere at x = +1, both 5 m away, 2 m
    # apart on the floor (gap 2 - 0.3 - 0.3 = 1.4 m: not next to each other); an occluded green
    # cone; one visible wall 0.5 m from the cube (0.5 - 0.3 < WALL_GAP), far from the sphere.
    return {
        "objects": [
            _obj("cube", "red", "small", -1.0, 5.0, -1.0, 0.0),
            _obj("sphere", "blue", "large", 1.0, 5.0, 1.0, 0.0),
            _obj("cone", "green", "small", 0.0, 7.0, 0.0, -2.0, visible=0),
        ],
        "room": {
            "walls": [
                {"name": "wall_x_neg", "normal": [1.0, 0.0, 0.0], "offset": 1.5, "visible": True},
                {"name": "wall_x_pos", "normal": [-1.0, 0.0, 0.0], "offset": 1.1, "visible": False},
            ]
        },
    }


def test_caption_one_true_one_false_object():
    # "red cube" exists, "green ball" does not: objects 1/2, colours 1/2, no relation.
    metric = CaptionTruth()
    metric.update(["There is a red cube and a green ball."], [_scene()])
    out = values(metric)
    assert out["objects"] == 0.5 and out["colors"] == 0.5 and out["all"] == 0.5
    assert out["relation_mentions"] == 0 and out["relations"] == 0.0
    assert out["mentions_per_caption"] == 4


def test_caption_attributes_must_all_match():
    mentions = check_caption("A big red box. A small blue sphere. Two grey cubes.", _scene())
    assert [(m.kind, m.text, m.holds) for m in mentions] == [
        ("object", "big red box", False),  # the red cube is small
        ("object", "small blue sphere", False),  # the blue sphere is large
        ("object", "grey cubes", False),
        ("color", "big red box", True),  # colour + shape exist, size is not its business
        ("color", "small blue sphere", True),
        ("color", "grey cubes", False),
    ]


def test_caption_relations_follow_geometry():
    scene = _scene()
    true = [
        "The red cube is to the left of the blue sphere.",
        "The blue ball sits to the right of the red block.",
        "To the left of the blue sphere is the red cube.",
        "From left to right: a red cube and a blue sphere.",
        "The red cube stands close to the wall.",
    ]
    false = [
        "The blue sphere is left of the red cube.",
        "To the left of the red cube is the blue sphere.",
        "The red cube is in front of the blue sphere.",  # same depth
        "Behind the red cube stands the blue sphere.",
        "The red cube and the blue sphere are close together.",
        "Near the wall is the blue sphere.",  # 1.1 m from an invisible wall only
        "The red cube is right of the green cone.",  # the cone is not visible
    ]
    for text in true + false:
        relations = [m for m in check_caption(text, scene) if m.kind == "relation"]
        assert len(relations) == 1, text
        assert relations[0].holds == (text in true), text
    # The left rule needs the margin: move the sphere to just inside it.
    scene["objects"][1]["camera_center"][0] = -1.0 + 0.9 * LEFT_MARGIN
    relations = [m for m in check_caption(true[0], scene) if m.kind == "relation"]
    assert not relations[0].holds
    # A combined sentence states two relations; only "left of" holds here.
    mentions = check_caption(
        "The red cube is in front of and to the left of the blue sphere.", _scene()
    )
    assert [(m.text, m.holds) for m in mentions if m.kind == "relation"] == [
        ("red cube in front of blue sphere", False),
        ("red cube left of blue sphere", True),
    ]


def test_caption_garbage_does_not_crash():
    texts = [
        "",
        "left of left of cube cube behind wall near",
        "¡¿ 12 %% the the , . ; :",
        "Red! Cubes? The blue and and the",
        None,
    ]
    metric = CaptionTruth()
    metric.update(texts, [_scene()] * len(texts))
    assert values(metric)["captions"] == len(texts)


def test_caption_metric_rejects_bad_input():
    with pytest.raises(ValueError, match="captions for"):
        CaptionTruth().update(["a red cube"], [])
    with pytest.raises(ValueError, match="one string"):
        CaptionTruth().update("a red cube", [_scene()])
    with pytest.raises(ValueError, match="objects"):
        CaptionTruth().update(["a red cube"], [{"camera": {}}])


def test_caption_no_mentions_is_zero_with_counts():
    metric = CaptionTruth()
    metric.update(["An empty room with a wooden floor."], [{"objects": []}])
    out = values(metric)
    assert out["all"] == 0.0 and out["object_mentions"] == 0 and out["captions"] == 1


def test_generated_captions_are_all_true():
    """The generator's own captions, checked against its stored scene records, score 1.0."""
    from fourm_lightning.datamodules.synth.config import SceneConfig
    from fourm_lightning.datamodules.synth.generate import generate_sample

    config = SceneConfig(resolution=32, supersample=1)
    samples = [generate_sample(0, "val", i, config) for i in range(60)]
    captions = [s["caption"] for s in samples]
    scenes = [json.loads(json.dumps(s["scene"])) for s in samples]  # the stored JSON form
    metric = CaptionTruth()
    metric.update(captions, scenes)
    out = values(metric)
    assert out["all"] == 1.0, [
        (c, [m for m in check_caption(c, s) if not m.holds])
        for c, s in zip(captions, scenes, strict=True)
    ]
    assert out["relation_mentions"] > 20 and out["color_mentions"] > 60
    # The parser finds exactly the relations the generator stated.
    for caption, scene in zip(captions, scenes, strict=True):
        stated = scene["caption_statements"]
        expected = sum(s["type"] in ("relation", "near_wall") for s in stated)
        expected += sum(len(s["instances"]) - 1 for s in stated if s["type"] == "order")
        found = sum(m.kind == "relation" for m in check_caption(caption, scene))
        assert found == expected, caption
    # Captions paired with the wrong scenes are mostly false.
    shuffled = CaptionTruth()
    shuffled.update(captions, scenes[1:] + scenes[:1])
    assert values(shuffled)["all"] < 0.5


# ----------------------------------------------------------------------------------------------
# Detection
# ----------------------------------------------------------------------------------------------


def _det_batch():
    # The det modality's batch form for two images (class names, extra fields carried along).
    kind = BoxesText(class_names=SHAPE_CLASSES)
    return [
        kind.to_tensor(
            [
                {"box": [0.1, 0.1, 0.4, 0.5], "class": "cube", "color": "red"},
                {"box": [0.5, 0.2, 0.9, 0.7], "class": "sphere", "color": "blue"},
            ]
        ),
        kind.to_tensor([{"box": [0.2, 0.3, 0.6, 0.9], "class": "cone", "color": "gray"}]),
    ]


def test_detection_map_perfect_and_disjoint():
    targets = _det_batch()
    # Predictions identical to the targets (as text-parsed records, no scores): mAP 1.
    preds = [
        [{"box": b, "class": c} for b, c in zip(t["boxes"].tolist(), t["class"], strict=True)]
        for t in targets
    ]
    assert detection_map(preds, targets, SHAPE_CLASSES) == pytest.approx(
        {"map": 1.0, "map_50": 1.0}
    )
    # Same boxes, integer labels, corners written backwards (x1 < x0): still mAP 1.
    flipped = [
        {
            "boxes": t["boxes"][:, [2, 3, 0, 1]],
            "labels": torch.tensor([SHAPE_CLASSES.index(c) for c in t["class"]]),
        }
        for t in targets
    ]
    assert detection_map(flipped, targets, SHAPE_CLASSES)["map"] == pytest.approx(1.0)
    # Boxes in an empty corner of each image: mAP 0.
    disjoint = [
        {"boxes": torch.tensor([[0.95, 0.95, 1.0, 1.0]] * len(t["class"])), "labels": t["class"]}
        for t in targets
    ]
    assert detection_map(disjoint, targets, SHAPE_CLASSES) == {"map": 0.0, "map_50": 0.0}
    # Right boxes, wrong classes: mAP 0 too.
    wrong = [{"boxes": t["boxes"], "labels": ["cylinder"] * len(t["class"])} for t in targets]
    assert detection_map(wrong, targets, SHAPE_CLASSES)["map"] == 0.0


def test_detection_map_rejects_bad_input():
    targets = _det_batch()
    with pytest.raises(ValueError, match="unknown class 'pyramid'"):
        detection_map(
            [{"boxes": torch.zeros(1, 4), "labels": ["pyramid"]}, []], targets, SHAPE_CLASSES
        )
    with pytest.raises(ValueError, match="predictions for"):
        detection_map([[]], targets, SHAPE_CLASSES)
    with pytest.raises(ValueError, match="labels"):
        detection_map(
            [{"boxes": torch.zeros(2, 4), "labels": ["cube"]}, []], targets, SHAPE_CLASSES
        )
