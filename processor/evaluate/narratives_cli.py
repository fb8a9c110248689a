"""The `otel-insights evaluate narratives` command line and its report table."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from processor.evaluate.narratives import evaluate_narratives


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "-"


def print_report(r: dict[str, Any], console: Console) -> None:
    t = Table(title=f"suspected origin of each fault's first incident (seeds {r['seeds']}, "
                    f"{r['days']:g} day(s) each, {r['rate']:g} traces/s)", title_justify="left")
    for col in ("fault kind", "faults", "with an incident", "origin top 1", "origin top 3"):
        t.add_column(col, justify="left" if col == "fault kind" else "right")
    for kind, c in r["by_kind"].items():
        t.add_row(kind, str(c["faults"]), str(c["with_incident"]), _pct(c["top1"], c["with_incident"]),
                  _pct(c["top3"], c["with_incident"]))
    t.add_row("[bold]all[/]", str(r["faults"]), str(r["with_incident"]), _pct(r["top1"], r["with_incident"]),
              _pct(r["top3"], r["with_incident"]))
    console.print(t)
    console.print(f"incidents narrated: {r['incidents']} ({r['unmatched_incidents']} match no fault); "
                  f"grounded: {_pct(r['grounded'], r['incidents'])}; narrators: {', '.join(r['narrators'])}; "
                  f"cost: {r['cost_usd']:.4f} USD ({r['cost_usd'] / max(1, r['incidents']):.5f} per incident); "
                  f"{r['wall_s']:.0f} s")
    for m in r["misses"]:
        got = ", ".join(m["candidates"][:3]) or "no incident"
        console.print(f"  not top 1: {m['kind']} ({m['size']}) on {escape(m['target'])}: ranked {escape(got)}",
                      highlight=False)


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    parser = argparse.ArgumentParser(prog="otel-insights evaluate narratives",
                                     description="Do insights name the faulted entity, grounded?")
    parser.add_argument("--seed", type=int, default=1, help="first scenario seed")
    parser.add_argument("--rate", type=float, default=10.0, help="mean traces per second")
    parser.add_argument("--days", type=float, default=1.0, help="simulated days with faults, per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs (one process each, consecutive seeds)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    console = console or Console()
    with console.status("generating traffic, detecting and narrating…"):
        report = evaluate_narratives(seed=args.seed, rate=args.rate, days=args.days, jobs=args.jobs)
    print_report(report, console)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    return 0
