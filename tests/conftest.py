"""Shared fixtures: one real local broker per session, fresh topic and group names per test."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

_names = itertools.count()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true",
                     help="rewrite tests/testdata/*/expected.yaml from this run (and fail it)")


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from processor.localstack import LocalBroker

    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(log_path=log) as b:
        yield b


@pytest.fixture
def new_topic(broker: object) -> Callable[..., str]:
    """Creates a fresh topic on the session broker and returns its name."""

    def make(prefix: str = "t", partitions: int = 3) -> str:
        name = f"{prefix}-{os.getpid()}-{next(_names)}"
        broker.create_topic(name, partitions)  # type: ignore[attr-defined]
        return name

    return make


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    return lambda prefix: f"{prefix}-{os.getpid()}-{next(_names)}"
