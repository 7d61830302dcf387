"""4M pretraining end to end through the real CLI on the tiny token dataset, and its weights."""

import shutil
from pathlib import Path

import pytest
import torch
import yaml
from einops import rearrange

from fourm_lightning.cli import main
from fourm_lightning.datamodules.masking import MixtureComponent
from fourm_lightning.datamodules.tokens import TokenDataModule
from fourm_lightning.models import FourM, ImageTokenDomain, TextDomain
from fourm_lightning.pretraining import (
    CosineSchedule,
    FourMPretraining,
    StableDecaySchedule,
    warmup_cosine,
    warmup_stable_decay,
)
from fourm_lightning.tokenizers.loading import load_tokenizer

ROOT = Path(__file__).resolve().parents[2]


def test_fit_through_the_cli_logs_every_modality_and_checkpoints(fitted):
    cli, last = fitted
    assert cli.trainer.global_step == 4 and last.is_file()
    metrics = cli.trainer.logged_metrics
    assert torch.isfinite(metrics["train/loss"]) and torch.isfinite(metrics["val/loss"])
    assert any(k.startswith("val/loss_tok_depth") for k in metrics)
    assert any(k.startswith("train/acc_") for k in metrics)


def test_lightning_checkpoint_round_trip(fitted):
    cli, last = fitted
    loaded = FourMPretraining.load_from_checkpoint(last, map_location="cpu")
    for name, value in cli.model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], value, msg=name)
    assert set(loaded.tokenizer_records) == {
        "tok_rgb", "tok_depth", "tok_semseg", "tok_camera", "caption", "det", "metadata",
    }  # fmt: skip
    assert all(len(r["sha256"]) == 64 for r in loaded.tokenizer_records.values())


def val_batch(cli):
    datamodule = cli.datamodule
    return next(iter(datamodule.val_dataloader()))


def test_save_and_from_pretrained_round_trip(fitted, tmp_path):
    cli, _ = fitted
    module = cli.model.eval()
    folder = module.save_pretrained(tmp_path / "export", bundle_tokenizers=False)
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors"}
    model = FourM.from_pretrained(folder, check_tokenizers=True)
    batch = val_batch(cli)
    with torch.no_grad():
        torch.testing.assert_close(model(batch).loss, module.model(batch).loss)
    assert model.tokenizer_records == module.tokenizer_records


def test_export_bundles_the_tokenizers_and_loads_from_another_directory(
    fitted, tmp_path, monkeypatch
):
    cli, _ = fitted
    module = cli.model.eval()
    folder = module.save_pretrained(tmp_path / "export")
    # The text domains share one tokenizer folder: one copy.
    assert sorted(p.name for p in (folder / "tokenizers").iterdir()) == [
        "caption", "tok_camera", "tok_depth", "tok_rgb", "tok_semseg",
    ]  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    model = FourM.from_pretrained(Path("..") / "export", check_tokenizers=True)
    assert set(model.tokenizer_records) == set(module.tokenizer_records)
    for name in module.tokenizer_records:
        domain, record = model.domains[name], model.tokenizer_records[name]
        assert record["source"] == module.tokenizer_records[name]["path"], name
        assert Path(domain.tokenizer).is_relative_to(folder.resolve()), name
    # The bundled checkpoints decode exactly like the ones the model was trained with.
    batch = val_batch(cli)
    tokens = rearrange(batch["tok_depth"]["tensor"][:2], "b (h w) -> b h w", h=4)
    original = load_tokenizer(module.model.domains["tok_depth"].tokenizer)
    bundled = load_tokenizer(model.domains["tok_depth"].tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(bundled.decode(tokens), original.decode(tokens))
    with torch.no_grad():
        torch.testing.assert_close(model(batch).loss, module.model(batch).loss)


def test_from_pretrained_refuses_a_changed_tokenizer(tokenizer_dirs, tmp_path):
    copy = Path(shutil.copytree(tokenizer_dirs["depth"], tmp_path / "tok_depth"))
    domain = ImageTokenDomain("tok_depth", vocab_size=64, grid=4, tokenizer=str(copy))
    module = FourMPretraining([domain], dim=16, encoder_depth=1, decoder_depth=1, num_heads=2)
    folder = module.save_pretrained(tmp_path / "export", bundle_tokenizers=False)
    bundled = module.save_pretrained(tmp_path / "bundled")
    FourM.from_pretrained(folder, check_tokenizers=True)  # unchanged: fine
    FourM.from_pretrained(bundled, check_tokenizers=True)
    for tokenizer in (copy, bundled / "tokenizers" / "tok_depth"):
        weights = next(p for p in tokenizer.iterdir() if p.suffix == ".safetensors")
        weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="domain 'tok_depth' was trained with the tokenizer"):
        FourM.from_pretrained(folder, check_tokenizers=True)
    with pytest.raises(ValueError, match="domain 'tok_depth' was trained with the tokenizer"):
        FourM.from_pretrained(bundled, check_tokenizers=True)
    # Bundling a tokenizer that changed since training would pair the weights with other ids.
    with pytest.raises(ValueError, match=r"'tok_depth': its tokenizer .* changed since training"):
        module.save_pretrained(tmp_path / "again")


def test_vocabulary_that_differs_from_the_tokenizer_is_an_error(tokenizer_dirs, text_tokenizer_dir):
    domain = ImageTokenDomain(
        "tok_depth", vocab_size=1000, grid=4, tokenizer=tokenizer_dirs["depth"]
    )
    with pytest.raises(ValueError, match=r"'tok_depth': vocab_size 1000 but its tokenizer .* 64"):
        FourMPretraining([domain], dim=16, encoder_depth=1, decoder_depth=1, num_heads=2)
    text = TextDomain("caption", vocab_size=7, tokenizer=text_tokenizer_dir)
    with pytest.raises(ValueError, match="'caption': vocab_size 7 but its tokenizer"):
        FourMPretraining([text], dim=16, encoder_depth=1, decoder_depth=1, num_heads=2)


def test_datamodule_checks_domains_against_the_token_dataset(token_dataset):
    def datamodule(domain):
        mixture = [MixtureComponent({domain.name: 1.0}, {domain.name: 1.0})]
        return TokenDataModule(str(token_dataset), mixture, domains=[domain])

    wrong = ImageTokenDomain("tok_depth", vocab_size=99, grid=4)
    with pytest.raises(ValueError, match=r"'tok_depth': vocab_size 99 but the dataset's 'depth'"):
        datamodule(wrong).setup()
    missing = ImageTokenDomain("tok_normal", vocab_size=64, grid=4)
    with pytest.raises(ValueError, match="no tokens of 'normal' for domain 'tok_normal'"):
        datamodule(missing).setup()
    not_kept = TextDomain("instance_text", source="scene", vocab_size=10)
    with pytest.raises(ValueError, match="reads raw 'scene', which the dataset did not keep"):
        datamodule(not_kept).setup()


@pytest.mark.parametrize("component_per", ["sample", "batch"])
def test_mixture_component_per_sample_or_per_batch(token_dataset, component_per):
    # Component "depth" targets only depth tokens, "rgb" only RGB tokens: a batch's target masks
    # show which components its samples drew.
    depth = ImageTokenDomain("tok_depth", vocab_size=64, grid=4)
    rgb = ImageTokenDomain("tok_rgb", vocab_size=75, grid=4)
    both = {"tok_depth": 1.0, "tok_rgb": 1.0}
    mixture = [
        MixtureComponent(both, {"tok_depth": 1.0}, name="depth"),
        MixtureComponent(both, {"tok_rgb": 1.0}, name="rgb"),
    ]
    datamodule = TokenDataModule(
        str(token_dataset), mixture, input_tokens=(4, 4), target_tokens=(4, 4),
        domains=[depth, rgb], batch_size=4, num_workers=0, epoch_samples=48,
        component_per=component_per,
    )  # fmt: skip
    datamodule.setup()
    kinds = []
    for batch in datamodule.train_dataloader():
        targets_depth = batch["tok_depth"]["target_mask"].any(1)
        targets_rgb = batch["tok_rgb"]["target_mask"].any(1)
        assert torch.equal(targets_depth, ~targets_rgb)  # one component per sample
        kinds.append(set(targets_depth.tolist()))
    assert len(kinds) == 12
    if component_per == "batch":
        assert all(len(k) == 1 for k in kinds)
        assert {True, False} == set().union(*kinds)  # both components were drawn
    else:
        assert any(len(k) == 2 for k in kinds)
    # Validation keeps per-sample components (and its deterministic masks) either way.
    val = next(iter(datamodule.val_dataloader()))
    assert len(set(val["tok_depth"]["target_mask"].any(1).tolist())) == 2
    with pytest.raises(ValueError, match="component_per must be 'sample' or 'batch'"):
        TokenDataModule(str(token_dataset), mixture, component_per="epoch")


@pytest.mark.parametrize("num_workers", [0, 2])
def test_shard_cache_leaves_the_training_batches_unchanged(token_dataset, num_workers):
    depth = ImageTokenDomain("tok_depth", vocab_size=64, grid=4)
    mixture = [MixtureComponent({"tok_depth": 1.0}, {"tok_depth": 1.0})]

    def batches(cache_mb):
        datamodule = TokenDataModule(
            str(token_dataset), mixture, input_tokens=(4, 4), target_tokens=(4, 4),
            domains=[depth], batch_size=4, num_workers=num_workers, epoch_samples=96,
            shard_cache_mb=cache_mb,
        )  # fmt: skip
        datamodule.setup()
        loader = datamodule.train_dataloader()
        assert loader.dataset.cache_bytes == cache_mb * 2**20
        out = list(loader)
        if num_workers == 0 and cache_mb:  # in this process: the cache holds the split
            assert loader.dataset._cache.bytes > 0 and len(loader.dataset._cache.shards) >= 1
        return out

    # 96 samples per epoch from a smaller train split: every worker reads some shards again,
    # and those come from its cache.
    plain, cached = batches(0), batches(16)
    assert len(plain) == len(cached) == 24
    for a, b in zip(plain, cached, strict=True):
        assert a["__key__"] == b["__key__"]
        for key in ("tensor", "input_mask", "target_mask"):
            assert torch.equal(a["tok_depth"][key], b["tok_depth"][key])
    with pytest.raises(ValueError, match="shard_cache_mb must be >= 0"):
        TokenDataModule(str(token_dataset), mixture, shard_cache_mb=-1)


def test_training_batch_missing_a_modality_is_an_error(fitted):
    cli, _ = fitted
    batch = val_batch(cli)
    del batch["caption"]
    with pytest.raises(KeyError, match=r"lacks the model's modalities \['caption'\]"):
        cli.model.training_step(batch, 0)


def test_validation_masks_are_deterministic(fitted):
    cli, _ = fitted
    first, second = val_batch(cli), val_batch(cli)
    for name, value in first.items():
        if isinstance(value, dict):
            for key, tensor in value.items():
                assert torch.equal(tensor, second[name][key]), (name, key)


def test_resume_continues_the_schedule_and_optimizer(fitted, experiment):
    _, last = fitted
    resumed = main(
        ["fit", "--config", str(experiment), "--trainer.max_steps", "6", "--ckpt_path", str(last)]
    )
    assert resumed.trainer.global_step == 6
    optimizer = resumed.trainer.optimizers[0]
    steps = {int(state["step"]) for state in optimizer.state.values()}
    assert steps == {6}  # 4 restored + 2 new, not a fresh optimizer
    scheduler = resumed.trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.last_epoch == 6


def test_no_decay_groups_and_schedule():
    module = FourMPretraining(
        [ImageTokenDomain("tok", vocab_size=8, grid=2)], dim=16, encoder_depth=1,
        decoder_depth=1, num_heads=2,
    )  # fmt: skip
    decay, plain = module.parameter_groups()
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert all("norm" in names[id(p)] or names[id(p)].endswith("bias") for p in plain["params"])
    assert any(names[id(p)].endswith("mod_emb") for p in decay["params"])
    assert plain["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    assert warmup_cosine(0, 10, 100, 0.0) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100, 0.0) == pytest.approx(1.0)
    assert warmup_cosine(100, 10, 100, 0.1) == pytest.approx(0.1)


def test_warmup_stable_decay_holds_the_peak_then_decays_linearly():
    # 10 warmup steps, 100 after them; the last 20 decay.
    assert warmup_stable_decay(0, 10, 110, 0.01, 0.2) == pytest.approx(0.1)
    assert all(warmup_stable_decay(s, 10, 110, 0.01, 0.2) == 1.0 for s in range(9, 91))
    assert warmup_stable_decay(100, 10, 110, 0.01, 0.2) == pytest.approx(0.505)
    assert warmup_stable_decay(110, 10, 110, 0.01, 0.2) == pytest.approx(0.01)
    assert warmup_stable_decay(500, 10, 110, 0.01, 0.2) == pytest.approx(0.01)
    # More learning rate than the cosine over the same steps: ~0.9 of the steps against ~0.5.
    wsd = sum(warmup_stable_decay(s, 10, 110, 0.0, 0.2) for s in range(110))
    cosine = sum(warmup_cosine(s, 10, 110, 0.0) for s in range(110))
    assert wsd == pytest.approx(5.5 + 80 + 10, abs=0.6) and cosine == pytest.approx(55.5, abs=0.6)


def test_the_module_builds_the_named_schedule_and_refuses_unknown_ones():
    domain = ImageTokenDomain("tok", vocab_size=8, grid=2)
    small = {"dim": 16, "encoder_depth": 1, "decoder_depth": 1, "num_heads": 2}
    for name, kind in (("cosine", CosineSchedule), ("wsd", StableDecaySchedule)):
        module = FourMPretraining([domain], **small, lr_schedule=name, cooldown=0.3)
        scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
        schedule = scheduler.lr_lambdas[0]  # one per parameter group, the same object
        assert isinstance(schedule, kind)
        assert schedule.total_steps == 10**9  # no Trainer: no end
    assert schedule.cooldown == 0.3  # the wsd one
    with pytest.raises(ValueError, match="lr_schedule must be 'cosine' or 'wsd'"):
        FourMPretraining([domain], **small, lr_schedule="linear")
    with pytest.raises(ValueError, match=r"cooldown must be in \(0, 1\]"):
        FourMPretraining([domain], **small, lr_schedule="wsd", cooldown=0.0)
    with pytest.raises(ValueError, match="length_groups must be at least 1"):
        FourMPretraining([domain], **small, length_groups=0)


@pytest.mark.parametrize(
    ("precision", "clip", "fused"),
    [("32-true", 1.0, True), ("bf16-mixed", 1.0, False), ("bf16-mixed", None, True)],
)
def test_fused_adamw_unless_lightning_would_refuse_clipping(precision, clip, fused):
    # Lightning's MixedPrecision refuses to clip a fused optimizer's gradients; float32 does not.
    from lightning.pytorch import Trainer

    module = FourMPretraining(
        [ImageTokenDomain("tok", vocab_size=8, grid=2)], dim=16, encoder_depth=1,
        decoder_depth=1, num_heads=2,
    )  # fmt: skip
    module.trainer = Trainer(
        accelerator="cpu", precision=precision, gradient_clip_val=clip, logger=False
    )
    assert module.use_fused_adamw() is fused
    optimizer = module.configure_optimizers()["optimizer"]
    assert all(group["fused"] is fused for group in optimizer.param_groups)


def test_experiment_config_parses_with_every_builtin_domain():
    from fourm_lightning.cli import lightning_cli

    config = ROOT / "configs/experiment/fourm_nano_synth.yaml"
    cli = lightning_cli(
        ["--config", str(config), "--model.init_args.check_tokenizers", "false"], run=False
    )
    assert len(cli.model.domains) == 12
    assert cli.model.model.trunk_parameters() == pytest.approx(7.4e6, rel=0.01)


@pytest.mark.parametrize(
    "mixture",
    [
        "all2all_rgb2all_captionbias",
        "rgb2all",
        "all2all_multialpha",
        "quickstart",
        "quickstart_caption2all",
        "quickstart_caption_chain",
        "quickstart_caption_weighted",
    ],
)
def test_mixture_files_load_as_yaml_lists_for_the_builtin_domains(mixture):
    from fourm_lightning.cli import lightning_cli
    from fourm_lightning.datamodules.masking import check_mixture

    config = ROOT / "configs/experiment/fourm_nano_synth.yaml"
    path = ROOT / "configs/mixture" / f"{mixture}.yaml"
    cli = lightning_cli(
        [
            "--config", str(config), "--model.init_args.check_tokenizers", "false",
            "--data.init_args.mixture", str(path),
        ],
        run=False,
    )  # fmt: skip
    expected = [MixtureComponent(**c) for c in yaml.safe_load(path.read_text())]
    assert cli.datamodule.mixture == expected
    check_mixture(cli.datamodule.mixture, list(cli.model.domains))


def test_a_mixture_given_later_replaces_the_earlier_one_whole():
    # jsonargparse merges a list of dataclasses into the previous list item by item: typed
    # as MixtureComponent, the second file's rgb2all (no weight given) kept the first file's
    # weight 3 and its caption_bias the first's keep scheme.
    from fourm_lightning.cli import lightning_cli

    first = ROOT / "configs/mixture/quickstart.yaml"
    second = ROOT / "configs/mixture/all2all_rgb2all_captionbias.yaml"
    cli = lightning_cli(
        [
            "--config", str(ROOT / "configs/experiment/fourm_nano_synth.yaml"),
            "--model.init_args.check_tokenizers", "false",
            "--data.init_args.mixture", str(first),
            "--data.init_args.mixture", str(second),
        ],
        run=False,
    )  # fmt: skip
    expected = [MixtureComponent(**c) for c in yaml.safe_load(second.read_text())]
    assert [c.weight for c in cli.datamodule.mixture] == [1.0, 1.0, 0.5]
    assert cli.datamodule.mixture == expected


def test_experiment_inline_mixture_is_the_mixture_file():
    experiment = yaml.safe_load((ROOT / "configs/experiment/fourm_nano_synth.yaml").read_text())
    path = ROOT / "configs/mixture/all2all_rgb2all_captionbias.yaml"
    assert experiment["data"]["init_args"]["mixture"] == yaml.safe_load(path.read_text())
