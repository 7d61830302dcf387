"""What every tokenizer LightningModule shares: spec lookup, optimisation, self-describing files.

- The modality spec comes from (first match) the ``spec`` argument, the dataset manifest named by
  ``manifest``, or ``builtin_modalities()``; the checkpoint records the spec that was used, so a
  reload never depends on the dataset still being there.
- The optimizer is injected (``OptimizerCallable``; default AdamW with 4M's betas and weight
  decay); the learning rate follows a linear warmup then a cosine decay, by optimizer steps.
- ``on_save_checkpoint`` adds ``tokenizer_class`` and ``tokenizer_format`` so that
  ``fourm_lightning.tokenizers.loading.load_tokenizer`` knows what a ``.ckpt`` holds without
  guessing from state-dict keys; ``export(dir)`` writes ``model.safetensors`` + ``config.json``.
- Hyper-parameters are plain data (class paths and init args, as LightningCLI records them, or as
  ``from_config`` records them), so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from fourm_lightning.modalities import ModalitySpec, builtin_modalities, specs_by_name
from fourm_lightning.tokenizers.metrics import CodebookUsage

#: Name and version of the self-describing tokenizer formats (checkpoint key and export JSON).
TOKENIZER_FORMAT = "fourm_lightning.tokenizer"
TOKENIZER_FORMAT_VERSION = 1
#: Files of an export folder.
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
#: The instantiator LightningCLI records; ``load_from_checkpoint`` rebuilds injected modules
#: (quantizer, adapter, optimizer) with it from their ``class_path``/``init_args``.
CLI_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"

OptimizerFactory = Callable[[Iterable[Any]], Optimizer]
_T = TypeVar("_T", bound="TokenizerModule")


def resolve_spec(
    modality: str, spec: str | Mapping[str, Any] | None = None, manifest: str | None = None
) -> ModalitySpec:
    """The spec of ``modality``: from ``spec``, else the manifest, else the built-in modalities.

    Args:
        modality: modality name.
        spec: ``ModalitySpec.to_config()`` as a JSON string (or the dict itself); its name must
            be ``modality``.
        manifest: a dataset folder or its ``manifest.json``.

    Raises:
        ValueError: the name is unknown, or ``spec`` names another modality.
    """
    if spec is not None:
        resolved = ModalitySpec.from_config(json.loads(spec) if isinstance(spec, str) else spec)
        if resolved.name != modality:
            raise ValueError(f"spec is for modality {resolved.name!r}, not {modality!r}")
        return resolved
    if manifest is not None:
        from fourm_lightning.datamodules.shards import read_manifest

        specs = read_manifest(manifest).specs
        source = f"the manifest of {manifest}"
    else:
        specs = specs_by_name(builtin_modalities())
        source = "the built-in modalities"
    if modality not in specs:
        raise ValueError(f"unknown modality {modality!r} in {source}; valid: {sorted(specs)}")
    return specs[modality]


@dataclass
class WarmupCosine:
    """LR multiplier: linear warmup from ``start`` to 1, then cosine to ``min_ratio``.

    A callable object (not a lambda) so that ``LambdaLR`` saves it in its state dict as plain
    numbers, which ``torch.load(weights_only=True)`` reads.

    Args:
        warmup_steps: steps of the linear warmup.
        total_steps: steps until the end of the cosine; 0 means no decay after warmup.
        min_ratio: the final multiplier.
        start: the multiplier at step 0 (4M warms up from 1e-6 of the peak, about 0).
    """

    warmup_steps: int
    total_steps: int
    min_ratio: float = 0.0
    start: float = 1e-3

    def __call__(self, step: int) -> float:
        """The multiplier at optimizer step ``step``."""
        if step < self.warmup_steps:
            return self.start + (1 - self.start) * step / max(1, self.warmup_steps)
        if self.total_steps <= self.warmup_steps:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, str | int | float | bool):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


class TokenizerModule(LightningModule):
    """Base of the tokenizer LightningModules (not instantiated by itself).

    Subclasses build ``self.spec`` (a ``ModalitySpec``) and the core, and implement the tokenizer
    API (``encode``, ``decode``, ``vocab_size``, ``num_tokens``).
    """

    spec: ModalitySpec
    #: Where this tokenizer was loaded from (set by ``load_tokenizer``), for error messages.
    source: str | None = None

    def __init__(
        self,
        optimizer: OptimizerFactory | None,
        warmup_steps: int,
        min_lr_ratio: float,
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.warmup_steps = warmup_steps
        self.min_lr_ratio = min_lr_ratio

    # -- construction from plain data --------------------------------------------------------

    @classmethod
    def from_config(cls: type[_T], config: Mapping[str, Any]) -> _T:
        """Build from plain data, as LightningCLI would, keeping plain hyper-parameters.

        Injected modules are given as ``{"class_path": ..., "init_args": {...}}``, e.g.
        ``{"modality": "depth", "quantizer": {"class_path":
        "fourm_lightning.tokenizers.quantizers.FSQQuantizer", "init_args": {"levels": [8, 5]}}}``.
        Checkpoints of the result load with ``torch.load(weights_only=True)``, unlike those of a
        module given ``nn.Module`` instances directly.

        Args:
            config: init arguments by name.
        """
        from lightning.pytorch.cli import instantiate_module

        config = {k: v for k, v in config.items() if k not in ("_instantiator", "_class_path")}
        module = instantiate_module(cls, dict(config))
        # Replace the instances jsonargparse created by the plain config that made them, and
        # name the instantiator that turns it back into instances on load_from_checkpoint.
        module.hparams.clear()
        module.hparams.update({**config, "_instantiator": CLI_INSTANTIATOR})
        module._hparams_initial = dict(module.hparams)  # what loggers record
        return module

    # -- optimisation ------------------------------------------------------------------------

    def _total_steps(self) -> int:
        trainer = self.trainer
        if trainer.max_steps and trainer.max_steps > 0:
            return int(trainer.max_steps)
        estimated = trainer.estimated_stepping_batches
        # max_time-only runs have no step budget: keep the peak LR after warmup.
        return int(estimated) if math.isfinite(estimated) else 0

    def configure_optimizers(self) -> dict[str, Any]:
        """The injected optimizer with a per-step linear warmup + cosine LR schedule.

        Without an injected optimizer: AdamW, lr 1e-3, betas (0.9, 0.99), weight decay 0.05.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if self.optimizer_factory is None:
            optimizer = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.05)
        else:
            optimizer = self.optimizer_factory(params)
        schedule = WarmupCosine(self.warmup_steps, self._total_steps(), self.min_lr_ratio)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": LambdaLR(optimizer, schedule), "interval": "step"},
        }

    # -- data checks ----------------------------------------------------------------------

    def _where(self) -> str:
        where = f"modality {self.spec.name!r}"
        return f"{where} (tokenizer {self.source})" if self.source else where

    def setup(self, stage: str) -> None:
        """Check that the DataModule serves this modality with the same kind."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        specs = getattr(datamodule, "specs", None)
        if not isinstance(specs, Mapping):
            return
        name = self.spec.name
        if name not in specs:
            raise ValueError(
                f"the DataModule does not load modality {name!r} (it loads {list(specs)}); add it "
                "to data.init_args.modalities"
            )
        if specs[name].kind != self.spec.kind:
            raise ValueError(
                f"modality {name!r}: the dataset's kind {specs[name].kind!r} differs from the "
                f"tokenizer's {self.spec.kind!r}"
            )

    def _batch_value(self, batch: Mapping[str, Any]) -> Any:
        try:
            return batch[self.spec.name]
        except KeyError:
            keys = [k for k in batch if not k.startswith("__")]
            raise KeyError(
                f"batch has no modality {self.spec.name!r} (it has {keys}); check "
                "data.init_args.modalities"
            ) from None

    def _log_skipped(self, batch: Mapping[str, Any]) -> None:
        if "__skipped__" in batch:
            self.log("data/skipped", float(batch["__skipped__"]), reduce_fx="sum")

    def _log_images(self, tag: str, images: Tensor) -> None:
        """Send a (B, 3, H, W) [0, 1] picture batch as one grid to loggers that show images."""
        from torchvision.utils import make_grid

        grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=4, padding=1)
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):
                experiment.add_image(tag, grid, global_step=self.global_step)

    def _update_metrics(self, adapter: Any, sample: Any, value: Any) -> None:
        """Update the kind metrics in float32, outside bf16 autocast.

        Under ``precision: bf16-mixed`` the validation step runs in autocast, and metrics built
        from convolutions (SSIM's local means and variances) would be computed in bf16, where
        ``E[x^2] - E[x]^2`` cancels catastrophically: SSIM came out negative at 22 dB PSNR.
        """
        with torch.autocast(device_type=self.device.type, enabled=False):
            adapter.update_metrics(dict(self.val_metrics.items()), sample, value)

    def _codebook_metric(self, codebook_size: int) -> CodebookUsage:
        return CodebookUsage(codebook_size)

    # -- self-describing files -------------------------------------------------------------

    @property
    def class_path(self) -> str:
        """``module.Class`` of this tokenizer."""
        cls = type(self)
        return f"{cls.__module__}.{cls.__qualname__}"

    def plain_init_args(self) -> dict[str, Any]:
        """The init arguments as plain data (with the resolved spec), for export and reload.

        Raises:
            TypeError: the module was given live objects (an ``nn.Module`` quantizer, a
                callable); build it with ``from_config`` or LightningCLI instead.
        """
        args = {k: v for k, v in self.hparams.items() if k not in ("_instantiator", "_class_path")}
        args["spec"] = self.spec_json()
        bad = [k for k, v in args.items() if not _is_plain(v)]
        if bad:
            raise TypeError(
                f"{self._where()}: init arguments {bad} are live objects, so this tokenizer "
                f"cannot describe itself; build it with {type(self).__name__}.from_config(...) "
                "or through the CLI"
            )
        return args

    def spec_json(self) -> str:
        """The resolved spec as the JSON string the ``spec`` argument takes.

        A string, not a nested dict: the kind's ``class_path`` inside a dict hyper-parameter would
        be instantiated by jsonargparse when the checkpoint is reloaded.
        """
        return json.dumps(_jsonable(self.spec.to_config()), sort_keys=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the class, the format and the resolved spec (so reloads need no dataset)."""
        checkpoint["tokenizer_class"] = self.class_path
        checkpoint["tokenizer_format"] = {
            "name": TOKENIZER_FORMAT,
            "version": TOKENIZER_FORMAT_VERSION,
        }
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict):
            hparams["spec"] = self.spec_json()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the checkpoint's plain hyper-parameters after ``load_from_checkpoint``.

        Lightning rebuilds injected modules from their ``class_path``/``init_args`` and the
        rebuilt module then holds live objects as hyper-parameters; putting the plain ones back
        keeps the reloaded tokenizer exportable and its next checkpoint plain.
        """
        saved = checkpoint.get("hyper_parameters")
        live = any(not _is_plain(v) for v in self.hparams.values())
        if live and isinstance(saved, Mapping) and _is_plain(saved):
            self.hparams.clear()
            self.hparams.update(saved)
            self._hparams_initial = dict(saved)

    def export(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (class path, init args, spec).

        Args:
            directory: output folder (created).

        Returns:
            The folder.
        """
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config = {
            "format": {"name": TOKENIZER_FORMAT, "version": TOKENIZER_FORMAT_VERSION},
            "class_path": self.class_path,
            "init_args": _jsonable(self.plain_init_args()),
            "modality": self.spec.name,
            "vocab_size": self.vocab_size,
        }
        # safetensors refuses tensors that share memory; contiguous copies are independent.
        state = {k: v.detach().cpu().contiguous().clone() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE), metadata={"class_path": self.class_path})
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return out

    @property
    def vocab_size(self) -> int:
        """K, the number of distinct tokens (implemented by subclasses)."""
        raise NotImplementedError


__all__ = ["TokenizerModule", "WarmupCosine", "resolve_spec"]
