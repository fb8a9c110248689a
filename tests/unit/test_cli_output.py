"""What the CLI prints from insights and query rows: readable, and names never style the console."""

from __future__ import annotations

from processor.insights import message
from tests.unit.test_notify import _insight


def test_tail_prints_an_insight_readably_and_cannot_be_styled_by_a_name() -> None:
    from rich.console import Console
    from rich.markup import escape

    from pipelines.tail import describe

    body = _insight(name="[bold red]boom[/] \x1b[31m")
    text = describe(message.encode(body))
    assert text.startswith("insight inc-9 v1 opened [critical] by template")
    assert "\n  observed: " in text and "\n  possible causes: " in text and "\n  check: " in text
    assert "\x1b" not in text
    console = Console(record=True, width=200)
    console.print(escape(text), highlight=False)
    assert "[bold red]boom[/]" in console.export_text()  # shown as written, not as style


def test_query_tables_show_names_as_text_not_markup() -> None:
    from rich.console import Console

    from pipelines.query import render_table

    rows = [{"window_start": "2026-01-01T00:00:00Z", "insight_id": "inc-1", "version": 2, "status": "open",
             "severity": "warning", "suspected_origin": "[link=http://x]pay[/link]", "narrator": "template",
             "grounded": True, "summary": "[red]s[/]"}]
    console = Console(record=True, width=300)
    console.print(render_table("insights", rows))
    out = console.export_text()
    assert "[link=http://x]pay[/link]" in out and "[red]s[/]" in out
