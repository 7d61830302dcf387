"""Tokenizer LightningModules: a few steps per family, reload, export, load_tokenizer, errors."""

import lightning as L
import pytest
import torch

from fourm_lightning.datamodules.multimodal import MultimodalDataModule
from fourm_lightning.tokenizers.lit_mlp_vq import VectorVQTokenizer
from fourm_lightning.tokenizers.lit_vqvae import VQVAETokenizer
from fourm_lightning.tokenizers.loading import ModalityTokenizer, load_tokenizer
from fourm_lightning.tokenizers.quantizers import FSQQuantizer

COSINE = {
    "class_path": "fourm_lightning.tokenizers.quantizers.CosineVQ",
    "init_args": {"dim": 8, "codebook_size": 32, "threshold_ema_dead_code": 0.5},
}
FSQ = {
    "class_path": "fourm_lightning.tokenizers.quantizers.FSQQuantizer",
    "init_args": {"levels": [5, 5, 3]},
}
TINY = {
    "image_size": 32,
    "patch_size": 8,
    "embed_dim": 32,
    "depth": 1,
    "num_heads": 2,
    "warmup_steps": 1,
}

# (modality, quantizer, adapter, metrics expected in the validation logs)
FAMILIES = [
    ("rgb", FSQ, None, ["val/psnr", "val/ssim"]),
    (
        "depth",
        COSINE,
        {
            "class_path": "fourm_lightning.tokenizers.adapters.DepthAdapter",
            "init_args": {"normalization": "robust"},
        },
        ["val/abs_rel", "val/delta1"],
    ),
    (
        "normal",
        FSQ,
        {
            "class_path": "fourm_lightning.tokenizers.adapters.NormalAdapter",
            "init_args": {"loss": "angular"},
        },
        ["val/angular_error_deg"],
    ),
    ("semseg", COSINE, None, ["val/miou"]),
    (
        "canny_edge",
        FSQ,
        {
            "class_path": "fourm_lightning.tokenizers.adapters.EdgeAdapter",
            "init_args": {"pos_weight": 3.0},
        },
        ["val/f1"],
    ),
]


def _fit(module, data_dir, modality, root, steps=2):
    # epoch_samples=8 at batch 4: two steps make an epoch, so validation runs at its end.
    dm = MultimodalDataModule(
        str(data_dir), [modality], batch_size=4, num_workers=0, epoch_samples=8
    )
    trainer = L.Trainer(
        max_steps=steps,
        limit_val_batches=1,
        accelerator="cpu",
        precision="bf16-mixed",
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=str(root),
    )
    trainer.fit(module, dm)
    return trainer, dm


def _val_value(dm, modality):
    dm.setup("validate")
    return next(iter(dm.val_dataloader()))[modality]


@pytest.mark.parametrize(
    ("modality", "quantizer", "adapter", "metrics"), FAMILIES, ids=[f[0] for f in FAMILIES]
)
def test_vqvae_family_trains_reloads_and_exports(
    tiny_dataset, tmp_path, modality, quantizer, adapter, metrics
):
    config = {"modality": modality, "quantizer": quantizer, **TINY}
    if adapter is not None:
        config["adapter"] = adapter
    module = VQVAETokenizer.from_config(config)
    assert isinstance(module, ModalityTokenizer)
    trainer, dm = _fit(module, tiny_dataset, modality, tmp_path)
    logged = trainer.callback_metrics
    for name in [
        *metrics,
        "train/loss",
        "val/loss",
        "val/codebook_share_used",
        "val/codebook_perplexity",
    ]:
        assert name in logged and torch.isfinite(logged[name]), name

    value = _val_value(dm, modality)
    module.eval()
    tokens = module.encode(value)
    assert tokens.shape == (value.shape[0], 4, 4) and tokens.dtype == torch.int64
    assert module.num_tokens(32) == 16 and int(tokens.max()) < module.vocab_size
    decoded = module.decode(tokens, reference=value)
    assert decoded.shape == value.shape and decoded.dtype == value.dtype

    ckpt = tmp_path / "tok.ckpt"
    trainer.save_checkpoint(ckpt)
    raw = torch.load(ckpt, weights_only=True)  # plain data only
    assert raw["tokenizer_class"] == "fourm_lightning.tokenizers.lit_vqvae.VQVAETokenizer"
    reloaded = VQVAETokenizer.load_from_checkpoint(ckpt).eval()
    assert torch.equal(reloaded.encode(value), tokens)
    from_ckpt = load_tokenizer(ckpt, modality=modality, expected_vocab_size=module.vocab_size)
    assert torch.equal(from_ckpt.encode(value), tokens)
    exported = load_tokenizer(module.export(tmp_path / "export"))
    assert torch.equal(exported.encode(value), tokens)
    assert torch.equal(exported.decode(tokens, reference=value), decoded)

    with pytest.raises(
        ValueError, match=rf"vocabulary mismatch for modality '{modality}'.*tok.ckpt"
    ):
        load_tokenizer(ckpt, expected_vocab_size=module.vocab_size + 1)
    with pytest.raises(ValueError, match=f"modality '{modality}'"):
        from_ckpt.encode(torch.zeros(2, 7, 32, 32))  # wrong channels / layout


def test_camera_mlp_vq_fits_normalization_trains_and_reloads(tiny_dataset, tmp_path):
    module = VectorVQTokenizer.from_config(
        {
            "modality": "camera",
            "quantizer": COSINE,
            "num_tokens": 2,
            "hidden_dim": 32,
            "depth": 1,
            "norm_batches": 2,
            "warmup_steps": 1,
        }
    )
    trainer, dm = _fit(module, tiny_dataset, "camera", tmp_path)
    assert bool(module.normalization_fitted)
    assert not torch.allclose(module.model.std, torch.ones(10))
    assert (
        "val/cosine" in trainer.callback_metrics
        and "val/codebook_perplexity" in trainer.callback_metrics
    )
    value = _val_value(dm, "camera")
    module.eval()
    tokens = module.encode(value)
    assert tokens.shape == (value.shape[0], 2) and module.num_tokens(64) == 2
    assert module.decode(tokens).shape == value.shape
    ckpt = tmp_path / "camera.ckpt"
    trainer.save_checkpoint(ckpt)
    reloaded = load_tokenizer(ckpt, modality="camera")
    assert torch.equal(reloaded.model.mean, module.model.mean)
    assert torch.equal(reloaded.encode(value), tokens)
    exported = load_tokenizer(module.export(tmp_path / "camera_export"), expected_vocab_size=32)
    assert torch.equal(exported.encode(value), tokens)
    with pytest.raises(ValueError, match=r"vocabulary mismatch for modality 'camera'"):
        load_tokenizer(ckpt, expected_vocab_size=1000)
    with pytest.raises(ValueError, match=r"modality 'camera'.*shape"):
        reloaded.encode(torch.zeros(3, 7))


def test_perceptual_loss_from_a_local_timm_checkpoint(tiny_dataset, tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    net = timm.create_model("resnet10t", pretrained=False, num_classes=0)
    weights = tmp_path / "percept.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    adapter = {
        "class_path": "fourm_lightning.tokenizers.adapters.RGBAdapter",
        "init_args": {"perceptual_backbone": "resnet10t", "perceptual_weights": str(weights)},
    }
    module = VQVAETokenizer.from_config(
        {"modality": "rgb", "quantizer": FSQ, "adapter": adapter, **TINY}
    )
    assert module.adapter.perceptual is not None
    dm = MultimodalDataModule(str(tiny_dataset), ["rgb"], batch_size=2, num_workers=0)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    prepared = module.prepare(batch["rgb"])
    output, _ = module.model(prepared.input)
    with_percept = module.adapter.loss(output, prepared)
    mse = torch.nn.functional.mse_loss(output.float(), prepared.target)
    assert with_percept > mse
    with_percept.backward()  # gradients reach the tokenizer through the frozen backbone
    assert module.model.out_proj.weight.grad is not None
    assert not any(k.startswith("adapter") for k in module.state_dict())  # kept out of checkpoints
    with pytest.raises(ValueError, match=r"needs perceptual_weights"):
        from fourm_lightning.tokenizers.adapters import RGBAdapter

        RGBAdapter(perceptual_backbone="resnet10t")


def test_live_objects_give_a_clear_error_not_silent_unpickling(tmp_path):
    module = VQVAETokenizer("depth", FSQQuantizer([5, 5, 3]), **TINY)
    with pytest.raises(TypeError, match=r"from_config"):
        module.export(tmp_path / "x")
    trainer = L.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    ckpt = tmp_path / "live.ckpt"
    trainer.save_checkpoint(ckpt)
    with pytest.raises(ValueError, match=r"pickled Python objects"):
        load_tokenizer(ckpt)


def test_text_tokenizer_trains_from_shards_and_loads(tiny_dataset, tmp_path):
    from fourm_lightning.tokenizers.lit_text import train_text_tokenizer
    from fourm_lightning.tokenizers.text import fixed_tokens

    trained = train_text_tokenizer(
        str(tiny_dataset),
        str(tmp_path / "text"),
        vocab_size=10_000,
        num_sentinels=8,
        num_values=100,
    )
    special, ordinary = fixed_tokens(8, 100, trained.word_tokens)
    assert trained.vocab_size > len(special) + len(ordinary)
    assert "cube" in trained.word_tokens and "purple" in trained.word_tokens
    tok = load_tokenizer(tmp_path / "text", modality="caption")
    assert isinstance(tok, ModalityTokenizer) and tok.num_tokens(64) is None
    from fourm_lightning.datamodules.shards import iter_samples

    captions = [s["caption"] for s in iter_samples(tiny_dataset, "train", ["caption"])][:4]
    ids = tok.encode(captions)
    assert ids.shape[0] == len(captions) and ids.dtype == torch.int64
    assert trained.unk_id not in ids.tolist()[0]  # the training texts are fully covered
    assert tok.decode(ids)[0].split()[0] == captions[0].lower().split()[0]
    assert tok.encode(["cube"])[0, 0] == trained.token_id("cube")  # a word token, never split
    with pytest.raises(ValueError, match=r"vocabulary mismatch for modality 'caption'"):
        load_tokenizer(tmp_path / "text", expected_vocab_size=3)


def test_text_tokenizer_main_reports_round_trip_on_the_validation_texts(tiny_dataset, tmp_path):
    from fourm_lightning.tokenizers.lit_text import evaluate_text_tokenizer, main
    from fourm_lightning.tokenizers.text import TextTokenizer

    report = main(str(tiny_dataset), str(tmp_path / "text"), num_sentinels=8, num_values=100)
    assert report["texts"] > 0 and report["vocab_size"] > 0
    assert report["unk_tokens"] == 0  # the tiny validation captions use the training words
    assert report["exact_round_trip"] == 1.0
    assert 0 < report["mean_tokens"] <= report["max_tokens"]

    # A tokenizer that has not seen the words cannot round-trip them: the check can fail.
    blind = TextTokenizer.train(["a b c"], 415, num_sentinels=8, num_values=100, word_tokens=())
    poor = evaluate_text_tokenizer(blind, str(tiny_dataset))
    assert poor["exact_round_trip"] < 1.0 and poor["unk_tokens"] > 0


def test_metrics_are_computed_in_float32_under_bf16_autocast():
    # SSIM's local variances cancel catastrophically in bf16; the validation step runs under
    # bf16-mixed autocast, so the metric update must leave autocast (it gave negative SSIM).
    module = VQVAETokenizer.from_config({"modality": "rgb", "quantizer": FSQ, **TINY})
    # Smooth images with little local variance, like renders (random noise images hide it).
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand((4, 3, 4, 4), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=32, mode="bilinear")
    target = (100 + 60 * smooth).round().to(torch.uint8)
    noise = torch.randint(-4, 5, target.shape, generator=generator)
    pred = (target.int() + noise).clamp(0, 255).to(torch.uint8)

    def ssim(autocast: bool) -> float:
        module.val_metrics["ssim"].reset()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            module._update_metrics(module.adapter, pred, target)
        return float(module.val_metrics["ssim"].compute())

    plain = ssim(False)
    assert 0.5 < plain < 1.0
    assert ssim(True) == pytest.approx(plain, abs=1e-6)
