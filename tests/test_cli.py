"""End to end through the real command line: data synth, data show and the console script."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fourm_lightning.cli import _bare_flags, _option_names, main
from fourm_lightning.datamodules.shards import iter_samples, read_manifest


def test_help_lists_the_commands(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for command in ("fit", "data", "quickstart"):
        assert command in out


def test_unknown_command_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as error:
        main(["trian"])
    assert error.value.code == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_bare_boolean_flags_become_true():
    assert _bare_flags(["--tiny"], ["--tiny"]) == ["--tiny", "true"]
    assert _bare_flags(["--tiny", "--out", "x"], ["--tiny"]) == ["--tiny", "true", "--out", "x"]
    assert _bare_flags(["--tiny", "false"], ["--tiny"]) == ["--tiny", "false"]


def test_dashed_option_names_are_accepted():
    assert _option_names(["--num-train", "5", "--data-dir=a-b", "-x", "my-file"]) == [
        "--num_train",
        "5",
        "--data_dir=a-b",
        "-x",
        "my-file",
    ]


def test_data_synth_and_show(tmp_path):
    out = tmp_path / "data"
    main(
        [
            "data",
            "synth",
            "--out",
            str(out),
            "--num-train",
            "5",
            "--num-val",
            "3",
            "--resolution",
            "32",
            "--seed",
            "7",
            "--workers",
            "2",
            "--samples_per_shard",
            "2",
        ]
    )
    manifest = read_manifest(out)
    assert (manifest.num_samples("train"), manifest.num_samples("val")) == (5, 3)
    assert manifest.shards("train") == [f"train/shard-{i:06d}.tar" for i in range(3)]
    assert manifest.resolution == 32 and manifest.seed == 7
    samples = list(iter_samples(out, "val", ["rgb", "caption"]))
    assert [s["__key__"] for s in samples] == ["00000000", "00000001", "00000002"]
    assert all(s["rgb"].shape == (32, 32, 3) for s in samples)

    figure = tmp_path / "fig" / "sample.png"
    main(["data", "show", "--data_dir", str(out), "--index", "1", "--out", str(figure)])
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    with pytest.raises(ValueError, match="unknown modalities"):
        main(["data", "show", "--data_dir", str(out), "--modalities", "[rgb, dpeth]"])
    # A second synth into the same folder is refused instead of mixing two datasets.
    with pytest.raises(FileExistsError, match="--overwrite"):
        main(["data", "synth", "--out", str(out), "--num_train", "1", "--num_val", "1"])


def test_console_script_exits_zero(tmp_path):
    script = Path(sys.executable).with_name("fourm-lightning")
    command = [str(script)] if script.exists() else [shutil.which("fourm-lightning") or ""]
    assert command[0], "the fourm-lightning console script is not installed"
    data = tmp_path / "d"
    done = subprocess.run(
        [
            *command,
            "data",
            "synth",
            "--out",
            str(data),
            "--num_train",
            "1",
            "--num_val",
            "1",
            "--resolution",
            "32",
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # Commands that return a value (data show returns the figure path) still exit with 0.
    done = subprocess.run(
        [*command, "data", "show", "--data_dir", str(data), "--out", str(tmp_path / "f.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
