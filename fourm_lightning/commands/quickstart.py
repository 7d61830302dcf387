"""``fourm-lightning quickstart``: the whole 4M pipeline on the built-in dataset.

Stages, in order (``fourm_lightning/quickstart/stages.py``): render the dataset, train every
tokenizer briefly, train the WordPiece text tokenizer, pre-tokenize, pretrain a CPU-scale 4M,
generate RGB-to-all and caption-to-RGB on validation samples, score RGB -> X out of the box beside
the tokenizer ceiling, then write ``RUN/results.md``. A stage whose recorded output is valid for
the same settings is skipped, so a second run resumes where the first stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

from fourm_lightning.quickstart.plan import ROOT


def quickstart(
    out: str = "runs/quickstart",
    plan: str | None = None,
    tiny: bool = False,
    num_figures: int = 1,
) -> Path:
    """Run the main job and write ``OUT/results.md``.

    Args:
        out: run folder (data, tokenizers, tokens, the 4M run, figures and results go there).
        plan: a plan YAML; default ``configs/quickstart/full.yaml`` (``tiny.yaml`` with --tiny).
        tiny: the 3-minute smoke version (``configs/quickstart/tiny.yaml``).
        num_figures: validation samples drawn with all their modalities (``figures/sample_*``).

    Returns:
        The path of ``results.md``.
    """
    from fourm_lightning.commands.data import show
    from fourm_lightning.quickstart import report, stages
    from fourm_lightning.quickstart.plan import load_plan
    from fourm_lightning.quickstart.precision import resolve_precision
    from fourm_lightning.quickstart.record import StageBook, StageRecord, reused_seconds

    if plan is not None and tiny:
        raise ValueError("give --plan or --tiny, not both")
    plan_path = (
        Path(plan)
        if plan
        else ROOT / "configs" / "quickstart" / f"{'tiny' if tiny else 'full'}.yaml"
    )
    the_plan = load_plan(plan_path)
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    book = StageBook(run_dir)
    started = time.monotonic()
    choice = resolve_precision(the_plan.precision, run_dir)
    print(f"training precision: {choice.describe()}", flush=True)
    records: dict[str, StageRecord] = {}
    count = 6 + len(the_plan.tokenizers)
    step = iter(range(1, count + 1))

    def announce(name: str, record: StageRecord) -> StageRecord:
        state = "skipped: valid output exists" if record.skipped else f"{record.seconds:.0f} s"
        print(f"[{next(step)}/{count}] {name}: {state}", flush=True)
        records[record.name] = record
        return record

    def begin(text: str) -> None:
        print(f"\n==> {text}", flush=True)

    begin(f"dataset ({the_plan.dataset.num_train} + {the_plan.dataset.num_val} scenes)")
    data = announce("dataset", stages.dataset_stage(the_plan.dataset, run_dir, book))
    for index in range(num_figures):
        path = run_dir / "figures" / f"sample_{index}.png"
        if not path.is_file():
            show(str(run_dir / "data"), out=str(path), split="val", index=index)
    tokenizers: dict[str, StageRecord] = {}
    jobs = the_plan.tokenizer_jobs
    if jobs > 1:
        begin(
            f"{len(the_plan.tokenizers)} tokenizers, {jobs} at a time "
            f"(their progress: {run_dir / 'logs'}/tok_*.log)"
        )

        def finished(modality: str, record: StageRecord) -> None:
            announce(f"tokenizer {modality}", record)

        tokenizers = stages.tokenizer_stages(
            the_plan.tokenizers, data, run_dir, book, jobs, finished, choice.precision
        )
    else:
        for tok in the_plan.tokenizers:
            begin(f"tokenizer {tok.modality} ({tok.max_steps} steps from {tok.config})")
            record = stages.tokenizer_stage(tok, data, run_dir, book, choice.precision)
            tokenizers[tok.modality] = announce(f"tokenizer {tok.modality}", record)
    begin("WordPiece text tokenizer")
    text = announce("text tokenizer", stages.text_stage(the_plan.text, data, run_dir, book))
    begin("pre-tokenize")
    tokens = announce(
        "pre-tokenize",
        stages.pretokenize_stage(
            the_plan.pretokenize, data, tokenizers, run_dir, book, choice.autocast
        ),
    )
    pretrain = the_plan.pretrain
    budget = f"{pretrain.max_steps} steps"
    if pretrain.steps_from_time:
        budget = f"as many steps as fit in {pretrain.max_time}, at most {pretrain.max_steps}"
    if pretrain.end_by is not None:
        budget += f"; ending by {pretrain.end_by} into the run"
    begin(f"4M pretraining ({budget}, from {pretrain.config})")
    model = announce(
        "4M pretraining",
        stages.pretrain_stage(
            the_plan.pretrain,
            tokens,
            tokenizers,
            text,
            run_dir,
            book,
            choice.precision,
            # Stages reused from an earlier run count at the wall time they took then: a
            # resumed run gets the 4M time a run in one go would have had, not all of it.
            elapsed=reused_seconds(records.values()) + time.monotonic() - started,
        ),
    )
    begin("generation: RGB to all, caption to RGB")
    announce(
        "generation",
        stages.generation_stage(the_plan.generation, model, tokens, run_dir, book),
    )
    begin("out-of-the-box evaluation")
    announce(
        "evaluation",
        stages.evaluation_stage(the_plan.evaluation, model, data, tokens, run_dir, book),
    )
    shown = plan_path.resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    results = report.write_results(
        run_dir,
        shown,
        records,
        list(tokenizers.values()),
        f"Training precision: {choice.describe()}.",
    )
    print("\n" + report.summary(run_dir, records), flush=True)
    return results


__all__ = ["quickstart"]
