"""Shared fixtures: hand-made scene samples and a tiny built-in dataset made once per session."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from fourm_lightning.modalities.vocab import COLORS, SHAPE_CLASSES, SIZES

#: The session dataset: small enough to generate in seconds on 2 shared cores.
TINY_TRAIN = 24
TINY_VAL = 8
TINY_RESOLUTION = 32
TINY_SHARD = 4  # samples per shard: 6 train shards and 2 val shards


def make_scene_sample(index: int, resolution: int = 16, seed: int = 0) -> dict:
    """A small hand-made sample in the generator's output form (PIXEL boxes, unit normals).

    Objects are rectangles seen as ramps: depth increases to the right (the surface faces right,
    normal x > 0) or to the left (normal x < 0), so normal and depth agree as in a real render.
    """
    rng = np.random.default_rng([seed, index])
    h = w = resolution
    semseg = np.zeros((h, w), np.uint8)
    semseg[: h // 2] = 1  # wall above, floor below
    instance = np.zeros((h, w), np.uint8)
    rows = np.arange(h, dtype=np.float32)[:, None]
    depth = np.where(rows < h // 2, 8.0, 8.0 - 6.0 * (rows - h // 2) / h) * np.ones((1, w))
    depth = depth.astype(np.float32)
    normal = np.zeros((h, w, 3), np.float32)
    normal[: h // 2] = (0.0, 0.0, 1.0)
    normal[h // 2 :] = (0.0, 1.0, 0.0)
    color_names = list(COLORS)
    rgb = np.where(semseg[..., None] == 1, 180, 120).astype(np.uint8) * np.ones((1, 1, 3), np.uint8)
    objects = []
    for obj in range(1, int(rng.integers(1, 4)) + 1):
        y0, x0 = (int(v) for v in rng.integers(0, h - 4, 2))
        y1, x1 = y0 + int(rng.integers(3, h - y0 + 1)), x0 + int(rng.integers(3, w - x0 + 1))
        shape = SHAPE_CLASSES[int(rng.integers(len(SHAPE_CLASSES)))]
        color = color_names[int(rng.integers(len(color_names)))]
        facing = 1.0 if rng.random() < 0.5 else -1.0
        semseg[y0:y1, x0:x1] = 2 + SHAPE_CLASSES.index(shape)
        instance[y0:y1, x0:x1] = obj
        xs = np.arange(x0, x1, dtype=np.float32)
        depth[y0:y1, x0:x1] = 3.0 + facing * 1.5 * (xs - (x0 + x1) / 2) / w
        normal[y0:y1, x0:x1] = np.array([facing * 0.5, 0.0, 1.0]) / np.sqrt(1.25)
        rgb[y0:y1, x0:x1] = COLORS[color]
        objects.append({"class": shape, "color": color, "size": SIZES[obj % 2], "instance": obj})
    det = []
    for item in objects:
        ys, xs = np.nonzero(instance == item["instance"])
        if len(xs):  # occluded objects have no box
            box = [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
            det.append({"box": box, **item})
    edges = np.zeros((h, w), np.uint8)
    edges[:, 1:] |= (instance[:, 1:] != instance[:, :-1]) | (semseg[:, 1:] != semseg[:, :-1])
    edges[1:] |= (instance[1:] != instance[:-1]) | (semseg[1:] != semseg[:-1])
    return {
        "rgb": rgb,
        "depth": depth,
        "normal": normal,
        "semseg": semseg,
        "instance": instance,
        "det": det,
        "caption": f"scene {index} with {len(det)} objects",
        "canny_edge": edges.copy(),
        "instance_edge": edges,
        "color_palette": [
            {"rgb": [180, 180, 180], "weight": 0.6},
            {"rgb": [1, 2, 3], "weight": 0.4},
        ],
        "metadata": {"brightness": float(rgb.mean()), "instance_count": float(len(det))},
        "camera": rng.normal(size=10).astype(np.float32),
        "scene": {"objects": objects, "index": index},
    }


def sha256_tree(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root``."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def write_handmade_dataset(
    root: Path,
    num_val: int = 6,
    resolution: int = 16,
    samples_per_shard: int = 3,
    broken: dict[int, dict[str, bytes | None]] | None = None,
    splits: tuple[str, ...] = ("val",),
    num_train: int | None = None,
) -> Path:
    """A dataset of hand-made samples (``num_val`` per split); ``broken[i]`` overrides members.

    ``num_train`` gives the train split its own size (samples are the same function of the index
    in every split, which is all the DataModule tests need).

    ``broken = {4: {"depth.npy": None}}`` drops sample 4's depth file; ``{4: {"depth.npy": b"x"}}``
    replaces its bytes. The manifest lists the built-in modalities.
    """
    from fourm_lightning.datamodules.build import scene_to_stored
    from fourm_lightning.datamodules.shards import (
        Manifest,
        ShardInfo,
        ShardWriter,
        encode_sample,
        sample_key,
        shard_name,
        write_manifest,
    )
    from fourm_lightning.modalities import builtin_modalities, specs_by_name

    specs = builtin_modalities()
    broken = broken or {}
    split_shards = {}
    for split in splits:
        shards = []
        count = num_train if split == "train" and num_train is not None else num_val
        for number, start in enumerate(range(0, count, samples_per_shard)):
            rel = shard_name(split, number)
            stop = min(count, start + samples_per_shard)
            with ShardWriter(root / rel, specs, resolution) as writer:
                for index in range(start, stop):
                    stored = scene_to_stored(make_scene_sample(index, resolution), resolution)
                    members = encode_sample(stored, specs, resolution)
                    for filename, payload in broken.get(index, {}).items():
                        if payload is None:
                            members.pop(filename)
                        else:
                            members[filename] = payload
                    writer.write_encoded(sample_key(index), members)
            shards.append(ShardInfo(rel, stop - start))
        split_shards[split] = tuple(shards)
    write_manifest(Manifest(root, resolution, specs_by_name(specs), split_shards))
    return root


@pytest.fixture
def handmade_dataset():
    """The ``write_handmade_dataset`` function (conftest modules are not importable by tests)."""
    return write_handmade_dataset


@pytest.fixture
def scene_sample():
    """The ``make_scene_sample`` function."""
    return make_scene_sample


@pytest.fixture(scope="session")
def tree_hashes():
    """The ``sha256_tree`` function."""
    return sha256_tree


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 train + 8 val built-in samples at 32x32 (6 train shards, 2 val shards), made once."""
    from fourm_lightning.datamodules.build import synthesize_dataset

    out = tmp_path_factory.mktemp("data") / "tiny"
    synthesize_dataset(
        out,
        num_train=TINY_TRAIN,
        num_val=TINY_VAL,
        resolution=TINY_RESOLUTION,
        seed=0,
        workers=1,
        samples_per_shard=TINY_SHARD,
        progress=False,
    )
    return out


VIT = {"image_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}
COSINE = {
    "class_path": "fourm_lightning.tokenizers.quantizers.CosineVQ",
    "init_args": {"dim": 8, "codebook_size": 64},
}
FSQ = {
    "class_path": "fourm_lightning.tokenizers.quantizers.FSQQuantizer",
    "init_args": {"levels": [5, 5, 3]},
}


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory):
    """Untrained (seeded) tokenizer exports for rgb, depth, semseg and camera."""
    import torch

    from fourm_lightning.tokenizers.lit_mlp_vq import VectorVQTokenizer
    from fourm_lightning.tokenizers.lit_vqvae import VQVAETokenizer

    root = tmp_path_factory.mktemp("tokenizers")
    torch.manual_seed(0)
    modules = {
        "rgb": VQVAETokenizer.from_config({"modality": "rgb", "quantizer": FSQ, **VIT}),
        "depth": VQVAETokenizer.from_config({"modality": "depth", "quantizer": COSINE, **VIT}),
        "semseg": VQVAETokenizer.from_config({"modality": "semseg", "quantizer": FSQ, **VIT}),
        "camera": VectorVQTokenizer.from_config(
            {"modality": "camera", "quantizer": COSINE, "num_tokens": 2, "hidden_dim": 16}
        ),
    }
    return {name: str(module.export(root / name)) for name, module in modules.items()}


@pytest.fixture(scope="session")
def token_dataset(tiny_dataset, tokenizer_dirs, tmp_path_factory):
    """The tiny dataset pre-tokenized with ``tokenizer_dirs`` (2 crops per train sample)."""
    from fourm_lightning.cli import main

    out = tmp_path_factory.mktemp("tokens") / "tok"
    main(
        [
            "data",
            "pretokenize",
            "--data-dir",
            str(tiny_dataset),
            "--out",
            str(out),
            "--tokenizers",
            json.dumps(tokenizer_dirs),
            "--num-crops",
            "2",
            "--batch-size",
            "5",  # not a divisor of the shard size: chunks straddle nothing, end short
        ]
    )
    return out


@pytest.fixture(scope="session")
def text_tokenizer_dir(tiny_dataset, tmp_path_factory):
    """A WordPiece text tokenizer trained on the tiny dataset's captions."""
    from fourm_lightning.tokenizers.lit_text import train_text_tokenizer

    out = tmp_path_factory.mktemp("text_tokenizer")
    train_text_tokenizer(str(tiny_dataset), str(out), vocab_size=4200)
    return str(out)


# 4M on the tiny token dataset (pretraining and generation tests)


def domain_configs(tokenizer_dirs, text_dir, text_vocab):
    def entry(cls, **args):
        return {"class_path": f"fourm_lightning.models.domains.{cls}", "init_args": args}

    out = [entry("PixelDomain", name="rgb", image_size=32, patch_size=8)]
    for name, vocab in (("rgb", 75), ("depth", 64), ("semseg", 75)):
        out.append(
            entry("ImageTokenDomain", name=f"tok_{name}", vocab_size=vocab, grid=4,
                  tokenizer=tokenizer_dirs[name])
        )  # fmt: skip
    out.append(
        entry("VectorTokenDomain", name="tok_camera", vocab_size=64, length=2,
              tokenizer=tokenizer_dirs["camera"])
    )  # fmt: skip
    for name, length, chunked in (
        ("caption", 24, False),
        ("det", 24, False),
        ("metadata", 24, True),
    ):
        out.append(
            entry("TextDomain", name=name, vocab_size=text_vocab, max_tokens=length,
                  chunked=chunked, tokenizer=text_dir)
        )  # fmt: skip
    return out


MIXTURE = [
    {
        "name": "all2all",
        "input_alphas": dict.fromkeys(
            [
                "rgb",
                "tok_rgb",
                "tok_depth",
                "tok_semseg",
                "tok_camera",
                "caption",
                "det",
                "metadata",
            ],
            0.5,
        ),
        "target_alphas": dict.fromkeys(
            ["tok_rgb", "tok_depth", "tok_semseg", "tok_camera", "caption", "det", "metadata"], 0.5
        ),
    },
    {"name": "rgb2all", "input_alphas": {"rgb": 1000.0}, "target_alphas": {"tok_depth": 1.0}},
]


@pytest.fixture(scope="session")
def experiment(token_dataset, tokenizer_dirs, text_tokenizer_dir, tmp_path_factory):
    """A complete fit config for the tiny token dataset (like fourm_nano_synth.yaml)."""
    from fourm_lightning.tokenizers.text import TextTokenizer

    root = tmp_path_factory.mktemp("fourm")
    vocab = TextTokenizer.load(text_tokenizer_dir).vocab_size
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "precision": "bf16-mixed",
            "max_steps": 4,
            "gradient_clip_val": 1.0,  # as the real experiment: clipping under bf16-mixed
            "val_check_interval": 2,
            "check_val_every_n_epoch": None,
            "limit_val_batches": 2,
            "log_every_n_steps": 1,
            "enable_progress_bar": False,
            "default_root_dir": str(root),
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": str(root), "name": "fourm"},
            },
            "callbacks": [
                {
                    "class_path": "fourm_lightning.callbacks.ModelCheckpoint",
                    "init_args": {"save_last": True, "every_n_train_steps": 2},
                }
            ],
        },
        "model": {
            "class_path": "fourm_lightning.pretraining.FourMPretraining",
            "init_args": {
                "dim": 32,
                "encoder_depth": 1,
                "decoder_depth": 1,
                "num_heads": 2,
                "warmup_steps": 2,
                "domains": domain_configs(tokenizer_dirs, text_tokenizer_dir, vocab),
            },
        },
        "data": {
            "class_path": "fourm_lightning.datamodules.tokens.TokenDataModule",
            "init_args": {
                "data_dir": str(token_dataset),
                "batch_size": 4,
                "num_workers": 0,
                "input_tokens": [8, 24],
                "target_tokens": [16, 16],
                "epoch_samples": 24,
                "mixture": MIXTURE,
            },
        },
    }
    path = root / "fourm_tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def fitted(experiment):
    """The tiny 4M fitted for 4 steps through the CLI, and its last checkpoint."""
    from fourm_lightning.cli import main

    cli = main(["fit", "--config", str(experiment)])
    return cli, experiment.parent / "fourm" / "version_0" / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="session")
def fashion_dataset(tmp_path_factory):
    """Fashion-MNIST shards converted from fake idx files (12 train, 6 test images)."""
    from fakes import fake_fashion_source

    from fourm_lightning.datamodules.fashion_mnist import convert_fashion_mnist

    root = tmp_path_factory.mktemp("fashion")
    fake_fashion_source(root / "source")
    convert_fashion_mnist(root / "shards", source=root / "source")
    return root / "shards"
