"""Which partials events stage 2 acknowledges: a prefix per partition, up to the first key
whose final row is not written yet. faust commits the acknowledged offsets."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

Partition = tuple[str, int]


class KeyHolds:
    """Stage 2's events, held in offset order per partition until nothing before them waits.

    Acking only a prefix (watermarks and written keys, never past a pending key) means no
    commit can pass a key that is not durable, whatever faust's own offset tracking does
    with gaps: it skips its gap check when the committed offset is 0 or unset.
    """

    def __init__(self) -> None:
        self._held: dict[Partition, deque[tuple[Any, Any]]] = defaultdict(deque)

    def hold(self, event: Any, key: Any = None) -> None:
        """Hold an event; ``key`` is the key it announces (None for a watermark)."""
        event.message.incref()
        m = event.message
        self._held[(m.topic, m.partition)].append((event, key))

    def release(self, pending: Callable[[Any], bool]) -> None:
        """Ack, per partition, every held event before the first one whose key is pending."""
        for q in self._held.values():
            while q and (q[0][1] is None or not pending(q[0][1])):
                q.popleft()[0].ack()

    def keep_only(self, assigned: set[Partition]) -> None:
        """Forget revoked partitions: their new owner replays what was not acked."""
        for tp in [tp for tp in self._held if tp not in assigned]:
            del self._held[tp]
