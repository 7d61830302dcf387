"""Tokenizers trained side by side: a failing worker process is reported with its log."""

import pytest

from fourm_lightning.quickstart.stages import _fit_in_worker


def test_a_failing_worker_names_its_config_and_shows_the_end_of_its_log(tmp_path):
    config = tmp_path / "tok_rgb.yaml"
    config.write_text("trainer:\n  max_step: 3\n")  # a typo LightningCLI refuses
    log = tmp_path / "tok_rgb.log"
    with pytest.raises(RuntimeError, match=r"tok_rgb\.yaml: training failed") as error:
        _fit_in_worker(config, log, threads=1)
    assert "max_step" in str(error.value)  # the CLI's own message, from the log
    assert log.is_file() and not log.with_suffix(".json").exists()
