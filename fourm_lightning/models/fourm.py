"""The 4M masked multimodal encoder-decoder, as plain ``nn.Module``s (no Lightning).

Batch format (what ``TokenDataModule`` delivers, one entry per domain)::

    batch[name] = {"tensor": ..., "input_mask": (B, L) bool, "target_mask": (B, L) bool}

``input_mask`` True marks encoder inputs, ``target_mask`` True marks decoder targets (see
``fourm_lightning.models.domains`` for each family's tensor).

Forward pass (reference section 4):

1. every encoder domain embeds all its positions into content ``x`` and position + modality
   ``emb``; the input positions of all domains are gathered (stable, valid first) into N slots,
   N = the most inputs of any sample in the batch; padding is zeroed and masked out;
2. encoder: ``x + emb`` through pre-LN blocks (SDPA, key-padding mask), final norm;
3. every target domain gives its decoder inputs (mask token for image-like targets, shifted
   tokens for sequences); valid positions are gathered into M slots the same way;
4. decoder self-attention: a token sees only tokens of **its own domain**; image-like targets
   see each other, sequence targets causally; cross-attention to ``proj(encoder) + emb``;
5. each domain's head scores its own positions; the loss is the mean over the domains that have
   targets in the batch of their mean cross-entropy (the original also counted absent ones).

A sample with no input at all is allowed (an unconditional pass, as classifier-free guidance
needs): its encoder then holds one zero "null" token that the decoder attends to.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fourm_lightning.models.domains import Domain
from fourm_lightning.models.layers import (
    AttentionImpl,
    Block,
    DecoderBlock,
    LayerNorm,
    MlpType,
    init_weights,
)

PRETRAINED_FORMAT = "fourm-lightning-4m"
PRETRAINED_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class DomainLoss:
    """Loss and accuracy of one target domain in one batch.

    Args:
        loss: mean cross-entropy over its targets (a 0 that still carries gradients if none).
        accuracy: share of targets whose argmax is right (nan when there are none).
        num_targets: how many target tokens the batch had.
    """

    loss: Tensor
    accuracy: Tensor
    num_targets: int


@dataclass
class FourMOutput:
    """``loss``: mean over present domains; ``domains``: per-domain ``DomainLoss``."""

    loss: Tensor
    domains: dict[str, DomainLoss]


@dataclass
class DecoderCache:
    """KV cache of incremental decoding.

    Per block: self-attention keys/values (grown in place) and cross-attention keys/values
    (fixed); plus the encoder's (B, 1, 1, N) key mask.
    """

    self_kv: list[dict[str, Tensor]]
    cross_kv: list[tuple[Tensor, Tensor]]
    cross_mask: Tensor


@dataclass
class Encoded:
    """Encoder output: ``tokens`` (B, N, D) normed, ``emb`` (B, N, D), ``valid`` (B, N) bool."""

    tokens: Tensor
    emb: Tensor
    valid: Tensor


def gather_valid(valid: Tensor, *tensors: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Move valid positions first (stable order) and cut to the largest count in the batch.

    Args:
        valid: (B, L) bool.
        tensors: (B, L, ...) tensors to reorder alike.

    Returns:
        ``(valid (B, K), [tensor (B, K, ...)])`` with K = max valid count (at least 1).
    """
    order = torch.argsort((~valid).to(torch.int8), dim=1, stable=True)
    keep = max(1, int(valid.sum(1).max()))
    order = order[:, :keep]
    out = []
    for t in tensors:
        index = order.reshape(*order.shape, *([1] * (t.ndim - 2))).expand(-1, -1, *t.shape[2:])
        out.append(torch.gather(t, 1, index))
    return torch.gather(valid, 1, order), out


class FourM(nn.Module):
    """4M encoder-decoder over a set of domains.

    Args:
        domains: the model's domains (inputs and targets); names must be unique.
        dim: width D.
        encoder_depth: encoder blocks.
        decoder_depth: decoder blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden ratio (SwiGLU keeps the parameter count of GELU at this ratio).
        mlp: ``"swiglu"`` (4M's default) or ``"gelu"``.
        bias: biases in linear layers and LayerNorms (4M's "nobias" models: False).
        qk_norm: per-head LayerNorm on queries and keys.
        drop_path: stochastic depth rate, linearly increasing over encoder then decoder blocks.
        share_modality_embeddings: the decoder reuses the encoder's modality embedding of a domain.
        attention: ``"auto"``, ``"sdpa"`` or ``"matmul"`` (see ``layers.attend``).
        embedding_std: init std of the token and text embeddings (4M: 0.02). At 0.02 a token's
            content vector has ~1/35 the norm of its sin-cos position vector, so token and text
            inputs barely change the encoder's output until the embeddings grow: a small model
            did not learn to copy one word from a text input to a text target in 300 steps at
            0.02, and did in 100 at 1.0 (docs/RESULTS.md, "Token embeddings"). Short CPU
            budgets should use 1.0, as the quickstart plans do.
    """

    def __init__(
        self,
        domains: Sequence[Domain],
        dim: int = 256,
        encoder_depth: int = 4,
        decoder_depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        mlp: MlpType = "swiglu",
        bias: bool = False,
        qk_norm: bool = False,
        drop_path: float = 0.0,
        share_modality_embeddings: bool = True,
        attention: AttentionImpl = "auto",
        embedding_std: float = 0.02,
    ) -> None:
        super().__init__()
        if not embedding_std > 0:
            raise ValueError(f"embedding_std must be positive, got {embedding_std}")
        names = [d.name for d in domains]
        if len(set(names)) != len(names):
            raise ValueError(f"domain names must be unique, got {names}")
        if not domains:
            raise ValueError("a 4M model needs at least one domain")
        self.domains = {d.name: d for d in domains}
        self.dim = dim
        #: Constructor arguments other than the domains (what ``save_pretrained`` records).
        self.config = {
            "dim": dim,
            "encoder_depth": encoder_depth,
            "decoder_depth": decoder_depth,
            "num_heads": num_heads,
            "mlp_ratio": mlp_ratio,
            "mlp": mlp,
            "bias": bias,
            "qk_norm": qk_norm,
            "drop_path": drop_path,
            "share_modality_embeddings": share_modality_embeddings,
            "attention": attention,
            "embedding_std": embedding_std,
        }
        self.encoder_embeddings = nn.ModuleDict({d.name: d.encoder_embedding(dim) for d in domains})
        decoders = {d.name: d.decoder_embedding(dim) for d in domains if d.has_target}
        self.decoder_embeddings = nn.ModuleDict({k: v for k, v in decoders.items() if v})
        if not self.decoder_embeddings:
            raise ValueError(f"no domain of {names} can be a target")
        depth = encoder_depth + decoder_depth
        rates = [drop_path * i / max(1, depth - 1) for i in range(depth)]  # plain floats: meta-safe
        self.encoder = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, mlp, bias, qk_norm, rates[i], attention)
            for i in range(encoder_depth)
        )
        self.encoder_norm = LayerNorm(dim, bias)
        self.decoder_proj_context = nn.Linear(dim, dim, bias=bias)
        self.decoder = nn.ModuleList(
            DecoderBlock(
                dim, num_heads, mlp_ratio, mlp, bias, qk_norm, rates[encoder_depth + i], attention
            )
            for i in range(decoder_depth)
        )
        self.decoder_norm = LayerNorm(dim, bias)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        init_weights(self, embedding_std=embedding_std)
        nn.init.normal_(self.mask_token, std=0.02)
        if share_modality_embeddings:
            for name, module in self.decoder_embeddings.items():
                module.mod_emb = self.encoder_embeddings[name].mod_emb

    # -- bookkeeping ----------------------------------------------------------------------------

    def save_pretrained(
        self,
        directory: str | Path,
        tokenizers: Mapping[str, Any] | None = None,
        bundle_tokenizers: bool = True,
    ) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (sizes, domains, tokenizer records).

        Args:
            directory: folder to write (created).
            tokenizers: domain -> ``{"path", "sha256", "vocab_size"}`` of the tokenizer the
                model was trained against (default: read from the domains now).
            bundle_tokenizers: copy the tokenizers into ``directory/tokenizers`` and record
                them relative to it, so the folder decodes from anywhere (``models.bundle``).
                Off: the domains keep their paths (relative ones to the working directory).

        Returns:
            The folder.

        Raises:
            ValueError: (bundling) a tokenizer changed since the model was trained.
        """
        from safetensors.torch import save_model

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if tokenizers is None:
            tokenizers = {
                name: record
                for name, domain in self.domains.items()
                if (record := domain.tokenizer_record()) is not None
            }
        domains = [d.to_config() for d in self.domains.values()]
        if bundle_tokenizers:
            from fourm_lightning.models.bundle import bundle_tokenizers as bundle

            domains, tokenizers = bundle(self.domains, out, tokenizers)
        config = {
            "format": {"name": PRETRAINED_FORMAT, "version": PRETRAINED_VERSION},
            "model": self.config,
            "domains": domains,
            "tokenizers": dict(tokenizers),
        }
        # save_model (not save_file) de-duplicates the shared modality embeddings.
        save_model(self, str(out / WEIGHTS_FILE))
        (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        return out

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, check_tokenizers: bool = False, map_location: str = "cpu"
    ) -> FourM:
        """Load a folder written by ``save_pretrained``, in eval mode.

        Args:
            directory: the folder.
            check_tokenizers: verify that every recorded tokenizer file that exists here has the
                recorded SHA-256 (a model must decode with the tokenizers it was trained on).
                Bundled tokenizers (paths relative to ``directory``) are found in the folder.
            map_location: device of the weights.

        Raises:
            FileNotFoundError: no ``config.json`` / ``model.safetensors`` in ``directory``.
            ValueError: not a 4M export, or a tokenizer whose hash differs.
        """
        from safetensors.torch import load_model

        from fourm_lightning.models.bundle import in_folder, resolve_bundled
        from fourm_lightning.models.domains import domain_from_config

        folder = Path(directory)
        config_file = folder / CONFIG_FILE
        if not config_file.is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{folder} has no {CONFIG_FILE} + {WEIGHTS_FILE}")
        config = json.loads(config_file.read_text())
        if config.get("format", {}).get("name") != PRETRAINED_FORMAT:
            raise ValueError(f"{config_file} is not a {PRETRAINED_FORMAT} export")
        if check_tokenizers:
            from fourm_lightning.datamodules.shards import path_sha256

            for name, record in config.get("tokenizers", {}).items():
                path = in_folder(record["path"], folder)
                if path.exists() and path_sha256(path) != record["sha256"]:
                    raise ValueError(
                        f"{config_file}: domain {name!r} was trained with the tokenizer "
                        f"{path} of SHA-256 {record['sha256'][:12]}..., the file there now "
                        "differs; its token ids would mean other things"
                    )
        domains = [domain_from_config(resolve_bundled(d, folder)) for d in config["domains"]]
        model = cls(domains, **config["model"])
        load_model(model, str(folder / WEIGHTS_FILE), device=map_location)
        model.tokenizer_records = config.get("tokenizers", {})
        return model.eval()

    def trunk_parameters(self) -> int:
        """Parameters of the trunk (blocks, norms, context projection): 4M's published counts."""
        modules = [self.encoder, self.encoder_norm, self.decoder_proj_context, self.decoder]
        modules.append(self.decoder_norm)
        return sum(p.numel() for m in modules for p in m.parameters())

    def _check_batch(self, batch: Mapping[str, Mapping[str, Tensor]]) -> None:
        unknown = [k for k in batch if k not in self.domains and not k.startswith("__")]
        if unknown:
            raise KeyError(
                f"batch has modalities the model does not know: {unknown}; "
                f"the model's domains are {list(self.domains)}"
            )

    # -- encoder --------------------------------------------------------------------------------

    def encode(self, batch: Mapping[str, Mapping[str, Tensor]]) -> Encoded:
        """Embed and encode the input tokens of every domain present in ``batch``.

        Domains absent from ``batch`` simply contribute nothing (generation passes only what it
        conditions on); names the model does not know are an error.

        Returns:
            ``Encoded`` with N = the most input tokens of any sample (at least 1).
        """
        self._check_batch(batch)
        xs, embs, masks = [], [], []
        for name, module in self.encoder_embeddings.items():
            if name not in batch:
                continue
            x, emb = module(batch[name])
            xs.append(x)
            embs.append(emb)
            masks.append(batch[name]["input_mask"].reshape(x.shape[0], -1))
        if not xs:
            raise ValueError(f"the batch holds none of the model's domains {list(self.domains)}")
        valid, (x, emb) = gather_valid(torch.cat(masks, 1), torch.cat(xs, 1), torch.cat(embs, 1))
        x = x * valid[..., None]
        emb = emb * valid[..., None]
        key_valid = self._attendable(valid)
        h = x + emb
        for block in self.encoder:
            h = block(h, key_valid[:, None, None, :])
        return Encoded(self.encoder_norm(h), emb, valid)

    @staticmethod
    def _attendable(valid: Tensor) -> Tensor:
        """Keys a query may attend: the valid ones, or the first (null) slot if there are none."""
        empty = ~valid.any(1)
        if not bool(empty.any()):
            return valid
        first = torch.zeros_like(valid)
        first[:, 0] = True
        return valid | (first & empty[:, None])

    # -- decoder --------------------------------------------------------------------------------

    def decoder_inputs(
        self, batch: Mapping[str, Mapping[str, Tensor]], names: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """Gather the decoder positions of the target domains.

        Args:
            batch: the batch.
            names: target domains to decode (default: every target domain in ``batch``).

        Returns:
            ``{"x", "emb", "targets", "valid", "domain", "causal"}``, each (B, M, ...):
            decoder content, position + modality embedding, target ids, validity, the domain
            index into ``self.decoder_embeddings`` and whether the position attends causally.
        """
        names = [n for n in self.decoder_embeddings if n in batch and (names is None or n in names)]
        if not names:
            raise ValueError(f"the batch holds no target domain of {list(self.decoder_embeddings)}")
        index = {n: i for i, n in enumerate(self.decoder_embeddings)}
        parts: dict[str, list[Tensor]] = {k: [] for k in ("x", "emb", "targets", "valid", "dom")}
        causal = []
        for name in names:
            out = self.decoder_embeddings[name](batch[name])
            emb = out["emb"]
            x = out["content"] if out["content"] is not None else self.mask_token.expand_as(emb)
            b, length = out["valid"].shape
            parts["x"].append(x)
            parts["emb"].append(emb)
            parts["targets"].append(out["targets"])
            parts["valid"].append(out["valid"])
            parts["dom"].append(torch.full((b, length), index[name], device=emb.device))
            causal.append(torch.full((b, length), self.domains[name].causal, device=emb.device))
        valid, (x, emb, targets, dom, causal_t) = gather_valid(
            torch.cat(parts["valid"], 1),
            torch.cat(parts["x"], 1),
            torch.cat(parts["emb"], 1),
            torch.cat(parts["targets"], 1),
            torch.cat(parts["dom"], 1),
            torch.cat(causal, 1),
        )
        dom = torch.where(valid, dom, torch.full_like(dom, -1))
        zero = valid[..., None]
        return {
            "x": x * zero,
            "emb": emb * zero,
            "targets": targets * valid,
            "valid": valid,
            "domain": dom,
            "causal": causal_t & valid,
        }

    @staticmethod
    def decoder_self_mask(domain: Tensor, causal: Tensor, valid: Tensor) -> Tensor:
        """Decoder self-attention mask (B, M, M), True = query i may attend key j.

        i attends j iff both are valid tokens of the same domain and (the domain is image-like, or
        j <= i for sequences). Every query also attends itself (padding rows stay finite).
        """
        m = domain.shape[1]
        same = (domain[:, :, None] == domain[:, None, :]) & valid[:, None, :] & valid[:, :, None]
        idx = torch.arange(m, device=domain.device)
        order_ok = ~causal[:, :, None] | (idx[None, None, :] <= idx[None, :, None])
        return (same & order_ok) | torch.eye(m, dtype=torch.bool, device=domain.device)

    def decode(self, encoded: Encoded, dec: Mapping[str, Tensor]) -> Tensor:
        """Run the decoder: ``decoder_inputs`` output + encoder output -> (B, M, D) normed."""
        context = self.decoder_proj_context(encoded.tokens) + encoded.emb
        self_mask = self.decoder_self_mask(dec["domain"], dec["causal"], dec["valid"])[:, None]
        cross_mask = self._attendable(encoded.valid)[:, None, None, :]
        h = dec["x"] + dec["emb"]
        for block in self.decoder:
            h = block(h, context, self_mask, cross_mask)
        return self.decoder_norm(h)

    def start_decoding(self, encoded: Encoded) -> DecoderCache:
        """A KV cache for token-by-token decoding of one sequence against ``encoded``.

        The cross-attention keys and values are computed here, once per encoder pass.
        """
        context = self.decoder_proj_context(encoded.tokens) + encoded.emb
        return DecoderCache(
            self_kv=[{} for _ in self.decoder],
            cross_kv=[block.context_kv(context) for block in self.decoder],
            cross_mask=self._attendable(encoded.valid)[:, None, None, :],
        )

    def decode_step(self, x: Tensor, cache: DecoderCache) -> Tensor:
        """Decoder inputs of the next token(s) (B, n, D), content + emb -> normed (B, n, D)."""
        for block, self_kv, cross_kv in zip(
            self.decoder, cache.self_kv, cache.cross_kv, strict=True
        ):
            x = block.step(x, self_kv, cross_kv, cache.cross_mask)
        return self.decoder_norm(x)

    def logits(self, name: str, hidden: Tensor) -> Tensor:
        """Domain ``name``'s head: (..., D) -> (..., V)."""
        return self.decoder_embeddings[name].head(hidden)

    # -- training forward -----------------------------------------------------------------------

    def forward(
        self, batch: Mapping[str, Mapping[str, Tensor]], length_groups: int = 1
    ) -> FourMOutput:
        """Masked-modeling loss of a batch (see the module docstring).

        Args:
            batch: the batch.
            length_groups: run the batch as up to this many sub-batches of samples with similar
                target counts (``split_by_length``). The decoder pads every sample to the
                batch's largest target count; in a mixture where some samples have 64 targets
                and others 256, most of its work is padding. The loss and its gradients are
                the same as in one pass (every domain's cross-entropy is summed over the
                sub-batches before it is averaged).

        Returns:
            ``FourMOutput``: the loss averaged over domains with targets, and per-domain
            losses and accuracies.
        """
        parts = [batch]
        if length_groups > 1:
            groups = split_by_length(self.target_counts(batch), length_groups)
            if len(groups) > 1:
                parts = [select_samples(batch, index) for index in groups]
        # Per target domain: summed cross-entropy, right argmaxes, target count.
        sums: dict[str, list[Tensor]] = {}
        correct: dict[str, Tensor] = {}
        number: dict[str, int] = {}
        for part in parts:
            encoded = self.encode(part)
            dec = self.decoder_inputs(part)
            hidden = self.decode(encoded, dec)
            for i, name in enumerate(self.decoder_embeddings):
                if name not in part:
                    continue
                select = dec["domain"] == i
                # A head with no targets still runs on zero rows so every parameter takes part
                # in the graph (DDP needs it) while adding exactly 0.
                logits = self.logits(name, hidden[select]).float()
                targets = dec["targets"][select]
                sums.setdefault(name, []).append(
                    F.cross_entropy(logits, targets, reduction="sum")
                    if targets.numel()
                    else logits.sum() * 0.0
                )
                hits = (logits.argmax(-1) == targets).sum().detach()
                correct[name] = correct[name] + hits if name in correct else hits
                number[name] = number.get(name, 0) + int(targets.numel())
        losses: dict[str, DomainLoss] = {}
        present, zeros = [], []
        for name, parts_sum in sums.items():
            total_ce = torch.stack(parts_sum).sum()
            count = number[name]
            if count:
                loss = total_ce / count
                accuracy = correct[name].float() / count
                present.append(loss)
            else:
                loss = total_ce  # an exact 0 that keeps the head in the graph
                zeros.append(loss)
                accuracy = torch.tensor(float("nan"), device=loss.device)
            losses[name] = DomainLoss(loss, accuracy, count)
        # Domains without targets add exact zeros that keep their heads in the graph.
        total = torch.stack(present).mean() if present else self.mask_token.sum() * 0.0
        for zero in zeros:
            total = total + zero
        # Heads of domains absent from the batch: keep them in the graph for DDP.
        for name in self.decoder_embeddings:
            if name not in batch:
                total = total + 0.0 * self.decoder_embeddings[name].head.weight.sum()
        return FourMOutput(total, losses)

    def target_counts(self, batch: Mapping[str, Mapping[str, Tensor]]) -> Tensor:
        """Decoder targets per sample, summed over the target domains in ``batch``: (B,) long."""
        counts = [
            batch[name]["target_mask"].reshape(batch[name]["target_mask"].shape[0], -1).sum(1)
            for name in self.decoder_embeddings
            if name in batch
        ]
        if not counts:
            raise ValueError(f"the batch holds no target domain of {list(self.decoder_embeddings)}")
        return torch.stack(counts).sum(0)


def split_by_length(counts: Tensor, max_groups: int, min_saving: float = 0.1) -> list[Tensor]:
    """Group samples of similar length so that padding each group to its longest costs least.

    Samples are sorted by ``counts`` and cut into at most ``max_groups`` runs; the cuts minimise
    the padded length summed over samples (each group's size times its longest count), found
    exactly by dynamic programming over the sorted order (O(groups x B^2), B a batch). Every
    group is one more pass through the model, so a further cut is only made when it shortens
    the padded length by at least ``min_saving`` of what fewer groups leave.

    Args:
        counts: (B,) lengths, e.g. decoder targets per sample.
        max_groups: the most groups to return (1 returns the whole batch).
        min_saving: the least relative saving an extra group must bring (0: always cut).

    Returns:
        sample indices of each group, (B_g,) long tensors that together cover ``range(B)``,
        shortest first.
    """
    if max_groups < 1:
        raise ValueError(f"max_groups must be at least 1, got {max_groups}")
    order = torch.argsort(counts.detach().cpu(), stable=True)
    lengths = counts.detach().cpu()[order].tolist()
    n = len(lengths)
    if n < 2:
        return [order]
    most = min(max_groups, n)
    # best[g][j]: least padded length of the first j sorted samples in g groups; sorted, so a
    # group's longest sample is its last.
    inf = float("inf")
    best = [[inf] * (n + 1) for _ in range(most + 1)]
    cut = [[0] * (n + 1) for _ in range(most + 1)]
    best[0][0] = 0.0
    for g in range(1, most + 1):
        for j in range(1, n + 1):
            for i in range(g - 1, j):
                cost = best[g - 1][i] + (j - i) * lengths[j - 1]
                if cost < best[g][j]:
                    best[g][j], cut[g][j] = cost, i
    groups = 1
    for g in range(2, most + 1):
        if best[g][n] <= best[groups][n] * (1.0 - min_saving) and best[g][n] < best[groups][n]:
            groups = g
    bounds, j = [], n
    for g in range(groups, 0, -1):
        bounds.append((cut[g][j], j))
        j = cut[g][j]
    return [order[i:j] for i, j in reversed(bounds)]


def select_samples(batch: Mapping[str, Any], index: Tensor) -> dict[str, Any]:
    """The samples ``index`` (B_g,) of a batch: every domain's tensors indexed on dim 0.

    Entries whose names start with ``__`` (keys, counters) are not model inputs and are dropped.
    """
    out: dict[str, Any] = {}
    for name, entry in batch.items():
        if name.startswith("__"):
            continue
        out[name] = {
            k: v[index.to(v.device)] if isinstance(v, Tensor) else v for k, v in entry.items()
        }
    return out


__all__ = [
    "DecoderCache",
    "DomainLoss",
    "Encoded",
    "FourM",
    "FourMOutput",
    "gather_valid",
    "select_samples",
    "split_by_length",
]
