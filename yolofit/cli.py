"""The `yolofit` command line. Each layer registers its own subcommands.

Heavy imports (torch, ultralytics, kopf) happen inside the subcommand handlers, so
`yolofit --help` and `yolofit sandbox ...` start fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

# Modules that expose `register(subparsers)`; each adds its subcommands and sets
# `func` on its parsers to a callable taking the parsed namespace and returning an exit code.
_COMMAND_MODULES = (
    "yolofit.sandbox.cli",
    "yolofit.estimator.cli",
    "yolofit.operator.cli",
    "yolofit.operator.kueue_cli",
    "yolofit.trainer.cli",
)


class UsageError(Exception):
    """Bad input from the user: printed as one line naming the flag, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="yolofit",
        description="Fit Ultralytics YOLO training jobs to GPU memory before they run.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"yolofit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `yolofit plan ... | head -1`: the reader left, as with `cat`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error
        return 141  # 128 + SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
