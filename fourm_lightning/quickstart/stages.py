"""The quickstart's stages: each one trains or computes through the same code as its CLI command.

Training stages write the exact config they ran to ``RUN/configs/<run>.yaml`` and run it with
LightningCLI in this process, so ``fourm-lightning fit --config RUN/configs/<run>.yaml`` repeats
them. Every stage returns a ``StageRecord`` and is skipped when a valid one exists (``record.py``).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import yaml

from fourm_lightning.quickstart.fit import fit
from fourm_lightning.quickstart.plan import (
    ROOT,
    DatasetPlan,
    EvaluationPlan,
    GenerationPlan,
    PretokenizePlan,
    PretrainPlan,
    TextPlan,
    TokenizerPlan,
    duration,
    seconds,
    set_dotted,
)
from fourm_lightning.quickstart.record import StageBook, StageRecord


def _read_config(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def _write_config(config: dict[str, Any], path: Path, source: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Written by `fourm-lightning quickstart` from {source}; repeat the run with\n"
        f"#   fourm-lightning fit --config {path}\n"
    )
    path.write_text(header + yaml.safe_dump(config, sort_keys=False, width=100))
    return path


def _record_fit(record: StageRecord, outcome: dict[str, Any], config: Path) -> None:
    """Fill a training stage's record from a ``quickstart.fit.fit`` outcome."""
    record.outputs = {"checkpoint": outcome["checkpoint"], "config": str(config)}
    record.metrics = {"steps": outcome["steps"], **outcome["metrics"]}


def _logger_to(config: dict[str, Any], save_dir: Path, name: str) -> None:
    """Point the config's TensorBoard logger at ``save_dir/name/version_0``."""
    logger = config["trainer"]["logger"]
    logger["init_args"].update({"save_dir": str(save_dir), "name": name, "version": 0})


def dataset_stage(plan: DatasetPlan, run_dir: Path, book: StageBook) -> StageRecord:
    """Render the built-in dataset into ``RUN/data`` (``fourm-lightning data synth``)."""
    from fourm_lightning.datamodules.build import synthesize_dataset
    from fourm_lightning.datamodules.shards import read_manifest

    data_dir = run_dir / "data"
    settings = {"dataset": plan}
    done = book.valid("dataset", settings)
    if done:
        return done
    with book.run("dataset", settings) as record:
        synthesize_dataset(
            data_dir,
            num_train=plan.num_train,
            num_val=plan.num_val,
            resolution=plan.resolution,
            seed=plan.seed,
            workers=plan.workers,
            scene=plan.scene_config(),
            overwrite=True,
        )
        manifest = read_manifest(data_dir)
        record.outputs = {"data": str(data_dir / "manifest.json")}
        record.metrics = {s: manifest.num_samples(s) for s in ("train", "val")}
    return record


def _tokenizer_config(
    plan: TokenizerPlan,
    data: StageRecord,
    run_dir: Path,
    data_workers: int | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """The config a tokenizer trains with: its experiment config with the plan's budget.

    ``precision`` (a trainer precision) replaces the config's when given.
    """
    config = _read_config(plan.config)
    for key, value in plan.overrides.items():
        set_dotted(config, key, value)
    config["trainer"]["max_steps"] = plan.max_steps
    if precision is not None:
        config["trainer"]["precision"] = precision
    config["model"]["init_args"]["warmup_steps"] = plan.warmup_steps
    data_args = config["data"]["init_args"]
    data_args["data_dir"] = str(Path(data.outputs["data"]).parent)
    data_args["synthesize"] = None  # the dataset stage made it
    if data_workers is not None:
        data_args["num_workers"] = min(int(data_args.get("num_workers", 0)), data_workers)
    # One "epoch" = the whole budget: the validation pass (metrics, reconstructions in
    # TensorBoard) then scores the final weights.
    data_args["epoch_samples"] = plan.max_steps * int(data_args["batch_size"])
    _logger_to(config, run_dir / "tokenizers", f"tok_{plan.modality}")
    return config


def _tokenizer_settings(plan: TokenizerPlan, data: StageRecord, config: dict[str, Any]) -> Any:
    # The resolved config, not just the plan: an edited experiment config reruns the stage.
    return {"tokenizer": plan, "data": data.identity, "config": config}


def _start_tokenizer(plan: TokenizerPlan, config: dict[str, Any], run_dir: Path) -> Path:
    """Write ``RUN/configs/tok_<modality>.yaml`` and clear the old run's logs."""
    name = f"tok_{plan.modality}"
    shutil.rmtree(run_dir / "tokenizers" / name, ignore_errors=True)
    return _write_config(config, run_dir / "configs" / f"{name}.yaml", plan.config)


def tokenizer_stage(
    plan: TokenizerPlan,
    data: StageRecord,
    run_dir: Path,
    book: StageBook,
    precision: str | None = None,
) -> StageRecord:
    """Train one modality tokenizer from its experiment config with the plan's short budget."""
    name = f"tok_{plan.modality}"
    config = _tokenizer_config(plan, data, run_dir, precision=precision)
    settings = _tokenizer_settings(plan, data, config)
    done = book.valid(name, settings)
    if done:
        return done
    path = _start_tokenizer(plan, config, run_dir)
    with book.run(name, settings) as record:
        _record_fit(record, fit(path), path)
    return record


def _fit_in_worker(config: Path, log: Path, threads: int) -> dict[str, Any]:
    """Run ``fit.py`` as a process on ``config`` with ``threads`` threads, output to ``log``."""
    result = log.with_suffix(".json")
    result.unlink(missing_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "fourm_lightning.quickstart.fit", str(config), str(result)]
    with log.open("w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0 or not result.is_file():
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-20:])
        raise RuntimeError(f"{config}: training failed (exit code {code}); end of {log}:\n{tail}")
    return json.loads(result.read_text())


def tokenizer_stages(
    plans: Sequence[TokenizerPlan],
    data: StageRecord,
    run_dir: Path,
    book: StageBook,
    jobs: int,
    on_done: Callable[[str, StageRecord], None],
    precision: str | None = None,
) -> dict[str, StageRecord]:
    """Train the tokenizers ``jobs`` at a time, each in its own process, and record each one.

    Small models on a few cores train faster side by side than one after another with all the
    threads (docs/RESULTS.md, "Quickstart"), so each worker gets ``cores // jobs`` threads and
    one DataLoader worker. Their output goes to ``RUN/logs/tok_<modality>.log``.

    Args:
        plans: the tokenizers to train (valid ones are skipped).
        data: the dataset stage.
        run_dir: the run folder.
        book: the stage records.
        jobs: tokenizers trained at once.
        on_done: called with (modality, record) as each tokenizer is found valid or finishes.
        precision: trainer precision replacing the configs' (None: keep theirs).

    Returns:
        modality -> record, in plan order.
    """
    records: dict[str, StageRecord] = {}
    pending = []
    for plan in plans:
        config = _tokenizer_config(plan, data, run_dir, data_workers=1, precision=precision)
        settings = _tokenizer_settings(plan, data, config)
        done = book.valid(f"tok_{plan.modality}", settings)
        if done:
            records[plan.modality] = done
            on_done(plan.modality, done)
        else:
            pending.append((plan, config, settings))
    threads = max(1, (os.cpu_count() or 1) // jobs)
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)

    def train(plan: TokenizerPlan, config: dict[str, Any], settings: Any) -> StageRecord:
        name = f"tok_{plan.modality}"
        path = _start_tokenizer(plan, config, run_dir)
        with book.run(name, settings) as record:
            outcome = _fit_in_worker(path, run_dir / "logs" / f"{name}.log", threads)
            _record_fit(record, outcome, path)
        return record

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(train, *job): job[0].modality for job in pending}
        try:
            for future in as_completed(futures):
                records[futures[future]] = future.result()
                on_done(futures[future], records[futures[future]])
        except BaseException:
            # Do not start the queued tokenizers; the running ones finish and keep their records.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return {plan.modality: records[plan.modality] for plan in plans}


def text_stage(plan: TextPlan, data: StageRecord, run_dir: Path, book: StageBook) -> StageRecord:
    """Train the WordPiece tokenizer on the training captions and measure its round trip."""
    from fourm_lightning.tokenizers.lit_text import evaluate_text_tokenizer, train_text_tokenizer

    settings = {"text": plan, "data": data.identity}
    done = book.valid("tok_text", settings)
    if done:
        return done
    data_dir = str(Path(data.outputs["data"]).parent)
    out = run_dir / "tokenizers" / "tok_text"
    with book.run("tok_text", settings) as record:
        tokenizer = train_text_tokenizer(data_dir, str(out), plan.vocab_size)
        report = evaluate_text_tokenizer(tokenizer, data_dir, "val")
        record.outputs = {"tokenizer": str(out / "tokenizer.json")}
        record.metrics = {"vocab_size": tokenizer.vocab_size, **report}
    return record


def pretokenize_stage(
    plan: PretokenizePlan,
    data: StageRecord,
    tokenizers: dict[str, StageRecord],
    run_dir: Path,
    book: StageBook,
    precision: str = "bf16",
) -> StageRecord:
    """Tokenize the dataset with the trained tokenizers into ``RUN/tokens``.

    ``precision``: the tokenizers' forward pass, ``"bf16"`` autocast or ``"32"``.
    """
    from fourm_lightning.datamodules.pretokenize import pretokenize_dataset

    settings = {
        "precision": precision,
        "pretokenize": plan,
        "data": data.identity,
        "tokenizers": {m: r.identity for m, r in tokenizers.items()},
    }
    done = book.valid("pretokenize", settings)
    if done:
        return done
    out = run_dir / "tokens"
    # Token shards resume per shard only for the same tokenizers; new tokenizers start over.
    shutil.rmtree(out, ignore_errors=True)
    with book.run("pretokenize", settings) as record:
        manifest = pretokenize_dataset(
            str(Path(data.outputs["data"]).parent),
            str(out),
            {m: r.outputs["checkpoint"] for m, r in tokenizers.items()},
            num_crops=plan.num_crops,
            batch_size=plan.batch_size,
            precision=precision,
        )
        record.outputs = {"tokens": str(out)}
        record.metrics = {s: manifest.num_samples(s) for s in ("train", "val")}
    return record


def _vocab_size(path: str) -> int:
    from fourm_lightning.tokenizers.loading import load_tokenizer

    return int(load_tokenizer(path).vocab_size)


def fourm_config(
    plan: PretrainPlan,
    tokens: str,
    tokenizers: dict[str, str],
    text_tokenizer: str,
    save_dir: Path,
    precision: str | None = None,
) -> dict[str, Any]:
    """The pretraining config: ``plan.config`` with the quickstart's tokenizers, data and budget.

    Args:
        plan: the pretraining plan.
        tokens: the token dataset folder.
        tokenizers: modality -> tokenizer checkpoint (``tok_<modality>`` domains use them).
        text_tokenizer: the WordPiece folder (every text domain uses it).
        save_dir: the TensorBoard logger's folder (the run goes to ``save_dir/fourm/version_0``).
        precision: trainer precision replacing the config's (None: keep it).

    Raises:
        ValueError: a token domain of the config whose tokenizer the quickstart did not train.
    """
    config = copy.deepcopy(_read_config(plan.config))
    for key, value in plan.overrides.items():
        set_dotted(config, key, value)
    if plan.mixture is not None:
        config["data"]["init_args"]["mixture"] = _read_config(plan.mixture)
    model = config["model"]["init_args"]
    text_vocab = _vocab_size(text_tokenizer)
    for domain in model["domains"]:
        args = domain["init_args"]
        if "tokenizer" not in args:
            continue  # pixel and continuous inputs
        if domain["class_path"].endswith("TextDomain"):
            args.update(tokenizer=text_tokenizer, vocab_size=text_vocab)
            continue
        modality = args["name"].removeprefix("tok_")
        if modality not in tokenizers:
            raise ValueError(
                f"{plan.config}: domain {args['name']!r} needs a {modality!r} tokenizer, and the "
                f"plan trains only {sorted(tokenizers)}"
            )
        args.update(tokenizer=tokenizers[modality], vocab_size=_vocab_size(tokenizers[modality]))
    model["warmup_steps"] = plan.warmup_steps
    trainer = config["trainer"]
    trainer.update(
        max_steps=plan.max_steps,
        max_time=plan.max_time,
        val_check_interval=plan.val_check_interval,
        limit_val_batches=plan.limit_val_batches,
    )
    if precision is not None:
        trainer["precision"] = precision
    if plan.steps_from_time:
        budget = {"class_path": "fourm_lightning.callbacks.StepsFromTime"}
        budget["init_args"] = {"max_steps": plan.max_steps}
        trainer["callbacks"] = [*trainer.get("callbacks", []), budget]
    _logger_to(config, save_dir, "fourm")
    config["data"]["init_args"]["data_dir"] = tokens
    return config


def pretrain_time_limit(plan: PretrainPlan, elapsed: float) -> str:
    """The 4M's ``max_time`` when the quickstart has run ``elapsed`` seconds.

    ``elapsed`` includes the recorded wall time of the stages reused from an earlier run.

    ``plan.max_time``, cut to what is left before ``plan.end_by`` on a machine slower than the
    plan's, but never below a tenth of ``plan.max_time`` (a model that trains at all).
    """
    if plan.end_by is None:
        return plan.max_time
    limit = seconds(plan.max_time)
    return duration(min(limit, max(seconds(plan.end_by) - elapsed, limit / 10)))


def pretrain_stage(
    plan: PretrainPlan,
    tokens: StageRecord,
    tokenizers: dict[str, StageRecord],
    text: StageRecord,
    run_dir: Path,
    book: StageBook,
    precision: str | None = None,
    elapsed: float = 0.0,
) -> StageRecord:
    """Pretrain 4M on the token dataset (``fourm-lightning fit``).

    Args:
        plan: the pretraining plan.
        tokens: the pre-tokenization stage.
        tokenizers: modality -> tokenizer stage.
        text: the WordPiece stage.
        run_dir: the run folder.
        book: the stage records.
        precision: trainer precision replacing the config's (None: keep it).
        elapsed: seconds the quickstart has run so far; with ``plan.end_by`` the time limit
            shrinks to what is left of it (never below a tenth of ``plan.max_time``). The
            limit is not part of the stage's fingerprint: a resumed run keeps a valid model.
    """
    config = fourm_config(
        plan,
        tokens.outputs["tokens"],
        {m: r.outputs["checkpoint"] for m, r in tokenizers.items()},
        str(Path(text.outputs["tokenizer"]).parent),
        run_dir,
        precision,
    )
    settings = {
        "pretrain": plan,
        "tokens": tokens.identity,
        "text": text.identity,
        # Resolved (an edited experiment config or mixture reruns the stage), with the plan's
        # time limit rather than the one left by this run's clock.
        "config": config,
    }
    done = book.valid("pretrain", settings)
    if done:
        return done
    max_time = pretrain_time_limit(plan, elapsed)
    config = {**config, "trainer": {**config["trainer"], "max_time": max_time}}
    path = _write_config(config, run_dir / "configs" / "fourm.yaml", plan.config)
    shutil.rmtree(run_dir / "fourm", ignore_errors=True)
    with book.run("pretrain", settings) as record:
        _record_fit(record, fit(path), path)
        record.metrics["max_time"] = max_time
    return record


def generation_stage(
    plan: GenerationPlan,
    model: StageRecord,
    tokens: StageRecord,
    run_dir: Path,
    book: StageBook,
) -> StageRecord:
    """RGB-to-all and caption-to-RGB on the first validation samples, plus overview figures."""
    from fourm_lightning.commands.generate import generate
    from fourm_lightning.generation.io import read_schedule
    from fourm_lightning.quickstart.figures import overview_figure

    settings = {
        "generation": plan,
        "model": model.identity,
        "tokens": tokens.identity,
        # What the stage measures: a record made before the image step was scored alone is
        # not valid for this code, so such a run generates again.
        "measures": ["caption2rgb", "caption2rgb_given_layout"],
    }
    done = book.valid("generation", settings)
    if done:
        return done
    out = run_dir / "generation"
    figures = run_dir / "figures"
    shown = list(plan.figure_modalities)
    with book.run("generation", settings) as record:
        rgb2all = generate(
            read_schedule(ROOT / plan.rgb2all),
            model.outputs["checkpoint"],
            out=str(out / "rgb2all"),
            val_samples=plan.num_samples,
            data_dir=tokens.outputs["tokens"],
        )
        chain = read_schedule(ROOT / plan.caption2rgb)
        caption_samples = max(plan.caption_samples, plan.num_samples)
        caption2rgb = generate(
            chain,
            model.outputs["checkpoint"],
            out=str(out / "caption2rgb"),
            val_samples=caption_samples,
            data_dir=tokens.outputs["tokens"],
            conditions=["caption"],
        )
        # The chain's last step alone, from the caption and the TRUE earlier outputs (semseg,
        # depth): tells whether a miss comes from the layout or from the image step.
        given = ["caption", *(step.target for step in chain[:-1])]
        last_step = generate(
            chain[-1:],
            model.outputs["checkpoint"],
            out=str(out / "caption2rgb_given_layout"),
            val_samples=caption_samples,
            data_dir=tokens.outputs["tokens"],
            conditions=given,
        )
        record.outputs = {
            "rgb2all": str(
                overview_figure(
                    rgb2all,
                    ["rgb", *(f"{m}{s}" for m in shown for s in ("", "_true"))],
                    figures / "rgb2all.png",
                )
            ),
            "caption2rgb": str(
                overview_figure(
                    caption2rgb,
                    ["tok_semseg", "tok_depth", "tok_rgb", "tok_rgb_true"],
                    figures / "caption2rgb.png",
                    caption="caption",
                    limit=plan.num_samples,
                )
            ),
        }
        record.metrics = {
            "caption_samples": caption_samples,
            "caption2rgb_agreement": caption_agreement_of(caption2rgb),
            "caption2rgb_given": given,
            "caption2rgb_given_layout_agreement": caption_agreement_of(
                last_step, layout_given=True
            ),
        }
    return record


def caption_agreement_of(folder: Path, layout_given: bool = False) -> dict[str, dict[str, float]]:
    """Named shapes and colours found in caption-to-RGB outputs, beside the two controls.

    Reads ``fourm-lightning generate``'s files of a caption -> semseg -> ... -> RGB run on
    validation samples (``<id>.caption.txt``, ``<id>.tok_semseg[_true].png``,
    ``<id>.tok_rgb[_true].png``); see ``transfer.caption_image.agreement_table``.
    With ``layout_given`` the run conditioned on the true semseg (``<id>.tok_semseg.png`` is
    the input) and generated RGB only: the named colours are then looked for on the true
    objects, and the shapes score the true semseg.
    """
    import json

    from fourm_lightning.quickstart.figures import load_generated
    from fourm_lightning.transfer.caption_image import agreement_table

    samples = json.loads((folder / "generate.json").read_text())["samples"]

    def pair(sample: str, suffix: str) -> tuple[Any, Any]:
        layout = "tok_semseg" if layout_given else f"tok_semseg{suffix}"
        semseg = load_generated(folder, sample, layout)[1].long()
        return semseg, load_generated(folder, sample, f"tok_rgb{suffix}")[1]

    captions = [(folder / f"{s}.caption.txt").read_text() for s in samples]
    generated = [pair(s, "") for s in samples]
    truth = [pair(s, "_true") for s in samples]
    return agreement_table(captions, generated, truth)


#: What ``evaluation_stage`` asks ``conditioning_gain``: input -> targets (those the model has).
CONDITIONING_PROBES = {
    "rgb": ("tok_depth", "tok_normal", "tok_semseg", "caption"),
    "caption": ("tok_depth", "tok_semseg", "tok_rgb"),
}


def evaluation_stage(
    plan: EvaluationPlan,
    model: StageRecord,
    data: StageRecord,
    tokens: StageRecord,
    run_dir: Path,
    book: StageBook,
) -> StageRecord:
    """Out-of-the-box RGB -> X scores beside the tokenizer ceiling and the input-free mean.

    Also the target losses with and without the RGB image and the caption
    (``CONDITIONING_PROBES``, ``transfer.conditioning``).
    """
    import json

    from fourm_lightning.commands.generate import load_model
    from fourm_lightning.transfer.conditioning import conditioning_gain
    from fourm_lightning.transfer.ootb import evaluate, evaluate_mean_baseline

    settings = {
        "evaluation": plan,
        "model": model.identity,
        "data": data.identity,
        "tokens": tokens.identity,
    }
    done = book.valid("evaluation", settings)
    if done:
        return done
    data_dir = str(Path(data.outputs["data"]).parent)
    num = min(plan.num_samples, int(data.metrics["val"]))
    with book.run("evaluation", settings) as record:
        net = load_model(model.outputs["checkpoint"])
        common = {"num_samples": num, "batch_size": plan.batch_size}
        scores = {
            "num_samples": num,
            "model": evaluate(net, data_dir, **common),
            "ceiling": evaluate(net, data_dir, ceiling=True, **common),
        }
        scores["mean"] = evaluate_mean_baseline(data_dir, list(scores["model"]), **common)
        if plan.conditioning_samples > 0:
            scores["conditioning"] = {
                source: conditioning_gain(
                    net,
                    tokens.outputs["tokens"],
                    [source],
                    [t for t in targets if t in net.domains],
                    num_samples=plan.conditioning_samples,
                    batch_size=plan.batch_size,
                )
                for source, targets in CONDITIONING_PROBES.items()
                if source in net.domains
            }
        path = run_dir / "evaluation.json"
        path.write_text(json.dumps(scores, indent=2, sort_keys=True) + "\n")
        record.outputs = {"evaluation": str(path)}
        record.metrics = scores
    return record


__all__ = [
    "dataset_stage",
    "evaluation_stage",
    "fourm_config",
    "generation_stage",
    "pretokenize_stage",
    "pretrain_stage",
    "pretrain_time_limit",
    "text_stage",
    "tokenizer_stage",
]
