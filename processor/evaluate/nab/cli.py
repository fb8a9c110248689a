"""Command line for the NAB harness: `otel-insights evaluate nab` (or `python -m processor.evaluate.nab`)."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from processor.errors import OtelInsightsError
from processor.evaluate.gaussian import WindowedGaussian
from processor.evaluate.nab.baselines import NullDetector
from processor.evaluate.nab.corpus import load_corpus
from processor.evaluate.nab.errors import NabDataError
from processor.evaluate.nab.harness import (
    DetectorFactory,
    check_detector_name,
    evaluate,
    print_tables,
)
from processor.evaluate.nab_detector import NabDetector

# Detectors known by name. NAB's own baseline and ours are what a run without --detector
# scores, side by side (the margin column is ours minus the baseline).
BUILTIN: dict[str, DetectorFactory] = {"null": NullDetector, "windowedGaussian": WindowedGaussian,
                                       "candidate": NabDetector}
DEFAULT_DETECTORS = ("windowedGaussian", "candidate")


def resolve_detector(spec: str) -> tuple[str, DetectorFactory]:
    """A built-in name (null, windowedGaussian, candidate), `pkg.module:Factory` or
    `name=pkg.module:Factory` -> (name, zero-argument factory)."""
    name, _, target = spec.rpartition("=")
    if target in BUILTIN:
        return check_detector_name(name or target), BUILTIN[target]
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise NabDataError(f"detector {spec!r}: expected one of {', '.join(BUILTIN)} "
                           "or '[name=]package.module:Factory'")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise NabDataError(f"detector {spec!r}: cannot import ({exc})") from exc
    if not callable(factory):
        raise NabDataError(f"detector {spec!r}: {attr} is not callable")
    return check_detector_name(name or attr.lower()), factory


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-insights evaluate nab",
                                     description="Score streaming detectors on a NAB-layout corpus.")
    parser.add_argument("--data", type=Path, required=True, help="directory laid out like NAB's data/")
    parser.add_argument("--windows", type=Path, default=None,
                        help="windows JSON (default: DATA/../combined_windows.json)")
    parser.add_argument("--out", type=Path, default=None,
                        help="also write DIR/<detector>/<category>/<detector>_<file>.csv")
    parser.add_argument("--detector", action="append", default=None,
                        help="null | windowedGaussian | candidate | [name=]package.module:Factory; repeat to "
                             "compare (first is the baseline); default: windowedGaussian and candidate")
    args = parser.parse_args(argv)
    console = console or Console()
    try:
        windows = args.windows or args.data.parent / "combined_windows.json"
        detectors = dict(resolve_detector(s) for s in (args.detector or DEFAULT_DETECTORS))
        corpus = load_corpus(args.data, windows)
        print_tables(evaluate(corpus, detectors, out_dir=args.out), console)
    except OtelInsightsError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    return 0
