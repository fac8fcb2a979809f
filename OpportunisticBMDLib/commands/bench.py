"""``obmd bench NAME``: benchmarks discovered in :mod:`OpportunisticBMDLib.benchmarks`."""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def register(subparsers: argparse._SubParsersAction) -> None:
    from .. import benchmarks

    parser = subparsers.add_parser("bench", help="benchmarks that print figures (each with --json PATH)")
    bench_sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK")
    for info in sorted(pkgutil.iter_modules(benchmarks.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name == "common":
            continue
        importlib.import_module(f"{benchmarks.__name__}.{info.name}").register(bench_sub)
    parser.set_defaults(func=lambda args: parser.print_help() or 1)
