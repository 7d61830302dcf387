"""Kind adapters: what a tokenizer does differently for each modality family.

A tokenizer core (``ViTVQVAE``, ``MLPVQ``) only sees tensors. Turning a modality's batch value into
the core's input, the reconstruction loss, the way back to the modality's sample form, the
validation metrics and the picture shown in TensorBoard all depend on the modality's *kind*. One
small ``KindAdapter`` subclass per kind family holds those five things, and the LightningModules
call them without ever looking at a modality name or kind string.

Adapters are found by walking the MRO of the modality's kind class through ``ADAPTERS``
(``{KindClass: AdapterClass}``), so a subclass of ``DepthMap`` gets the depth adapter, and a new
kind gets its own adapter with ``@register_adapter(MyKind)`` without touching generic code.

An adapter is built with its options only (``DepthAdapter(normalization="robust")``, so that a
YAML file can name it with ``class_path``/``init_args``) and attached to a modality with ``bind``.

Batch forms (see ``fourm_lightning.modalities.kinds``) and what each adapter feeds the core:

============  =========================  ======================================  ================
adapter       batch value                core input                              loss
============  =========================  ======================================  ================
RGBAdapter    uint8 (B, 3, H, W)         (x / 255 - mean) / std, kind's mean/std  MSE (+ percept.)
DepthAdapter  float (B, 1, H, W) metres  per-image standardised log or truncated  smooth-L1
NormalAdapter float (B, 3, H, W) unit    as is                                    MSE or angular
LabelAdapter  uint8 (B, H, W) class ids  class ids (embedded by the core)         cross-entropy
EdgeAdapter   uint8 (B, H, W) {0, 1}     (B, 1, H, W) in {-1, 1}                  BCE with logits
FeatureAdapter float (B, C, h, w)        as is                                    smooth-L1
VectorAdapter float (B, D)               as is (the core standardises)            MSE (std units)
============  =========================  ======================================  ================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn
from torchmetrics import Metric

from fourm_lightning.modalities.kinds import (
    DepthMap,
    EdgeMap,
    FeatureMap,
    GlobalVector,
    LabelMap,
    ModalityKind,
    NormalMap,
    RGBImage,
)
from fourm_lightning.modalities.spec import ModalitySpec
from fourm_lightning.tokenizers.metrics import DepthAbsRel, DepthDelta, MeanAngularError


@dataclass
class Prepared:
    """A batch value made ready for a tokenizer core.

    Attributes:
        input: what the core's ``forward``/``encode`` takes.
        target: what the core's output is compared with by ``KindAdapter.loss``.
        context: per-sample values needed to go back to the sample form (e.g. the depth
            normalisation statistics), and masks of valid pixels.
    """

    input: Tensor
    target: Tensor
    context: dict[str, Tensor] = field(default_factory=dict)


class KindAdapter(ABC):
    """Per-kind-family behaviour of a tokenizer (see the module docstring).

    Subclasses set ``kind_type`` (the kind class they understand) and implement ``prepare``,
    ``loss``, ``to_sample``, ``metrics``, ``update_metrics`` and ``display``.
    """

    kind_type: ClassVar[type[ModalityKind]]

    def __init__(self) -> None:
        self._spec: ModalitySpec | None = None

    # -- binding ---------------------------------------------------------------------------

    def bind(self, spec: ModalitySpec) -> None:
        """Attach the adapter to a modality; its kind must be a ``kind_type``.

        Raises:
            ValueError: the modality's kind is not one this adapter understands.
        """
        if not isinstance(spec.kind, self.kind_type):
            raise ValueError(
                f"modality {spec.name!r}: {type(self).__name__} handles {self.kind_type.__name__} "
                f"modalities, but its kind is {type(spec.kind).__name__}"
            )
        self._spec = spec

    @property
    def spec(self) -> ModalitySpec:
        """The bound modality spec."""
        if self._spec is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to a modality (call bind)")
        return self._spec

    @property
    def name(self) -> str:
        """The bound modality's name."""
        return self.spec.name

    # -- architecture ----------------------------------------------------------------------

    @property
    def in_channels(self) -> int:
        """Channels of the core's float input (ignored when ``num_classes`` is set)."""
        return 1

    @property
    def num_classes(self) -> int | None:
        """Number of input classes for class-map inputs embedded by the core, else None."""
        return None

    @property
    def out_channels(self) -> int:
        """Channels of the core's output."""
        return self.in_channels

    # -- data ------------------------------------------------------------------------------

    def check(self, value: Any) -> None:  # noqa: B027 (optional hook: no check by default)
        """Raise ``ValueError`` (naming the modality) if ``value`` is not a valid batch value."""

    def _fail(self, message: str) -> None:
        raise ValueError(f"modality {self.name!r}: {message}")

    def _check_tensor(
        self, value: Any, ndim: int, channels: int | None, dtype: Literal["uint8", "float", "int"]
    ) -> None:
        if not isinstance(value, Tensor):
            self._fail(f"expected a tensor batch, got {type(value).__name__}")
        if value.ndim != ndim or (channels is not None and value.shape[1] != channels):
            layout = {3: "(B, H, W)", 4: f"(B, {channels}, H, W)", 2: f"(B, {channels})"}[ndim]
            self._fail(f"expected a batch of shape {layout}, got {tuple(value.shape)}")
        ok = {
            "uint8": value.dtype == torch.uint8,
            "float": value.is_floating_point(),
            "int": not value.is_floating_point() and not value.is_complex(),
        }[dtype]
        if not ok:
            self._fail(f"expected dtype {dtype}, got {value.dtype}")

    @abstractmethod
    def prepare(self, value: Any) -> Prepared:
        """Batch value -> core input, loss target and context."""

    @abstractmethod
    def loss(self, output: Tensor, prepared: Prepared) -> Tensor:
        """Scalar reconstruction loss of the core's ``output`` against ``prepared.target``."""

    @abstractmethod
    def to_sample(self, output: Tensor, prepared: Prepared | None = None) -> Any:
        """Core output -> batch value in the kind's form (the inverse of ``prepare``).

        Args:
            output: the core's reconstruction.
            prepared: the ``Prepared`` of the encoded input, when the sample form needs
                per-sample context (depth scale); None gives the context-free form.
        """

    @abstractmethod
    def metrics(self) -> dict[str, Metric]:
        """Fresh validation metrics, by name (the module logs ``val/<name>``)."""

    @abstractmethod
    def update_metrics(self, metrics: dict[str, Metric], sample: Any, value: Any) -> None:
        """Update ``metrics`` with a reconstruction ``sample`` and the original batch ``value``."""

    @abstractmethod
    def display(self, value: Any) -> Tensor:
        """A batch value as pictures for TensorBoard: (B, 3, H, W) float in [0, 1]."""


# ----------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------

#: Kind class -> adapter class. Looked up along the kind's MRO, most specific first.
ADAPTERS: dict[type[ModalityKind], type[KindAdapter]] = {}

_A = TypeVar("_A", bound=type[KindAdapter])


def register_adapter(kind_type: type[ModalityKind]) -> Callable[[_A], _A]:
    """Class decorator: make the decorated adapter the default one for ``kind_type``.

    Args:
        kind_type: a ``ModalityKind`` subclass.
    """

    def decorate(adapter_type: _A) -> _A:
        if not issubclass(adapter_type, KindAdapter):
            raise TypeError(f"{adapter_type!r} is not a KindAdapter")
        ADAPTERS[kind_type] = adapter_type
        return adapter_type

    return decorate


def adapter_class(kind: ModalityKind) -> type[KindAdapter]:
    """The registered adapter class of a kind (walking the kind class's MRO).

    Raises:
        TypeError: no adapter is registered for the kind or any of its base classes.
    """
    for cls in type(kind).__mro__:
        adapter = ADAPTERS.get(cls)
        if adapter is not None:
            return adapter
    known = ", ".join(sorted(k.__name__ for k in ADAPTERS))
    raise TypeError(
        f"no tokenizer adapter for kind {type(kind).__name__} (known: {known}); register one "
        "with @register_adapter"
    )


def default_adapter(spec: ModalitySpec) -> KindAdapter:
    """The registered adapter of ``spec``'s kind, with default options, bound to ``spec``."""
    adapter = adapter_class(spec.kind)()
    adapter.bind(spec)
    return adapter


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


def _masked_mean(loss: Tensor, mask: Tensor) -> Tensor:
    # Mean over valid entries only; an all-invalid batch gives 0, not NaN.
    mask = mask.to(loss.dtype).expand_as(loss)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def _gray(x: Tensor) -> Tensor:
    """(B, H, W) in [0, 1] -> (B, 3, H, W)."""
    return repeat(x.float().clamp(0, 1), "b h w -> b c h w", c=3)


def _load_state_dict(path: str) -> dict[str, Tensor]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"perceptual weights {file} do not exist")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(file))
    # weights_only: a downloaded checkpoint must never be able to run code while unpickling.
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{file} holds a {type(state).__name__}, expected a state dict")
    return state


class PerceptualLoss(nn.Module):
    """Cosine distance between features of a frozen timm backbone (4M's CLIP perceptual loss).

    ``1 - cos`` over channels, averaged over positions and the chosen feature levels.

    Args:
        backbone: a timm model name (e.g. ``vit_base_patch16_clip_224`` or ``resnet18``).
        weights: path of its weights (``.safetensors``, or a torch state dict read with
            ``weights_only=True``); nothing is downloaded.
        layers: indices of the intermediate features used (``forward_intermediates`` indices).
    """

    def __init__(self, backbone: str, weights: str, layers: Sequence[int] = (1, 2, 3)) -> None:
        super().__init__()
        import timm

        self.net = timm.create_model(backbone, pretrained=False, num_classes=0)
        state = _load_state_dict(weights)
        missing, _unexpected = self.net.load_state_dict(state, strict=False)
        if missing:
            # Unexpected keys (a classifier head) are fine; missing ones mean random features.
            raise ValueError(
                f"perceptual weights {weights} do not fit timm model {backbone!r}: "
                f"{len(missing)} missing keys, e.g. {missing[:3]}"
            )
        self.net.eval().requires_grad_(False)
        self.layers = list(layers)
        cfg = self.net.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))))

    def train(self, mode: bool = True) -> PerceptualLoss:
        """Stay in eval mode (the backbone is frozen, its norm statistics too)."""
        return super().train(False)

    def _features(self, x: Tensor) -> list[Tensor]:
        x = (x - self.mean[:, None, None]) / self.std[:, None, None]
        return self.net.forward_intermediates(x, indices=self.layers, intermediates_only=True)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """Perceptual distance.

        Args:
            pred: (B, 3, H, W) reconstruction in [0, 1] (gradients flow through it).
            target: (B, 3, H, W) original in [0, 1].

        Returns:
            () scalar.
        """
        with torch.no_grad():
            target_features = self._features(target)
        losses = [
            (1 - F.cosine_similarity(p.float(), t.float(), dim=1)).mean()
            for p, t in zip(self._features(pred), target_features, strict=True)
        ]
        return torch.stack(losses).mean()


def chroma(x: Tensor) -> Tensor:
    """The colour part of an image: each pixel minus its mean over the channels.

    Args:
        x: (B, C, H, W) image.

    Returns:
        (B, C, H, W); zero wherever the image is gray.
    """
    return x - x.mean(dim=1, keepdim=True)


# ----------------------------------------------------------------------------------------------
# Adapters
# ----------------------------------------------------------------------------------------------


@register_adapter(RGBImage)
class RGBAdapter(KindAdapter):
    """RGB images: standardised with the kind's mean/std; MSE, optional chroma and perceptual terms.

    Args:
        perceptual_backbone: timm model name of a perceptual loss; None (default) disables it.
        perceptual_weights: path of that model's weights (required with a backbone; nothing is
            downloaded).
        perceptual_weight: weight of the perceptual loss.
        perceptual_layers: ``forward_intermediates`` indices whose features are compared.
        chroma_weight: weight of an extra MSE on the chroma of the image (each pixel minus its
            mean over the channels). Plain MSE is dominated by brightness, which
            the three channels share, so a briefly trained tokenizer decodes gray images first;
            the extra term makes colour errors cost as much early on (0 disables it).
    """

    kind_type: ClassVar[type[ModalityKind]] = RGBImage

    def __init__(
        self,
        perceptual_backbone: str | None = None,
        perceptual_weights: str | None = None,
        perceptual_weight: float = 1.0,
        perceptual_layers: list[int] | None = None,
        chroma_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if chroma_weight < 0:
            raise ValueError(f"chroma_weight must be >= 0, got {chroma_weight}")
        self.chroma_weight = chroma_weight
        self.perceptual_weight = perceptual_weight
        self.perceptual: PerceptualLoss | None = None
        if perceptual_backbone is not None:
            if perceptual_weights is None:
                raise ValueError(
                    f"perceptual_backbone={perceptual_backbone!r} needs perceptual_weights (a "
                    "local weights file); randomly initialised features are no perceptual loss"
                )
            # Not an nn.Module attribute of the LightningModule (adapters are plain objects), so
            # the frozen backbone stays out of tokenizer checkpoints and exports.
            self.perceptual = PerceptualLoss(
                perceptual_backbone, perceptual_weights, perceptual_layers or (1, 2, 3)
            )

    @property
    def kind(self) -> RGBImage:
        """The bound RGB kind."""
        kind = self.spec.kind
        assert isinstance(kind, RGBImage)
        return kind

    @property
    def in_channels(self) -> int:  # noqa: D102
        return 3

    def _stats(self, like: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.tensor(self.kind.mean, device=like.device, dtype=torch.float32)
        std = torch.tensor(self.kind.std, device=like.device, dtype=torch.float32)
        return rearrange(mean, "c -> 1 c 1 1"), rearrange(std, "c -> 1 c 1 1")

    def check(self, value: Any) -> None:  # noqa: D102
        self._check_tensor(value, 4, 3, "uint8")

    def prepare(self, value: Tensor) -> Prepared:
        """(B, 3, H, W) uint8 -> standardised (B, 3, H, W) float (input and target)."""
        mean, std = self._stats(value)
        x = (value.float() / 255.0 - mean) / std
        return Prepared(x, x)

    def _unit(self, x: Tensor) -> Tensor:
        mean, std = self._stats(x)
        return x.float() * std + mean

    def loss(self, output: Tensor, prepared: Prepared) -> Tensor:  # noqa: D102
        loss = F.mse_loss(output.float(), prepared.target)
        if self.chroma_weight > 0:
            # Chroma of the [0, 1] image (gray is zero there, not after standardisation), over
            # the mean channel variance so the weight compares with the standardised MSE.
            _, std = self._stats(output)
            colour_error = F.mse_loss(
                chroma(self._unit(output)), chroma(self._unit(prepared.target))
            )
            loss = loss + self.chroma_weight * colour_error / std.pow(2).mean()
        if self.perceptual is not None and self.perceptual_weight > 0:
            self.perceptual.to(output.device)
            percept = self.perceptual(
                self._unit(output).clamp(0, 1), self._unit(prepared.target).clamp(0, 1)
            )
            loss = loss + self.perceptual_weight * percept
        return loss

    def to_sample(self, output: Tensor, prepared: Prepared | None = None) -> Tensor:
        """Standardised (B, 3, H, W) -> uint8 (B, 3, H, W)."""
        return (self._unit(output) * 255.0).round().clamp(0, 255).to(torch.uint8)

    def metrics(self) -> dict[str, Metric]:  # noqa: D102
        from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

        return {
            "psnr": PeakSignalNoiseRatio(data_range=1.0),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        }

    def update_metrics(self, metrics: dict[str, Metric], sample: Tensor, value: Tensor) -> None:  # noqa: D102
        pred, target = sample.float() / 255.0, value.float() / 255.0
        for metric in metrics.values():
            metric.update(pred, target)

    def display(self, value: Tensor) -> Tensor:  # noqa: D102
        return value.float() / 255.0


@register_adapter(DepthMap)
class DepthAdapter(KindAdapter):
    """Metric depth: per-image robust standardisation, smooth-L1 over valid pixels.

    Depth ranges differ by orders of magnitude between scenes, so each image is standardised on
    its own (as in 4M) and the tokens describe the depth *layout*; metric depth comes back with
    the encoded image's statistics (``to_sample(output, prepared)``).

    Args:
        normalization: ``"log"``: standardise log-depth with the image's mean and std (scale
            invariant; relative errors weigh the same near and far). ``"robust"``: 4M's
            truncated standardisation, depth minus the mean, over the std, of the values between
            the image's 10th and 90th percentiles.
        smooth_l1_beta: transition point of the smooth-L1 loss, in standardised units.
    """

    kind_type: ClassVar[type[ModalityKind]] = DepthMap

    def __init__(
        self, normalization: Literal["log", "robust"] = "log", smooth_l1_beta: float = 0.1
    ) -> None:
        super().__init__()
        if normalization not in ("log", "robust"):
            raise ValueError(f"normalization must be 'log' or 'robust', got {normalization!r}")
        self.normalization = normalization
        self.smooth_l1_beta = smooth_l1_beta

    def check(self, value: Any) -> None:  # noqa: D102
        self._check_tensor(value, 4, 1, "float")

    def prepare(self, value: Tensor) -> Prepared:
        """(B, 1, H, W) metres -> standardised (B, 1, H, W); context: shift, scale, valid."""
        depth = value.float()
        valid = depth > 1e-6
        match self.normalization:
            case "log":
                x = depth.clamp_min(1e-6).log()
                keep = valid
            case "robust":
                x = depth
                flat = rearrange(torch.where(valid, x, torch.nan), "b 1 h w -> b (h w)")
                low, high = torch.nanquantile(flat, torch.tensor([0.1, 0.9]), dim=1)
                low, high = (rearrange(q, "b -> b 1 1 1") for q in (low, high))
                # Truncation keeps a few far walls or near-zero pixels from setting the scale.
                keep = valid & (x >= low) & (x <= high)
            case _:
                raise ValueError(f"unknown normalization {self.normalization!r}")
        masked = torch.where(keep, x, torch.nan)
        shift = torch.nanmean(masked, dim=(1, 2, 3), keepdim=True)
        var = torch.nanmean((masked - shift) ** 2, dim=(1, 2, 3), keepdim=True)
        # An image without valid pixels gets shift 0; a flat one a floor on the scale.
        shift = torch.nan_to_num(shift, nan=0.0)
        scale = torch.nan_to_num(var, nan=1.0).sqrt().clamp_min(1e-3)
        n = torch.where(valid, (x - shift) / scale, torch.zeros_like(x))
        return Prepared(n, n, {"shift": shift, "scale": scale, "valid": valid})

    def loss(self, output: Tensor, prepared: Prepared) -> Tensor:  # noqa: D102
        loss = F.smooth_l1_loss(
            output.float(), prepared.target, reduction="none", beta=self.smooth_l1_beta
        )
        return _masked_mean(loss, prepared.context["valid"])

    def to_sample(self, output: Tensor, prepared: Prepared | None = None) -> Tensor:
        """Standardised (B, 1, H, W) -> depth (B, 1, H, W).

        With ``prepared`` the result is in metres (the encoded image's statistics); without it,
        it is relative: ``exp(n)`` for log normalisation (depth up to a per-image scale), ``n``
        (standardised depth) for robust normalisation.
        """
        x = output.float()
        if prepared is not None:
            x = x * prepared.context["scale"] + prepared.context["shift"]
        match self.normalization:
            case "log":
                return x.exp()
            case "robust":
                return x.clamp_min(0.0) if prepared is not None else x
            case _:
                raise ValueError(f"unknown normalization {self.normalization!r}")

    def metrics(self) -> dict[str, Metric]:  # noqa: D102
        return {"abs_rel": DepthAbsRel(), "delta1": DepthDelta(1.25)}

    def update_metrics(self, metrics: dict[str, Metric], sample: Tensor, value: Tensor) -> None:  # noqa: D102
        for metric in metrics.values():
            metric.update(sample, value)

    def display(self, value: Tensor) -> Tensor:
        """Inverse depth scaled to [0, 1] per image (near is bright)."""
        inv = 1.0 / value[:, 0].float().clamp_min(1e-3)
        top = inv.amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)
        return _gray(inv / top)


@register_adapter(NormalMap)
class NormalAdapter(KindAdapter):
    """Surface normals: MSE or angular loss, unit vectors out.

    Args:
        loss: ``"mse"`` on the vector components, or ``"angular"``: the angle (radians) between
            prediction and target, which ignores the prediction's length.
    """

    kind_type: ClassVar[type[ModalityKind]] = NormalMap

    def __init__(self, loss: Literal["mse", "angular"] = "mse") -> None:
        super().__init__()
        if loss not in ("mse", "angular"):
            raise ValueError(f"loss must be 'mse' or 'angular', got {loss!r}")
        self.loss_type = loss

    @property
    def in_channels(self) -> int:  # noqa: D102
        return 3

    def check(self, value: Any) -> None:  # noqa: D102
        self._check_tensor(value, 4, 3, "float")

    def prepare(self, value: Tensor) -> Prepared:
        """(B, 3, H, W) unit vectors -> the same (input and target); context: valid pixels."""
        x = value.float()
        return Prepared(x, x, {"valid": x.norm(dim=1, keepdim=True) > 0.5})

    def loss(self, output: Tensor, prepared: Prepared) -> Tensor:  # noqa: D102
        output, target = output.float(), prepared.target
        valid = prepared.context["valid"]
        match self.loss_type:
            case "mse":
                return _masked_mean((output - target) ** 2, valid)
            case "angular":
                cross = torch.linalg.cross(output, target, dim=1)
                # eps inside the sqrt: |a x b| has no gradient at exactly parallel vectors.
                sin = (cross.pow(2).sum(dim=1, keepdim=True) + 1e-8).sqrt()
                cos = (output * target).sum(dim=1, keepdim=True)
                return _masked_mean(torch.atan2(sin, cos), valid)
            case _:
                raise ValueError(f"unknown loss {self.loss_type!r}")

    def to_sample(self, output: Tensor, prepared: Prepared | None = None) -> Tensor:
        """(B, 3, H, W) -> unit vectors (B, 3, H, W)."""
        return F.normalize(output.float(), dim=1, eps=1e-6)

    def metrics(self) -> dict[str, Metric]:  # noqa: D102
        return {"angular_error_deg": MeanAngularError(dim=1)}

    def update_metrics(self, metrics: dict[str, Metric], sample: Tensor, value: Tensor) -> None:  # noqa: D102
        for metric in metrics.values():
            metric.update(sample, value)

    def display(self, value: Tensor) -> Tensor:  # noqa: D102
        return ((value.float() + 1) / 2).clamp(0, 1)


@register_adapter(LabelMap)
class LabelAdapter(KindAdapter):
    """Class maps (semantic segmentation): class-embedding input, cross-entropy over logits.

    The class count and ignore label come from the kind (``LabelMap.num_classes``,
    ``ignore_index``).
    """

    kind_type: ClassVar[type[ModalityKind]] = LabelMap

    @property
    def kind(self) -> LabelMap:
        """The bound label kind."""
        kind = self.spec.kind
        assert isinstance(kind, LabelMap)
        return kind

    @property
    def num_classes(self) -> int:  # noqa: D102
        return self.kind.num_classes

    @property
    def out_channels(self) -> int:  # noqa: D102
        return self.kind.num_classes

    def check(self, value: Any) -> None:  # noqa: D102
        self._check_tensor(value, 3, None, "int")
        ignore = self.kind.ignore_index
        labels = value.long()
        bad = labels >= self.num_classes
        if ignore is not None:
            bad &= labels != ignore
        if bool(bad.any()) or bool((labels < 0).any()):
            self._fail(
                f"labels outside 0..{self.num_classes - 1}: min {int(labels.min())}, "
                f"max {int(labels.max())}"
            )

    def prepare(self, value: Tensor) -> Prepared:
        """(B, H, W) class ids -> input ids (ignore label mapped to 0) and CE targets."""
        target = value.long()
        ignore = self.kind.ignore_index
        # The class embedding has num_classes rows; unlabelled pixels enter as class 0 and are
        # left out of the loss by ignore_index.
        ids = target.masked_fill(target == ignore, 0) if ignore is not None else target
        return Prepared(ids, target)

    def loss(self, output: Tensor, prepared: Prepared) -> Tensor:  # noqa: D102
        ignore = self.kind.ignore_index
        return F.cross_entropy(
            output.float(), prepared.target, ignore_index=-100 if ignore is None else ignore
        )

    def to_sample(self, output: Tensor, prepared: Prepared | None = None) -> Tensor:
        """(B, K, H, W) logits -> (B, H, W) class ids (uint8 when they fit, as in batches)."""
        labels = output.argmax(dim=1)
        return labels.to(torch.uint8) if self.num_classes <= 256 else labels

    def metrics(self) -> dict[str, Metric]:  # noqa: D102
        from torchmetrics.classification import MulticlassJaccardIndex

        return {
            "miou": MulticlassJaccardIndex(
                self.num_classes, average="macro", ignore_index=self.kind.ignore_index
            )
        }

    def update_metrics(self, metrics: dict[str, Metric], sample: Tensor, value: Tensor) -> None:  # noqa: D102
        for metric in metrics.values():
            metric.update(sample.long(), value.long())

    def display(self, value: Tensor) -> Tensor:
        """Class ids coloured with a fixed palette (hues spread by the golden ratio)."""
        k = max(self.num_classes, 1)
        index = torch.arange(k, dtype=torch.float32)
        hue = (index * 0.618034) % 1.0
        # HSV (hue, 0.65, 0.9) -> RGB, vectorised.
        channel = torch.tensor([5.0, 3.0, 1.0])
        kk = (channel[None] + hue[:, None] * 6) % 6
        rgb = 0.9 - 0.9 * 0.65 * (torch.minimum(kk, 4 - kk).clamp(0, 1))
        palette = rgb.to(value.device)
        labels = value.long().clamp(0, k - 1)
        return rearrange(palette[labels], "b h w c -> b c h w")


@register_adapter(EdgeMap)
class EdgeAdapter(KindAdapter):
    """Binary edge maps: BCE with logits, optional positive weight (edges are rare).

    Args:
        pos_weight: weight of the edge (positive) pixels in the BCE loss; None means 1.
        threshold: probability above which a reconstructed pixel is an edge.
    """

    kind_type: ClassVar[type[ModalityKind]] = EdgeMap

    def __init__(self, pos_weight: float | None = None, threshold: float = 0.5) -> None:
        super().__init__()
        self.pos_weight = pos_weight
        self.threshold = threshold

    def check(self, value: Any) -> None:  # noqa: D102
        self._check_tensor(value, 3, None, "int")

    def prepare(self, value: Tensor) -> Prepared:
        """(B, H, W) {0, 1} -> input (B, 1, H, W) in {-1, 1}, target (B, 1, H, W) in {0, 1}."""
        target = rearrange(value.float(), "b h w -> b 1 h w")
        return Prepared(target * 2 - 1, target)

    def loss(self, output: Tensor, prepared: Prepared) -> Tensor:  # noqa: D102
        pos_weight = (
            None
            if self.pos_weight is None
            else torch.tensor(self.pos_weight, device=output.device, dtype=torch.float32)
        )
        return F.binary_cross_entropy_with_logits(
            output.float(), prepared.target, pos_weight=pos_weight
        )

    def to_sample(self, output: Tensor, prepared: Prepared | None = None) -> Tensor:
        """(B, 1, H, W) logits -> (B, H, W) uint8 in {0, 1}."""
        logit = math.log(self.threshold / (1 - self.threshold))
        return (output[:, 0] > logit).to(torch.uint8)

    def metrics(self) -> dict[str, Metric]:  # noqa: D102
        from torchmetrics.classification import BinaryF1Score

        return {"f1": BinaryF1Score()}

    def update_metrics(self, metrics: dict[str, Metric], sample: Tensor, value: Tensor) -> None:  # noqa: D102
        for metric in metrics.values():
            metric.update(sample.long(), value.long())

    def display(self, value: Tensor) -> Tensor:  # noqa: D102
        return _gray(value.float())


@register_adapter(FeatureMap)
class FeatureAdapter(KindAdapter):
    """Feature maps (CLIP, DINOv2 patch features): smooth-L1, as in 4M.

    Args:
        smooth_l1_beta: transition point of the smooth-L1 loss.
    """

    kind_type: ClassVar[type[ModalityKind]] = FeatureMap

    def __init__(self, smooth_l1_beta: float = 1.0) -> None:
        super().__init__()
        self.smooth_l1_beta = smooth_l1_beta

    @property
    def in_channels(self) -> int:  # noqa: D102
        kind = self.spec.kind
        assert isinstance(kind, FeatureMap)
        return kind.channels

    def check(self, value: Any) -> None:  # noqa: D102
        self._check_tensor(value, 4, self.in_channels, "float")

    def prepare(self, value: Tensor) -> Prepared:
        """(B, C, h, w) -> the same (input and target)."""
        x = value.float()
        return Prepared(x, x)

    def loss(self, output: Tensor, prepared: Prepared) -> Tensor:  # noqa: D102
        return F.smooth_l1_loss(output.float(), prepared.target, beta=self.smooth_l1_beta)

    def to_sample(self, output: Tensor, prepared: Prepared | None = None) -> Tensor:
        """(B, C, h, w) -> the same, float32."""
        return output.float()

    def metrics(self) -> dict[str, Metric]:  # noqa: D102
        from torchmetrics import MeanSquaredError

        return {"mse": MeanSquaredError()}

    def update_metrics(self, metrics: dict[str, Metric], sample: Tensor, value: Tensor) -> None:  # noqa: D102
        for metric in metrics.values():
            metric.update(sample.flatten(), value.float().flatten())

    def display(self, value: Tensor) -> Tensor:
        """The first three channels, min-max scaled per image."""
        x = value[:, :3].float()
        if x.shape[1] < 3:
            x = repeat(x[:, :1], "b 1 h w -> b c h w", c=3)
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
        return (x - low) / (high - low).clamp_min(1e-6)


@register_adapter(GlobalVector)
class VectorAdapter(KindAdapter):
    """Global vectors (camera pose, global embeddings): MSE in standardised units.

    The MLP core standardises its input itself, so ``loss`` takes standardised tensors.
    """

    kind_type: ClassVar[type[ModalityKind]] = GlobalVector

    @property
    def in_channels(self) -> int:
        """The vector length D."""
        kind = self.spec.kind
        assert isinstance(kind, GlobalVector)
        return kind.dim

    def check(self, value: Any) -> None:  # noqa: D102
        self._check_tensor(value, 2, self.in_channels, "float")

    def prepare(self, value: Tensor) -> Prepared:
        """(B, D) -> the same, float32."""
        x = value.float()
        return Prepared(x, x)

    def loss(self, output: Tensor, prepared: Prepared) -> Tensor:  # noqa: D102
        return F.mse_loss(output.float(), prepared.target)

    def to_sample(self, output: Tensor, prepared: Prepared | None = None) -> Tensor:
        """(B, D) -> the same, float32."""
        return output.float()

    def metrics(self) -> dict[str, Metric]:  # noqa: D102
        from torchmetrics import CosineSimilarity, MeanSquaredError

        return {"cosine": CosineSimilarity(reduction="mean"), "mse": MeanSquaredError()}

    def update_metrics(self, metrics: dict[str, Metric], sample: Tensor, value: Tensor) -> None:  # noqa: D102
        for metric in metrics.values():
            metric.update(sample.float(), value.float())

    def display(self, value: Tensor) -> Tensor:
        """Each vector as one row of gray cells, min-max scaled per batch: (B, 3, 1, D)."""
        x = value.float()
        x = (x - x.amin()) / (x.amax() - x.amin()).clamp_min(1e-6)
        return repeat(x, "b d -> b c 1 d", c=3)


__all__ = [
    "ADAPTERS",
    "DepthAdapter",
    "EdgeAdapter",
    "FeatureAdapter",
    "KindAdapter",
    "LabelAdapter",
    "NormalAdapter",
    "PerceptualLoss",
    "Prepared",
    "RGBAdapter",
    "VectorAdapter",
    "adapter_class",
    "default_adapter",
    "register_adapter",
]
