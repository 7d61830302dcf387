"""Run one ``fourm-lightning fit`` of a benchmark suite as a subprocess, once.

A run is the command a user could type (``fourm-lightning fit --config A.yaml --config B.yaml
...``) plus where its outputs go. ``execute`` skips a run whose ``done.json`` exists and whose
checkpoint is still there, so a suite interrupted half-way resumes where it stopped.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DONE_FILE = "done.json"


@dataclass(frozen=True)
class FitRun:
    """One ``fit`` of a suite.

    Args:
        name: unique run name (folder under the suite's work directory).
        configs: YAML files given as ``--config`` in order (later ones override earlier ones).
        args: further command-line overrides, e.g. ``["--data.init_args.mixture", "m.yaml"]``.
    """

    name: str
    configs: list[str]
    args: list[str] = field(default_factory=list)

    def command(self, work_dir: Path, extra: list[str] | None = None) -> list[str]:
        """The ``fourm-lightning fit`` arguments of this run, logging under ``work_dir/name``."""
        argv = ["fit"]
        for config in self.configs:
            argv += ["--config", config]
        argv += list(self.args)
        # One TensorBoard folder per run, version 0: the checkpoint path is known in advance.
        argv += [
            "--trainer.logger.class_path",
            "lightning.pytorch.loggers.TensorBoardLogger",
            "--trainer.logger.init_args.save_dir",
            str(work_dir),
            "--trainer.logger.init_args.name",
            self.name,
            "--trainer.logger.init_args.version",
            "0",
        ]
        return argv + list(extra or [])

    def folder(self, work_dir: Path) -> Path:
        """Where the run logs (``version_0`` of its TensorBoard folder)."""
        return work_dir / self.name / "version_0"

    def checkpoint(self, work_dir: Path) -> Path:
        """The run's last checkpoint."""
        return self.folder(work_dir) / "checkpoints" / "last.ckpt"


def read_done(folder: Path) -> dict[str, Any] | None:
    """The ``done.json`` record of a finished run folder, or None."""
    path = folder / DONE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def execute(
    run: FitRun, work_dir: Path, extra: list[str] | None = None, quiet: bool = False
) -> dict[str, Any]:
    """Run ``fourm-lightning fit`` for ``run`` unless it already finished.

    Args:
        run: the run.
        work_dir: the suite's work directory.
        extra: arguments appended for this execution only (e.g. ``--trainer.fast_dev_run``).
        quiet: send the run's output only to its log file (else also to this terminal).

    Returns:
        The ``done.json`` record: command, seconds, checkpoint.

    Raises:
        RuntimeError: the fit failed (the message names the log file).
    """
    folder = run.folder(work_dir)
    done = read_done(folder)
    if done is not None and Path(done["checkpoint"]).is_file():
        return done
    folder.mkdir(parents=True, exist_ok=True)
    argv = run.command(work_dir, extra)
    log = folder / "fit.log"
    started = time.perf_counter()
    with log.open("w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "fourm_lightning.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            stream.write(line)
            if not quiet:
                sys.stdout.write(line)
        code = process.wait()
    if code != 0:
        raise RuntimeError(f"run {run.name!r} failed (exit {code}); see {log}")
    record = {
        "name": run.name,
        "command": "fourm-lightning " + shlex.join(argv),
        "seconds": round(time.perf_counter() - started, 1),
        "checkpoint": str(run.checkpoint(work_dir)),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (folder / DONE_FILE).write_text(json.dumps(record, indent=2))
    return record
