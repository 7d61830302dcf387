"""Tokenizers inside a 4M export folder, so the folder works from any directory and machine.

A 4M model's token ids only mean something with the tokenizers it was trained against. Domains
name them by path, and training configs use paths relative to the working directory
(``runs/quickstart/tokenizers/...``), so a Lightning checkpoint decodes only from that directory.
``FourM.save_pretrained`` therefore copies each tokenizer into ``<export>/tokenizers/<domain>``
(checkpoints as weights-only exports, text tokenizer folders as they are) and records the copy's
path relative to the export; ``FourM.from_pretrained`` resolves such paths against the folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fourm_lightning.models.domains import Domain

BUNDLE_DIR = "tokenizers"


def _copy_tokenizer(source: Path, dest: Path) -> None:
    """A checkpoint becomes a weights-only export (no optimizer state); folders are copied."""
    if dest.exists():
        shutil.rmtree(dest)
    if source.is_dir():
        shutil.copytree(source, dest)
        return
    from fourm_lightning.tokenizers.loading import load_tokenizer

    load_tokenizer(source).export(dest)


def bundle_tokenizers(
    domains: Mapping[str, Domain], out: Path, records: Mapping[str, Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Copy each domain's tokenizer under ``out/tokenizers`` and point the domain at the copy.

    Domains that share a tokenizer (the text domains) share one copy. A domain whose tokenizer
    is not on this machine keeps its path and record unchanged.

    Args:
        domains: the model's domains by name.
        out: the export folder.
        records: domain -> ``{"path", "sha256", "vocab_size"}`` of the tokenizer the model was
            trained against.

    Returns:
        The domain configs (``Domain.to_config``, bundled paths relative to ``out``) and the
        tokenizer records of the copies (``source``: where each came from).

    Raises:
        ValueError: a tokenizer file changed since training (its SHA-256 differs from the
            record), so bundling it would pair the weights with other token ids.
    """
    from fourm_lightning.datamodules.shards import path_sha256

    configs: list[dict[str, Any]] = []
    bundled: dict[str, dict[str, Any]] = {name: dict(r) for name, r in records.items()}
    copies: dict[Path, str] = {}  # resolved source -> path relative to ``out``
    for name, domain in domains.items():
        config = domain.to_config()
        configs.append(config)
        path = getattr(domain, "tokenizer", None)
        if path is None or not Path(path).exists():
            continue
        source = Path(path).resolve()
        record = records.get(name)
        if record is not None and path_sha256(source) != record["sha256"]:
            raise ValueError(
                f"domain {name!r}: its tokenizer {path} changed since training (SHA-256 "
                f"{record['sha256'][:12]}... recorded); bundling it would pair the model with "
                "other token ids"
            )
        if source not in copies:
            copies[source] = f"{BUNDLE_DIR}/{name}"
            _copy_tokenizer(source, out / copies[source])
        relative = copies[source]
        config["init_args"]["tokenizer"] = relative
        bundled[name] = {
            "path": relative,
            "sha256": path_sha256(out / relative),
            "vocab_size": domain.tokenizer_vocab_size(),
            "source": str(path),
        }
    return configs, bundled


def resolve_bundled(config: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """A domain config whose relative tokenizer path exists under ``folder``, made absolute."""
    path = config.get("init_args", {}).get("tokenizer")
    if path is None or Path(path).is_absolute() or not (folder / path).exists():
        return dict(config)
    absolute = str((folder / path).resolve())  # stays valid if the caller changes directory
    return {**config, "init_args": {**config["init_args"], "tokenizer": absolute}}


__all__ = ["BUNDLE_DIR", "bundle_tokenizers", "resolve_bundled"]
