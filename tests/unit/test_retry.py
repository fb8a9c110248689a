"""ClickHouse failures: which are retried, the capped backoff, and when the worker gives up.

The worker-level behaviour against a real ClickHouse engine (a rejected insert stops the
worker, an outage is waited out exactly) is in tests/integration/test_clickhouse_failures.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import generate_latest

from pipelines.store_io import StoreIO
from processor.config.components import RetryOnFailure
from processor.errors import StorageError
from processor.storage.retry import Backoff, error_code, is_transient_message
from processor.telemetry import Metrics


@pytest.mark.parametrize("text, transient", [
    ("Code: 252. DB::Exception: Too many parts (300) in all partitions in total. (TOO_MANY_PARTS)", True),
    ("Received ClickHouse exception, code: 159, server response: Timeout exceeded", True),
    ("Code: 242. DB::Exception: Table is in readonly mode (TABLE_IS_READ_ONLY)", True),
    ("HTTP driver received HTTP status 503, server response: upstream unavailable", True),
    ("Code: 60. DB::Exception: Unknown table expression identifier 'x'. (UNKNOWN_TABLE)", False),
    ("Code: 53. DB::Exception: Type mismatch in IN or VALUES section. (TYPE_MISMATCH)", False),
    ("Code: 62. DB::Exception: Syntax error: failed at position 1", False),
    ("HTTP driver received HTTP status 400", False),
    ("something went wrong", False),
])
def test_only_failures_that_say_not_now_are_transient(text: str, transient: bool) -> None:
    assert is_transient_message(text) is transient


def test_error_code_is_read_from_engine_and_driver_messages() -> None:
    assert error_code("Code: 252. DB::Exception: Too many parts") == 252
    assert error_code("Received ClickHouse exception, code: 241, server response") == 241
    assert error_code("no code here") is None


def test_backoff_doubles_up_to_its_cap_and_stops_within_max_elapsed_time() -> None:
    policy = RetryOnFailure(initial_interval="1s", max_interval="4s", max_elapsed_time="20s")
    b = Backoff(policy)
    elapsed, delays = 0.0, []
    while (d := b.next_delay(elapsed)) is not None:
        delays.append(d)
        elapsed += d + 0.1  # each attempt takes a little time too
    assert delays == [1, 2, 4, 4, 4, 4]  # the next 4 s wait would end past 20 s
    assert b.attempts == 7  # the first try and six retries


def test_backoff_disabled_never_retries() -> None:
    assert Backoff(RetryOnFailure(enabled=False)).next_delay(0.0) is None


class Flaky:
    """A store call failing ``fails`` times with ``error`` before it succeeds."""

    def __init__(self, fails: int, error: StorageError) -> None:
        self.fails = fails
        self.error = error
        self.calls = 0

    def __call__(self, value: Any) -> Any:
        self.calls += 1
        if self.calls <= self.fails:
            raise self.error
        return value


def _io(retry: RetryOnFailure) -> tuple[StoreIO, list[StorageError]]:
    io = StoreIO(None, Metrics(), 60_000, retry=retry)  # type: ignore[arg-type]
    fatal: list[StorageError] = []
    io.on_fatal = fatal.append
    return io, fatal


def _errors(io: StoreIO) -> dict[tuple[str, str], float]:
    text = generate_latest(io.metrics.registry).decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("otel_insights_clickhouse_errors_total{"):
            labels = dict(p.split("=") for p in line[line.index("{") + 1:line.index("}")].split(","))
            out[(labels["operation"].strip('"'), labels["outcome"].strip('"'))] = float(line.rsplit(" ", 1)[1])
    return out


FAST = RetryOnFailure(initial_interval="10ms", max_interval="40ms", max_elapsed_time="2s")


def test_transient_failures_are_retried_until_the_call_lands() -> None:
    io, fatal = _io(FAST)
    call = Flaky(3, StorageError("ClickHouse x is unreachable: refused", transient=True, operation="write"))
    assert asyncio.run(io.call(call, 42)) == 42
    assert call.calls == 4 and fatal == []
    assert _errors(io) == {("write", "retried"): 3}


def test_a_rejected_statement_is_not_retried_and_stops_the_worker_once() -> None:
    io, fatal = _io(FAST)
    call = Flaky(10, StorageError("ClickHouse x rejected insert into t: Code: 60 (UNKNOWN_TABLE)",
                                  operation="write"))
    with pytest.raises(StorageError) as info:
        asyncio.run(io.call(call, 1))
    assert call.calls == 1  # never retried
    assert len(fatal) == 1 and fatal[0] is info.value
    line = str(info.value)
    assert "\n" not in line and "not retried" in line and "UNKNOWN_TABLE" in line
    # Once stopping, nothing more reaches ClickHouse, and on_fatal is not told again.
    other = Flaky(0, StorageError("unused"))
    with pytest.raises(StorageError, match="the worker is stopping"):
        asyncio.run(io.call(other, 1))
    assert other.calls == 0 and len(fatal) == 1
    assert _errors(io) == {("write", "failed"): 1}


def test_retries_are_bounded_then_the_worker_stops() -> None:
    io, fatal = _io(RetryOnFailure(initial_interval="10ms", max_interval="20ms", max_elapsed_time="100ms"))
    call = Flaky(10**6, StorageError("ClickHouse x is unreachable: refused", transient=True))
    with pytest.raises(StorageError) as info:
        asyncio.run(io.call(call, 1))
    assert 3 <= call.calls <= 11  # 100 ms of 10-20 ms waits, then give up
    assert fatal == [info.value] and "still failing after" in str(info.value)
    errors = _errors(io)
    assert errors[("read", "failed")] == 1 and errors[("read", "retried")] == call.calls - 1


def test_a_client_query_fails_alone_and_never_stops_the_worker() -> None:
    io, fatal = _io(FAST)
    call = Flaky(1, StorageError("ClickHouse x rejected statement: Code: 62 (SYNTAX_ERROR)"))
    with pytest.raises(StorageError):
        asyncio.run(io.query(call, 1))
    assert fatal == [] and io.fatal is None
    assert asyncio.run(io.call(call, 7)) == 7  # the pipeline carries on
    assert _errors(io) == {("read", "failed"): 1}
