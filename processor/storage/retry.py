"""Which ClickHouse failures are worth retrying, and the capped backoff between attempts.

Retrying a statement ClickHouse rejected (a bad value, a missing table, a type mismatch)
cannot succeed and only stalls everything queued behind it, so only failures that say
"not now" are transient: the server is unreachable or timed out, it is overloaded, or it
is busy merging (too many parts). The codes are ClickHouse's own (src/Common/ErrorCodes.cpp).
"""

from __future__ import annotations

import re

from processor.config.components import RetryOnFailure

TRANSIENT_CODES: frozenset[int] = frozenset({
    159,  # TIMEOUT_EXCEEDED
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    203,  # NO_FREE_CONNECTION
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    236,  # ABORTED
    241,  # MEMORY_LIMIT_EXCEEDED (the server's, under load)
    242,  # TABLE_IS_READ_ONLY (a replica that lost its Keeper session)
    252,  # TOO_MANY_PARTS
    279,  # ALL_CONNECTION_TRIES_FAILED
    285,  # TOO_FEW_LIVE_REPLICAS
    319,  # UNKNOWN_STATUS_OF_INSERT
    425,  # SYSTEM_ERROR (e.g. a full disk on the server)
    439,  # CANNOT_SCHEDULE_TASK
    473,  # DEADLOCK_AVOIDED
    999,  # KEEPER_EXCEPTION
})
# HTTP statuses a proxy or load balancer in front of ClickHouse answers while it is away.
TRANSIENT_HTTP_STATUSES: frozenset[int] = frozenset({429, 502, 503, 504})

_CODE_RE = re.compile(r"\bCode: (\d+)\b|\bcode: (\d+)\b")
_HTTP_STATUS_RE = re.compile(r"HTTP status (\d{3})")


def error_code(text: str) -> int | None:
    """The ClickHouse error code named in an engine or driver message, if any."""
    m = _CODE_RE.search(text)
    return int(m.group(1) or m.group(2)) if m else None


def is_transient_code(code: int | None) -> bool:
    return code is not None and code in TRANSIENT_CODES


def is_transient_message(text: str) -> bool:
    """Whether a failure message describes a failure worth retrying (see the module doc)."""
    if is_transient_code(error_code(text)):
        return True
    m = _HTTP_STATUS_RE.search(text)
    return m is not None and int(m.group(1)) in TRANSIENT_HTTP_STATUSES


class Backoff:
    """Capped exponential backoff under `exporters.clickhouse.retry_on_failure`.

    `next_delay(elapsed_s)` gives the wait before the next attempt, doubling from
    initial_interval up to max_interval, or None once waiting would take the whole retry
    past max_elapsed_time (counted from the first failure, attempts included). So the
    number of attempts is bounded: at most max_elapsed_time / initial_interval + 1.
    """

    def __init__(self, policy: RetryOnFailure) -> None:
        self.policy = policy
        self.attempts = 1
        self._delay = policy.initial_interval.seconds

    def next_delay(self, elapsed_s: float) -> float | None:
        p = self.policy
        if not p.enabled or elapsed_s + self._delay > p.max_elapsed_time.seconds:
            return None
        delay = self._delay
        self._delay = min(self._delay * 2, p.max_interval.seconds)
        self.attempts += 1
        return delay
