"""Stage records: a stage is skipped only for the same settings and outputs that still exist."""

import json

import pytest

from fourm_lightning.quickstart.record import (
    StageBook,
    StageRecord,
    fingerprint,
    reused_seconds,
    wall_seconds,
)


def test_fingerprint_ignores_key_order_and_sees_values():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_a_finished_stage_is_valid_until_settings_or_outputs_change(tmp_path):
    book = StageBook(tmp_path)
    output = tmp_path / "model.ckpt"
    with book.run("train", {"steps": 10}) as record:
        output.write_text("weights")
        record.outputs = {"checkpoint": str(output)}
        record.metrics = {"loss": 1.5}
    again = book.valid("train", {"steps": 10})
    assert again is not None and again.skipped
    assert again.metrics == {"loss": 1.5} and again.fingerprint == record.fingerprint
    assert book.valid("train", {"steps": 11}) is None
    output.unlink()
    assert book.valid("train", {"steps": 10}) is None


def test_a_failed_stage_leaves_no_record_and_forgets_the_old_one(tmp_path):
    book = StageBook(tmp_path)
    with book.run("train", {"steps": 1}):
        pass
    assert book.valid("train", {"steps": 1}) is not None
    with pytest.raises(RuntimeError), book.run("train", {"steps": 1}):
        raise RuntimeError("out of memory")
    assert book.valid("train", {"steps": 1}) is None
    assert not book.path("train").exists()


def test_a_truncated_record_is_not_valid(tmp_path):
    book = StageBook(tmp_path)
    book.folder.mkdir()
    book.path("train").write_text('{"fingerprint": ')
    assert book.valid("train", {}) is None
    book.path("train").write_text(json.dumps({"fingerprint": fingerprint({}), "outputs": {}}))
    assert book.valid("train", {}) is not None


def test_a_rerun_with_the_same_settings_has_a_new_identity(tmp_path):
    book = StageBook(tmp_path)
    with book.run("train", {"steps": 1}) as first:
        pass
    with book.run("train", {"steps": 1}) as second:
        pass
    assert first.fingerprint == second.fingerprint
    assert first.identity != second.identity  # stages that read it must run again
    assert book.valid("train", {"steps": 1}).identity == second.identity


def test_wall_seconds_counts_overlapping_stages_once():
    def stage(name, start, end):
        return StageRecord(
            name,
            "fp",
            seconds=end - start,
            started=f"2026-11-23T10:00:{start:02d}+00:00",
            made=f"2026-11-23T10:00:{end:02d}+00:00",
        )

    # Two tokenizers side by side (0-10 s and 4-12 s), then a stage after a gap (20-25 s) and
    # an old record without a start time (3 s).
    records = [stage("a", 0, 10), stage("b", 4, 12), stage("c", 20, 25)]
    records.append(StageRecord("old", "fp", seconds=3.0, made="2026-11-22T09:00:00+00:00"))
    assert wall_seconds(records) == pytest.approx(12 + 5 + 3)
    assert wall_seconds([]) == 0.0


def test_a_stage_run_records_its_start_and_end(tmp_path):
    book = StageBook(tmp_path)
    with book.run("train", {"steps": 1}) as record:
        pass
    stored = book.valid("train", {"steps": 1})
    assert stored is not None and stored.started == record.started and stored.started
    assert wall_seconds([stored]) == pytest.approx(record.seconds, abs=0.01)


def test_reused_seconds_counts_only_the_stages_this_run_skipped(tmp_path):
    book = StageBook(tmp_path)
    stamp = "2026-11-23T10:00:{:02d}+00:00"
    book.save(
        StageRecord(
            "data", fingerprint(None), seconds=30.0, started=stamp.format(0), made=stamp.format(30)
        )
    )
    reused = book.valid("data", None)
    assert reused is not None and reused.skipped
    ran = StageRecord("train", "fp", seconds=7.0, started=stamp.format(40), made=stamp.format(47))
    assert reused_seconds([reused, ran]) == pytest.approx(30.0)
    assert reused_seconds([ran]) == 0.0
