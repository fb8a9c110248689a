"""Read YAML, expand env vars, validate, and turn every problem into one `key.path: message` line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from processor.config.env import expand_env
from processor.config.model import Config, Loc
from processor.errors import ConfigError

# Pydantic's wording names Python types; say it in YAML terms instead.
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "missing required key",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
    "too_short": "must not be empty",  # every min_length in the models is 1
    "string_too_short": "must not be empty",
}


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def format_loc(loc: Loc) -> str:
    """('receivers', 'kafka', 'brokers', 0) -> 'receivers.kafka.brokers[0]'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(error: Mapping[str, Any]) -> str:
    kind, msg = error["type"], str(error["msg"])
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix) :]  # our own validators' wording, already complete
    if kind == "config":
        return msg
    # Other pydantic messages ("Input should be 'drop' or 'correct'") plus the bad value.
    return f"{msg[:1].lower()}{msg[1:]} (got {_short(error['input'])})"


def format_errors(error: ValidationError) -> list[str]:
    lines = []
    for e in error.errors():
        where = format_loc(e["loc"])
        lines.append(f"{where}: {_message(e)}" if where else _message(e))
    return lines


def parse_config(
    text: str, source: str = "<string>", environ: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate config text; raises ConfigError with one line per problem."""
    try:
        tree = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from None
    if not isinstance(tree, dict):
        raise ConfigError(
            f"{source}: expected a mapping with receivers, processors, exporters, service"
        )

    tree, problems = expand_env(tree, os.environ if environ is None else environ)
    if problems:
        raise ConfigError("\n".join(f"{format_loc(loc)}: {message}" for loc, message in problems))
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError("\n".join(format_errors(exc))) from None


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file (see parse_config)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    return parse_config(text, source=str(path), environ=environ)
