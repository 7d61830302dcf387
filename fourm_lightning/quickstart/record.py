"""Stage records: what makes a quickstart stage's output valid, so a second run can skip it.

Each finished stage writes ``RUN/stages/<name>.json`` with a fingerprint of its settings (which
include the identities of the stages it read from: their fingerprints and when they were made),
the files it produced, its metrics and its wall time. A stage is skipped only when the record's
fingerprint equals the current one and every recorded output still exists; a changed budget, a
retrained tokenizer upstream or a deleted checkpoint makes it run again.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def fingerprint(settings: Any) -> str:
    """SHA-256 (16 hex digits) of JSON-serialisable settings, independent of key order."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class StageRecord:
    """The record of one stage run.

    Attributes:
        name: stage name (file ``stages/<name>.json``).
        fingerprint: of the settings the outputs were made with.
        outputs: label -> path of each produced file or folder (relative paths as given).
        metrics: figures the stage measured (validation metrics, counts).
        seconds: wall time of the run that made the outputs.
        made: when the outputs were made (UTC, ISO 8601).
        started: when that run started (UTC, ISO 8601; stages may run side by side).
    """

    name: str
    fingerprint: str
    outputs: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    made: str = ""
    started: str = ""
    skipped: bool = False

    @property
    def identity(self) -> str:
        """What later stages record of this one: its settings *and* when its outputs were made.

        A stage rerun with unchanged settings (say, after its checkpoint was deleted) makes new
        outputs; the stages that read them must run again, so the time is part of the identity.
        """
        return f"{self.fingerprint}@{self.made}"

    def to_json(self) -> dict[str, Any]:
        """The stored form (without ``skipped``, a property of this run only)."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint,
            "outputs": self.outputs,
            "metrics": self.metrics,
            "seconds": round(self.seconds, 1),
            "made": self.made,
            "started": self.started,
        }


class StageBook:
    """Reads and writes the stage records of one run folder."""

    def __init__(self, run_dir: Path) -> None:
        self.folder = run_dir / "stages"

    def path(self, name: str) -> Path:
        """The record file of stage ``name``."""
        return self.folder / f"{name}.json"

    def valid(self, name: str, settings: Any) -> StageRecord | None:
        """The stored record if it was made with ``settings`` and its outputs exist, else None."""
        path = self.path(name)
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None  # a record cut by a crash: the stage runs again
        if stored.get("fingerprint") != fingerprint(settings):
            return None
        if not all(Path(p).exists() for p in stored.get("outputs", {}).values()):
            return None
        return StageRecord(
            name=name,
            fingerprint=stored["fingerprint"],
            outputs=stored["outputs"],
            metrics=stored.get("metrics", {}),
            seconds=stored.get("seconds", 0.0),
            made=stored.get("made", ""),
            started=stored.get("started", ""),
            skipped=True,
        )

    def invalidate(self, name: str) -> None:
        """Forget a stage (its outputs are about to be rewritten)."""
        self.path(name).unlink(missing_ok=True)

    def save(self, record: StageRecord) -> None:
        """Write the record (after the outputs, so a crash never leaves a valid-looking one)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path(record.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(record.to_json(), indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path(record.name))

    @contextmanager
    def run(self, name: str, settings: Any) -> Iterator[StageRecord]:
        """Time a stage and save its record if the body finishes without an error.

        The body fills ``record.outputs`` and ``record.metrics``.
        """
        self.invalidate(name)
        record = StageRecord(name=name, fingerprint=fingerprint(settings), started=_now())
        start = time.perf_counter()
        yield record
        record.seconds = time.perf_counter() - start
        record.made = _now()
        self.save(record)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def wall_seconds(records: Iterable[StageRecord]) -> float:
    """Wall time of the runs that made these records, stages that overlapped counted once.

    Records with a start time contribute the union of their [started, made] intervals; records
    without one (written before start times were kept) their own ``seconds``.
    """
    spans: list[tuple[float, float]] = []
    total = 0.0
    for record in records:
        if record.started and record.made:
            spans.append(
                (
                    datetime.datetime.fromisoformat(record.started).timestamp(),
                    datetime.datetime.fromisoformat(record.made).timestamp(),
                )
            )
        else:
            total += record.seconds
    reach = float("-inf")
    for begin, end in sorted(spans):
        total += max(0.0, end - max(begin, reach))
        reach = max(reach, end)
    return total


def reused_seconds(records: Iterable[StageRecord]) -> float:
    """Wall time, in the runs that made them, of the records this run reused (skipped).

    A resumed quickstart adds it to its own clock, so ``pretrain.end_by`` bounds the whole
    pipeline's time and not only what is left of it after a stop.
    """
    return wall_seconds(record for record in records if record.skipped)


__all__ = ["StageBook", "StageRecord", "fingerprint", "reused_seconds", "wall_seconds"]
