"""The golden cases through the same runner with ClickHouse (chdb) as the store: the real
engine's ReplacingMergeTree reads give what the in-memory store gives (tests/golden.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from processor.storage.backends import ChdbBackend
from processor.storage.schema import EDGE_FINAL_READ_COLUMNS, HEALTH_FINAL_READ_COLUMNS
from processor.storage.store import Store
from tests.golden import CASES, check, run_case

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbBackend]:
    # chdb opens one data directory per process: one for the module, closed at its end.
    b = ChdbBackend(str(tmp_path_factory.mktemp("golden-chdb")))
    yield b
    b.close()


@pytest.mark.parametrize("case", CASES)
def test_golden_case_on_chdb(case: str, backend: ChdbBackend) -> None:
    store = Store(backend, f"golden_{case}")
    store.migrate(0)
    check(case, run_case(case, store), update=False)
    health, edges = store.final_rows_between(0)
    # MemoryStore reads back exactly these columns too.
    assert all(set(r) == set(HEALTH_FINAL_READ_COLUMNS) for r in health)
    assert all(set(r) == set(EDGE_FINAL_READ_COLUMNS) for r in edges)
