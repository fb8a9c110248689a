"""What stage 2 acknowledges: a prefix of each partials partition, never past a pending key."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.acks import KeyHolds


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    refs: int = 0

    def incref(self) -> None:
        self.refs += 1


@dataclass
class Event:
    message: Message
    acked: list[int] = field(default_factory=list)

    def ack(self) -> None:
        self.acked.append(self.message.offset)
        self.message.refs -= 1


def _events(topic: str, partition: int, offsets: range) -> list[Event]:
    return [Event(Message(topic, partition, o)) for o in offsets]


def test_events_are_acked_as_a_prefix_never_past_a_pending_key() -> None:
    holds = KeyHolds()
    events = _events("partials", 0, range(0, 6))
    keys = ["a", None, "b", "a", None, "c"]  # None: a watermark
    for ev, key in zip(events, keys, strict=True):
        holds.hold(ev, key)
    pending = {"a", "b", "c"}
    holds.release(lambda k: k in pending)
    assert not any(ev.acked for ev in events)  # offset 0's key is pending: nothing after it goes
    pending -= {"b"}
    holds.release(lambda k: k in pending)
    assert not any(ev.acked for ev in events)  # b is written, but a (before it) is not
    pending -= {"a"}
    holds.release(lambda k: k in pending)
    assert [ev.acked for ev in events] == [[0], [1], [2], [3], [4], []]
    pending.clear()
    holds.release(lambda k: k in pending)
    holds.release(lambda k: k in pending)  # nothing is acked twice
    assert [ev.acked for ev in events] == [[0], [1], [2], [3], [4], [5]]
    assert all(ev.message.refs == 0 for ev in events)


def test_partitions_are_released_independently_and_revoked_ones_never() -> None:
    holds = KeyHolds()
    p0, p1, p2 = (_events("partials", p, range(0, 2)) for p in range(3))
    for ev, key in zip(p0 + p1 + p2, ["x", None, None, None, None, None], strict=True):
        holds.hold(ev, key)
    holds.keep_only({("partials", 0), ("partials", 1)})
    holds.release(lambda k: k == "x")
    assert [ev.acked for ev in p0] == [[], []]
    assert [ev.acked for ev in p1] == [[0], [1]]
    assert not any(ev.acked for ev in p2)
