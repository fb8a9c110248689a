"""The UI's static files: vendored ECharts as its manifest pins it, and our code free of the ways
untrusted text could become markup or script (the CSP would refuse most, but not all)."""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from pathlib import Path

STATIC = Path(str(resources.files("processor.ui").joinpath("static")))
OURS = sorted(STATIC.glob("*.js"))


def test_vendored_echarts_is_the_pinned_release_with_its_licence() -> None:
    vendor = STATIC / "vendor" / "echarts"
    manifest = json.loads((vendor / "MANIFEST.json").read_text())
    assert manifest["package"] == "echarts" and re.fullmatch(r"\d+\.\d+\.\d+", manifest["version"])
    assert manifest["integrity"].startswith("sha512-") and manifest["version"] in manifest["tarball"]
    for name, f in manifest["files"].items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == f["sha256"], name
    assert "Apache License" in (vendor / "LICENSE").read_text()


def test_our_code_never_turns_text_into_markup_or_script() -> None:
    assert OURS, "no UI modules found"
    banned = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
                        r"renderMode:\s*\"html\"|setAttribute\(\"on")
    for path in OURS:
        found = banned.findall(path.read_text())
        assert not found, (path.name, found)
    # Every tooltip renders as canvas rich text, not HTML.
    charts = (STATIC / "charts.js").read_text() + (STATIC / "graph.js").read_text()
    tooltips = [ln for ln in charts.splitlines() if "tooltip: {" in ln]
    assert tooltips and all('renderMode: "richText"' in ln or "...TOOLTIP" in ln for ln in tooltips), tooltips
    assert 'const TOOLTIP = { trigger: "axis", renderMode: "richText"' in charts


def test_the_page_has_no_inline_script_or_style() -> None:
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert "style=" not in html and "<style" not in html and "javascript:" not in html
    assert 'src="/static/app.js"' in html and "https://" not in html and "http://" not in html
