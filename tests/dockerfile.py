"""Test support: the repository's Dockerfile read into stages and instructions (no Docker here).

Enough of the Dockerfile grammar for our own file: comments, line continuations, JSON
(exec) form arguments, `ENV k=v ...`, `LABEL k="v" ...`, `ARG NAME=default`, `FROM image AS name`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Instruction:
    keyword: str  # upper case
    text: str  # the arguments as written, continuations joined

    @property
    def exec_form(self) -> list[str]:
        """JSON-form arguments (CMD, ENTRYPOINT, the command of HEALTHCHECK ... CMD)."""
        text = self.text
        if self.keyword == "HEALTHCHECK":
            text = text[text.index("CMD") + 3:]
        value = json.loads(text.strip())
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self.text
        return value

    def pairs(self) -> dict[str, str]:
        """`k=v` words of ENV, LABEL and ARG (quotes removed)."""
        out = {}
        for word in shlex.split(self.text):
            key, sep, value = word.partition("=")
            if sep:
                out[key] = value
        return out


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in self.all("ENV"):
            out.update(i.pairs())
        return out


def instructions(text: str) -> list[Instruction]:
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    out = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        out.append(Instruction(keyword.upper(), rest.strip()))
    return out


def stages(path: Path = REPO / "Dockerfile") -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, the stages in order)."""
    global_args: dict[str, str] = {}
    found: list[Stage] = []
    for ins in instructions(path.read_text()):
        if ins.keyword == "FROM":
            words = ins.text.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(found))
            found.append(Stage(words[0], name))
        elif not found:
            if ins.keyword == "ARG":
                global_args.update(ins.pairs())
        else:
            found[-1].instructions.append(ins)
    return global_args, found
