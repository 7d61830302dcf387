"""The ``fourm-lightning`` command.

``fourm-lightning fit|validate|test|predict --config ...``
    LightningCLI over any LightningModule and DataModule named by ``class_path`` in the YAML.
``fourm-lightning data synth|show ...``
    Generate the built-in dataset; draw one sample's modalities.
``fourm-lightning quickstart [--tiny]``
    The main job on the built-in dataset (the README's first command).

Every sub-command takes ``--help``, ``--config FILE`` and ``--print_config``. Imports are lazy so
that ``--help`` is fast and the data stack is only loaded by the commands that use it.
"""

from __future__ import annotations

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


def _data_commands() -> list[Callable[..., Any]]:
    from fourm_lightning.commands.data import show, synth

    return [synth, show]


def _quickstart_command() -> Callable[..., Any]:
    from fourm_lightning.commands.quickstart import quickstart

    return quickstart


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
        "       fourm-lightning data {synth,show} ...\n"
        "       fourm-lightning quickstart [--tiny] [--out DIR]\n"
        "Each sub-command takes --help."
    )
    if not argv or argv[0] in ("-h", "--help"):
        print(usage)
        return None
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        return lightning_cli(argv)

    from jsonargparse import CLI

    if command == "data":
        return CLI(_data_commands(), args=rest, as_positional=False)
    if command == "quickstart":
        return CLI(_quickstart_command(), args=rest, as_positional=False)
    print(f"fourm-lightning: unknown command {command!r}\n{usage}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
