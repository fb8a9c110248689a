"""Collector-style `${env:VAR}` / `${env:VAR:-default}` expansion over a parsed YAML tree."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# One pass over each scalar: `$${` is an escape for a literal `${`; `${env:NAME}` and
# `${env:NAME:-default}` are substitutions; any other `${...}` is a mistake we report
# rather than pass through (it would otherwise surface later as a confusing value).
_TOKEN_RE = re.compile(
    r"\$\$\{"
    r"|\$\{env:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}"
    r"|(?P<bad>\$\{[^}]*\}?)"
)

Path = tuple[str | int, ...]


def expand_env(tree: Any, environ: Mapping[str, str]) -> tuple[Any, list[tuple[Path, str]]]:
    """Return (expanded tree, problems). Only string values are expanded, never keys.

    Expanding after YAML parsing means a variable's value is always one scalar: it cannot
    inject keys or list items. Problems are (key path, message) pairs.
    """
    problems: list[tuple[Path, str]] = []

    def scalar(text: str, path: Path) -> str:
        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            if match.group("bad") is not None:
                problems.append(
                    (
                        path,
                        f"unsupported substitution {match.group('bad')!r} "
                        "(use ${env:VAR} or ${env:VAR:-default}; write $${ for a literal ${)",
                    )
                )
                return ""
            name, default = match.group("name"), match.group("default")
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            problems.append(
                (path, f"environment variable {name} is not set (or use ${{env:{name}:-default}})")
            )
            return ""

        return _TOKEN_RE.sub(replace, text)

    def walk(node: Any, path: Path) -> Any:
        if isinstance(node, str):
            return scalar(node, path)
        if isinstance(node, dict):
            return {key: walk(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value, (*path, i)) for i, value in enumerate(node)]
        return node

    return walk(tree, ()), problems
