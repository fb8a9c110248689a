"""`otel-insights evaluate faults` on the command line: options, the run, the report tables."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from processor.config.components import AnomalyConfig
from processor.evaluate.faults import DETECT_WINDOWS, evaluate_faults
from processor.evaluate.faults_scenario import SIZES


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, fmt: str = ".2f") -> str:
    return "-" if v is None else format(v, fmt)


def print_report(report: dict[str, Any], console: Console) -> None:
    table = Table(title=f"Injected faults: detected within {DETECT_WINDOWS} windows of onset")
    table.add_column("kind", no_wrap=True)
    table.add_column("size", no_wrap=True)
    for col in ("faults", "recall", "any time", "delay med/mean"):
        table.add_column(col, justify="right", no_wrap=True)

    def row(kind: str, size: str, c: dict[str, Any]) -> None:
        delay = f"{_num(c['median_delay_windows'], '.1f')} / {_num(c['mean_delay_windows'], '.1f')}"
        table.add_row(kind, size, str(c["faults"]), _pct(c["recall"]), _pct(c["recall_any"]), delay)

    for kind, size, magnitude in SIZES:
        row(kind, f"{size} {magnitude:g}", report["cells"][f"{kind}/{size}"])
    table.add_section()
    for kind, c in report["kinds"].items():
        row(kind, "all", c)
    table.add_section()
    row("[b]overall[/b]", "", report["overall"])
    console.print(table)
    summary = Table(title="Alarms", show_header=False)
    summary.add_column("figure")
    summary.add_column("value", justify="right")
    summary.add_row("precision (alarms explained by a fault)",
                    f"{_pct(report['precision'])}  ({report['explained_alarms']}/{report['alarms']})")
    summary.add_row(f"recall within {DETECT_WINDOWS} windows", _pct(report["recall"]))
    summary.add_row("F1", _num(report["f1"], ".3f"))
    summary.add_row("false alarms / entity-day, fault-free run",
                    f"{_num(report['false_alarms_per_entity_day_clean'], '.3f')}  "
                    f"({report['clean_alarms']} in {report['clean_entity_days']:.1f} entity-days)")
    summary.add_row("false alarms / entity-day, quiet time of fault run",
                    _num(report["false_alarms_per_entity_day_quiet"], ".3f"))
    summary.add_row("  of which on harmless blips (fault run)", str(report["blip_alarms"]))
    summary.add_row("observe() cost per entity-window", f"{_num(report['observe_us'], '.0f')} µs")
    summary.add_row("wall time", f"{report['wall_s']:.0f} s")
    console.print(summary)


def settings_from_args(args: argparse.Namespace) -> AnomalyConfig:
    """processors.anomaly with the command line's overrides; ValueError naming a bad one."""
    update: dict[str, Any] = {}
    if args.detectors:
        update["detectors"] = tuple(d.strip() for d in args.detectors.split(",") if d.strip())
    if args.threshold is not None:
        update["threshold"] = args.threshold
        update["severity_warning"] = min(AnomalyConfig().severity_warning, args.threshold)
    if args.min_requests is not None:
        update["min_requests"] = args.min_requests
    if args.min_baseline_requests is not None:
        update["min_baseline_requests"] = args.min_baseline_requests
    try:
        return AnomalyConfig.model_validate(update)
    except ValidationError as exc:
        raise ValueError("; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}"
                                   for e in exc.errors())) from None


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-insights evaluate faults",
                                     description="Detect injected faults in generated traffic.")
    parser.add_argument("--seed", type=int, default=1, help="scenario seed (defaults were tuned on 11, 12)")
    parser.add_argument("--rate", type=float, default=10.0, help="mean traces per second")
    parser.add_argument("--fault-days", type=float, default=1.0, help="simulated days with faults")
    parser.add_argument("--clean-days", type=float, default=1.0, help="simulated fault-free days (0 = none)")
    parser.add_argument("--jobs", type=int, default=2, help="processes (one per run)")
    parser.add_argument("--warmup-windows", type=int, default=120, help="unscored windows first")
    parser.add_argument("--slot-windows", type=int, default=24, help="windows per fault slot")
    parser.add_argument("--detectors", default=None, help="comma list of robust,ewma,seasonal,autoencoder")
    parser.add_argument("--threshold", type=float, default=None, help="score at or above which a window alarms")
    parser.add_argument("--min-requests", type=int, default=None, help="volume guard")
    parser.add_argument("--min-baseline-requests", type=int, default=None,
                        help="usual volume from which traffic drops are watched")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    console = console or Console()
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    with console.status("generating traffic and detecting…"):
        report = evaluate_faults(seed=args.seed, rate=args.rate, fault_days=args.fault_days,
                                 clean_days=args.clean_days, settings=settings, jobs=args.jobs,
                                 warmup_windows=args.warmup_windows, slot_windows=args.slot_windows)
    print_report(report, console)
    if args.json_path:
        import json

        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
