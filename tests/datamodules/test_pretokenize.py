"""Pre-tokenization: token shards decode to what the tokenizers give directly, resume, errors."""

import pytest
import torch

from fourm_lightning.datamodules.pretokenize import (
    iter_token_samples,
    pretokenize_dataset,
    read_token_manifest,
    sample_crops,
)
from fourm_lightning.datamodules.shards import iter_samples, read_manifest
from fourm_lightning.datamodules.transforms import apply_crop
from fourm_lightning.modalities import DataError
from fourm_lightning.tokenizers.loading import load_tokenizer


def test_manifest_records_tokenizers_crops_and_shards(token_dataset, tiny_dataset, tokenizer_dirs):
    manifest = read_token_manifest(token_dataset)
    source = read_manifest(tiny_dataset)
    assert manifest.num_crops == {"train": 2, "val": 1}
    assert manifest.resolution == source.resolution
    assert set(manifest.tokenizers) == {"rgb", "depth", "semseg", "camera"}
    assert manifest.tokenizers["depth"].token_shape == [4, 4]
    assert manifest.tokenizers["camera"].token_shape == [2]
    assert manifest.tokenizers["semseg"].vocab_size == 75
    assert {r.dtype for r in manifest.tokenizers.values()} == {"int16"}
    assert manifest.precision == "bf16"  # the default: tokenizers run as they were validated
    # RGB is tokenized (4M's target) and kept as pixels (4M's input).
    assert list(manifest.raw) == ["rgb", "caption", "det", "metadata", "color_palette"]
    for split in ("train", "val"):
        assert manifest.num_samples(split) == source.num_samples(split)
        assert [p.name for p in manifest.shard_paths(split)] == [
            p.name for p in source.shard_paths(split)
        ]


def test_tokens_decode_to_what_the_tokenizers_give_directly(token_dataset, tiny_dataset):
    manifest = read_token_manifest(token_dataset)
    specs = read_manifest(tiny_dataset).specs
    tokenizers = {name: load_tokenizer(r.path) for name, r in manifest.tokenizers.items()}
    checked = 0
    for split in ("train", "val"):
        raws = iter_samples(tiny_dataset, split)
        for raw, tok in zip(raws, iter_token_samples(token_dataset, split), strict=True):
            assert raw["__key__"] == tok["__key__"]
            index = int(raw["__key__"])
            crops = sample_crops(0, split, index, 32, 32, manifest.num_crops[split])
            assert tok["crops"] == crops  # reproducible from (seed, split, index) alone
            tensors = {n: specs[n].kind.to_tensor(raw[n]) for n in specs}
            for k, crop in enumerate(crops):
                view = apply_crop(tensors, specs, crop)
                for name, tokenizer in tokenizers.items():
                    kind = specs[name].kind
                    # One crop alone, under the autocast the token dataset records.
                    with torch.autocast("cpu", torch.bfloat16, manifest.precision == "bf16"):
                        direct = tokenizer.encode(kind.collate([view[name]]))[0]
                    stored = tok[f"tok_{name}"][k]
                    torch.testing.assert_close(stored, direct, rtol=0, atol=0, msg=name)
                    # Same tokens, so the same reconstruction, number for number.
                    torch.testing.assert_close(
                        tokenizer.decode(stored[None]), tokenizer.decode(direct[None])
                    )
                # Raw spatial modalities are stored crop by crop, aligned with the tokens.
                assert torch.equal(specs["rgb"].kind.to_tensor(tok["rgb"][k]), view["rgb"])
                assert tok["det"][k] == specs["det"].kind.to_stored(view["det"])
                checked += 1
            assert tok["caption"] == raw["caption"] and tok["metadata"] == raw["metadata"]
    assert checked == 24 * 2 + 8


def test_rerun_resumes_and_a_lost_shard_is_rebuilt_identically(
    token_dataset, tiny_dataset, tokenizer_dirs
):
    shard = token_dataset / "train" / "shard-000002.tar"
    before = {p: p.stat().st_mtime_ns for p in token_dataset.rglob("*.tar")}
    original = shard.read_bytes()
    shard.unlink()
    pretokenize_dataset(tiny_dataset, token_dataset, tokenizer_dirs, num_crops=2, progress=False)
    after = {p: p.stat().st_mtime_ns for p in token_dataset.rglob("*.tar")}
    rewritten = sorted(p.name for p in after if after[p] != before.get(p))
    assert rewritten == ["shard-000002.tar"]
    assert shard.read_bytes() == original  # deterministic crops and tokens


def test_other_settings_into_the_same_folder_are_refused(
    token_dataset, tiny_dataset, tokenizer_dirs
):
    with pytest.raises(ValueError, match="other settings"):
        pretokenize_dataset(
            tiny_dataset, token_dataset, tokenizer_dirs, num_crops=3, progress=False
        )
    with pytest.raises(ValueError, match="other settings"):
        pretokenize_dataset(
            tiny_dataset, token_dataset, tokenizer_dirs, num_crops=2, precision="32"
        )


def test_bad_tokenizer_and_modality_arguments_are_clear_errors(
    tiny_dataset, tokenizer_dirs, tmp_path
):
    with pytest.raises(ValueError, match="tokenizer for modality 'depth', not 'normal'"):
        pretokenize_dataset(tiny_dataset, tmp_path / "a", {"normal": tokenizer_dirs["depth"]})
    with pytest.raises(ValueError, match="unknown modalities \\['dpeth'\\]"):
        pretokenize_dataset(tiny_dataset, tmp_path / "b", {"dpeth": tokenizer_dirs["depth"]})
    with pytest.raises(ValueError, match="unknown splits"):
        pretokenize_dataset(tiny_dataset, tmp_path / "d", tokenizer_dirs, splits=["tets"])
    with pytest.raises(ValueError, match="precision must be one of"):
        pretokenize_dataset(tiny_dataset, tmp_path / "e", tokenizer_dirs, precision="fp16")


def test_float32_precision_gives_the_plain_float32_tokens(tiny_dataset, tokenizer_dirs, tmp_path):
    out = tmp_path / "tok32"
    manifest = pretokenize_dataset(
        tiny_dataset, out, {"depth": tokenizer_dirs["depth"]}, splits=["val"], precision="32"
    )
    assert read_token_manifest(out).precision == "32"
    tokenizer = load_tokenizer(tokenizer_dirs["depth"])
    specs = {"depth": read_manifest(tiny_dataset).specs["depth"]}
    stored = torch.stack([t["tok_depth"][0] for t in iter_token_samples(out, "val")])
    values = []
    for raw in iter_samples(tiny_dataset, "val", ["depth"]):
        (crop,) = sample_crops(0, "val", int(raw["__key__"]), 32, 32, 1)
        tensors = {"depth": specs["depth"].kind.to_tensor(raw["depth"])}
        values.append(apply_crop(tensors, specs, crop)["depth"])
    assert manifest.num_samples("val") == len(values)
    direct = tokenizer.encode(specs["depth"].kind.collate(values))  # no autocast at all
    assert torch.equal(stored, direct)


def test_corrupt_source_sample_names_file_key_and_modality(
    handmade_dataset, tokenizer_dirs, tmp_path
):
    data = handmade_dataset(
        tmp_path / "raw", num_val=6, resolution=32, broken={4: {"depth.npy": b"not npy"}}
    )
    with pytest.raises(DataError) as error:
        pretokenize_dataset(data, tmp_path / "tok", tokenizer_dirs, progress=False)
    assert error.value.key == "00000004" and error.value.modality == "depth"
    assert error.value.file is not None and error.value.file.endswith("shard-000001.tar")
    # The shard with the bad sample was not left behind looking complete.
    assert not (tmp_path / "tok" / "val" / "shard-000001.tar").exists()
