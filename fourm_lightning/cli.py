"""The ``fourm-lightning`` command.

``fourm-lightning fit|validate|test|predict --config ...``
    LightningCLI over any LightningModule and DataModule named by ``class_path`` in the YAML.
``fourm-lightning data synth|show|pretokenize|fashion-mnist ...``
    Generate the built-in dataset; draw one sample's modalities; tokenize a dataset; convert
    Fashion-MNIST.
``fourm-lightning generate --config configs/generation/rgb2all.yaml --model PATH ...``
    Any-to-any generation from images, a caption or validation samples (figures + raw files).
``fourm-lightning benchmark --config configs/benchmark/<suite>.yaml``
    A transfer-benchmark suite: pretraining, out-of-the-box scores, fine-tuned transfer, tables.
``fourm-lightning quickstart [--tiny]``
    The main job on the built-in dataset (the README's first command).

Every sub-command takes ``--help``, ``--config FILE`` and ``--print_config``. Imports are lazy so
that ``--help`` is fast and the data stack is only loaded by the commands that use it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def lightning_cli(args: Sequence[str] | dict[str, Any] | None = None, run: bool = True) -> Any:
    """Run LightningCLI with subclass mode for both the model and the data.

    Args:
        args: command-line arguments (``["fit", "--config", ...]``) or a dict; None reads sys.argv.
        run: whether to run the sub-command (False returns the instantiated CLI, for tests).

    Returns:
        The ``LightningCLI`` object.
    """
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.cli import LightningCLI

    return LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        # The YAML decides the seed; a fixed default keeps runs reproducible when it does not.
        seed_everything_default=0,
    )


def _data_commands() -> dict[str, Callable[..., Any]]:
    from fourm_lightning.commands.data import fashion_mnist, pretokenize, show, synth

    # Sub-command names as users type them (jsonargparse would otherwise use function names).
    return {
        "synth": synth,
        "show": show,
        "pretokenize": pretokenize,
        "fashion-mnist": fashion_mnist,
    }


def _generate_command() -> Callable[..., Any]:
    from fourm_lightning.commands.generate import generate

    return generate


def _quickstart_command() -> Callable[..., Any]:
    from fourm_lightning.commands.quickstart import quickstart

    return quickstart


def benchmark_main(args: Sequence[str]) -> Any:
    """``fourm-lightning benchmark``: parse a suite YAML (``--config``) and run it."""
    from dataclasses import fields

    from jsonargparse import ActionConfigFile, ArgumentParser

    from fourm_lightning.transfer.benchmark import Suite, run_suite

    parser = ArgumentParser(
        prog="fourm-lightning benchmark",
        description="Run (or resume) a transfer-benchmark suite and write its results tables.",
    )
    parser.add_argument("--config", action=ActionConfigFile, help="the suite YAML")
    parser.add_argument("--quiet", type=bool, default=True, help="runs log only to their files")
    parser.add_class_arguments(Suite, as_group=False)
    cfg = parser.parse_args(list(args))
    init = parser.instantiate_classes(cfg)
    suite = Suite(**{f.name: init[f.name] for f in fields(Suite)})
    return run_suite(suite, quiet=cfg.quiet)


def _option_names(args: list[str]) -> list[str]:
    """Accept ``--num-train`` as well as ``--num_train`` (jsonargparse names use underscores).

    Only option names are rewritten (``--data-dir=x-y`` -> ``--data_dir=x-y``), never values.
    """
    out = []
    for arg in args:
        if arg.startswith("--") and len(arg) > 2:
            name, sep, value = arg[2:].partition("=")
            arg = "--" + name.replace("-", "_") + sep + value
        out.append(arg)
    return out


def _bare_flags(args: list[str], flags: Sequence[str]) -> list[str]:
    """Let boolean options be given bare (``--tiny``), as users type them.

    jsonargparse wants a value for a ``bool`` parameter (``--tiny true``); a bare flag followed by
    another option or nothing is read as ``true``.
    """
    out = []
    for i, arg in enumerate(args):
        out.append(arg)
        following = args[i + 1] if i + 1 < len(args) else None
        if arg in flags and (following is None or following.startswith("-")):
            out.append("true")
    return out


def _list_options(args: list[str], names: Sequence[str]) -> list[str]:
    """Let list options take several values, ``--image a.png b.png`` (as shells expand globs).

    jsonargparse wants a list as one JSON/YAML value; the values after the option up to the
    next option become that list.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in names:
            values = []
            while i + 1 < len(args) and not args[i + 1].startswith("--"):
                values.append(args[i + 1])
                i += 1
            out += [arg, json.dumps(values)]
        else:
            out.append(arg)
        i += 1
    return out


def main(args: Sequence[str] | None = None) -> Any:
    """Entry point of the ``fourm-lightning`` console script.

    Args:
        args: arguments without the program name; None reads ``sys.argv[1:]``.

    Returns:
        Whatever the sub-command returns (useful when called from tests or notebooks).
    """
    argv = list(sys.argv[1:] if args is None else args)
    usage = (
        "usage: fourm-lightning {fit,validate,test,predict} --config FILE ...\n"
        "       fourm-lightning data {synth,show,pretokenize,fashion-mnist} ...\n"
        "       fourm-lightning generate --config SCHEDULE.yaml --model PATH "
        "(--image FILE... | --caption TEXT | --val-samples N) --out DIR\n"
        "       fourm-lightning benchmark --config configs/benchmark/SUITE.yaml\n"
        "       fourm-lightning quickstart [--tiny] [--out DIR]\n"
        "Each sub-command takes --help."
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return None
    command, rest = argv[0], argv[1:]
    if command in ("data", "quickstart", "generate"):
        rest = _option_names(rest)
    if command in LIGHTNING_COMMANDS:
        return lightning_cli(argv)

    from jsonargparse import CLI

    if command == "data":
        return CLI(_data_commands(), args=rest, as_positional=False)
    if command == "generate":
        rest = _list_options(rest, ("--image",))
        return CLI(_generate_command(), args=rest, as_positional=False)
    if command == "benchmark":
        return benchmark_main(rest)
    if command == "quickstart":
        return CLI(_quickstart_command(), args=_bare_flags(rest, ("--tiny",)), as_positional=False)
    print(f"fourm-lightning: unknown command {command!r}\n{usage}", file=sys.stderr)
    raise SystemExit(2)


def run() -> None:
    """The console script: like ``main`` but discards the return value.

    A setuptools entry point passes its function's return value to ``sys.exit``, which would turn
    a returned path into an error exit; commands signal failure by raising instead.
    """
    main()


if __name__ == "__main__":
    run()
