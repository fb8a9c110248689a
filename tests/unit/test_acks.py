"""What the faust agents acknowledge: input events below the safe offset, key events once final."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.acks import InputHolds, KeyHolds


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


def test_input_events_are_acked_below_the_safe_offset_only_and_in_order() -> None:
    holds = InputHolds()
    p0, p1 = _events("spans", 0, range(0, 5)), _events("spans", 1, range(10, 13))
    for ev in p0 + p1:
        holds.hold(ev)
    assert all(ev.message.refs == 1 for ev in p0 + p1)
    holds.release({("spans", 0): 3})
    assert [ev.acked for ev in p0] == [[0], [1], [2], [], []]
    assert not any(ev.acked for ev in p1)  # another partition's offset does not release these
    holds.release({("spans", 0): 2})  # a lower safe offset releases nothing twice
    holds.release({("spans", 0): 5, ("spans", 1): 11})
    assert [ev.acked for ev in p0] == [[0], [1], [2], [3], [4]]
    assert [ev.acked for ev in p1] == [[10], [], []]
    assert all(ev.message.refs == 0 for ev in p0)


def test_a_revoked_partition_is_never_acked_afterwards() -> None:
    holds = InputHolds()
    events = _events("spans", 2, range(0, 3))
    for ev in events:
        holds.hold(ev)
    holds.keep_only({("spans", 0)})
    holds.release({("spans", 2): 3})  # the partition came back: its old events are not ours
    assert not any(ev.acked for ev in events)


def test_key_events_are_acked_once_their_key_is_no_longer_pending() -> None:
    holds = KeyHolds()
    events = _events("partials", 0, range(0, 4))
    keys = ["a", "b", "a", "c"]
    for ev, key in zip(events, keys, strict=True):
        holds.hold(ev, key)
    pending = {"a", "b", "c"}
    holds.release(lambda k: k in pending)
    assert not any(ev.acked for ev in events)
    pending -= {"a"}
    holds.release(lambda k: k in pending)
    assert [ev.acked for ev in events] == [[0], [], [2], []]
    pending.clear()
    holds.release(lambda k: k in pending)
    holds.release(lambda k: k in pending)  # nothing is acked twice
    assert [ev.acked for ev in events] == [[0], [1], [2], [3]]
