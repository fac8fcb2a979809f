"""The ``obmd`` command line. Each subcommand lives in :mod:`.commands` as a module with
``register(subparsers)``; modules are discovered, so adding a command touches no central list.
Heavy imports happen inside each command's run function so ``obmd --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, commands
from .errors import OBMDError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="obmd", description="Opportunistic bone mineral density from routine CT (OpportunisticBMD)."
    )
    parser.add_argument("--version", action="version", version=f"obmd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except OBMDError as exc:
        print(f"obmd: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("obmd: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
