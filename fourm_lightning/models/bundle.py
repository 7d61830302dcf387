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
    # The text domains share one tokenizer: hash and copy each source once.
    source_sha: dict[Path, str] = {}
    copies: dict[Path, tuple[str, str]] = {}  # source -> (path relative to ``out``, its SHA-256)
    for name, domain in domains.items():
        config = domain.to_config()
        configs.append(config)
        path = getattr(domain, "tokenizer", None)
        if path is None or not Path(path).exists():
            continue
        source = Path(path).resolve()
        if source not in source_sha:
            source_sha[source] = path_sha256(source)
        record = records.get(name)
        if record is not None and source_sha[source] != record["sha256"]:
            raise ValueError(
                f"domain {name!r}: its tokenizer {path} changed since training (SHA-256 "
                f"{record['sha256'][:12]}... recorded); bundling it would pair the model with "
                "other token ids"
            )
        if source not in copies:
            relative = f"{BUNDLE_DIR}/{name}"
            _copy_tokenizer(source, out / relative)
            copies[source] = (relative, path_sha256(out / relative))
        relative, copy_sha = copies[source]
        config["init_args"]["tokenizer"] = relative
        bundled[name] = {
            "path": relative,
            "sha256": copy_sha,
            "vocab_size": domain.tokenizer_vocab_size(),
            "source": str(path),
        }
    return configs, bundled


def in_folder(path: str | Path, folder: Path) -> Path:
    """``path`` resolved against ``folder`` when it is relative and exists there.

    A bundled tokenizer's recorded path is relative to its export folder; the result is
    absolute, so it stays valid if the caller changes directory. Other paths come back as given.
    """
    path = Path(path)
    if not path.is_absolute() and (folder / path).exists():
        return (folder / path).resolve()
    return path


def resolve_bundled(config: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """A domain config whose relative tokenizer path exists under ``folder``, made absolute."""
    path = config.get("init_args", {}).get("tokenizer")
    resolved = None if path is None else in_folder(path, folder)
    if resolved is None or resolved == Path(path):
        return dict(config)
    return {**config, "init_args": {**config["init_args"], "tokenizer": str(resolved)}}


__all__ = ["BUNDLE_DIR", "bundle_tokenizers", "in_folder", "resolve_bundled"]
