"""Which faust events may be acknowledged: input records below stage 1's safe offset, and
partials key records whose final row is written. faust commits the acknowledged prefix."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Collection, Mapping
from typing import Any

Partition = tuple[str, int]


class InputHolds:
    """Stage 1's events per input partition, held (incref'd) until their offset is safe."""

    def __init__(self) -> None:
        self._held: dict[Partition, deque[Any]] = defaultdict(deque)

    def hold(self, event: Any) -> None:
        event.message.incref()
        self._held[(event.message.topic, event.message.partition)].append(event)

    def release(self, safe: Mapping[Partition, int]) -> None:
        """Ack every held event below its partition's safe offset."""
        for tp, offset in safe.items():
            q = self._held.get(tp)
            while q and q[0].message.offset < offset:
                q.popleft().ack()

    def keep_only(self, assigned: Collection[Partition]) -> None:
        """Forget revoked partitions: their new owner replays what was not acked."""
        for tp in [tp for tp in self._held if tp not in assigned]:
            del self._held[tp]


class KeyHolds:
    """Stage 2's key events, held until the key's final row is written."""

    def __init__(self) -> None:
        self._held: list[tuple[Any, Any]] = []

    def hold(self, event: Any, key: Any) -> None:
        event.message.incref()
        self._held.append((event, key))

    def release(self, pending: Callable[[Any], bool]) -> None:
        """Ack every held event whose key is no longer pending."""
        keep = []
        for event, key in self._held:
            if pending(key):
                keep.append((event, key))
            else:
                event.ack()
        self._held = keep
