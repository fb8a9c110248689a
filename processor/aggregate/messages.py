"""What stage 1 tells stage 2 on the partials topic: changed keys and source watermarks.

A key message says "the partials of this entity and window changed; re-finalise it once
the window is final"; it is keyed by entity so every key of an entity reaches one stage-2
worker. A watermark message says "this input partition has emitted every window ending
at or before `watermark_ms`" (or is idle); it goes to every partials partition, since
each stage-2 worker must know every source's progress.

The wire format is compact JSON, `{"t": "h"|"e"|"w", ...}`, kept stable across versions:
a rolling upgrade has old and new workers on the same topic.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from processor.errors import DecodeError

# Edge entity keys join client and server with a unit separator (never in a service name).
_EDGE_KEY_SEP = "\x1f"


class HealthKey(NamedTuple):
    """A service's window whose partials changed."""

    service: str
    window_start: int  # epoch ms


Dimensions = tuple[tuple[str, str], ...]  # an edge's dimension labels, sorted by name


def dimensions_key(dimensions: dict[str, str] | None) -> Dimensions:
    """The hashable, canonical form of an edge row's `dimensions` map."""
    return tuple(sorted((dimensions or {}).items()))


class EdgeKey(NamedTuple):
    """An edge's window whose partials changed."""

    client: str
    server: str
    connection_type: str
    window_start: int  # epoch ms
    # client_<attribute> / server_<attribute> -> value (processors.servicegraph.dimensions)
    dimensions: Dimensions = ()


def source_name(topic: str, partition: int) -> str:
    """How a watermark names its input partition."""
    return f"{topic}/{partition}"


class Watermark(NamedTuple):
    """Progress of one input partition (`source`, see `source_name`)."""

    source: str
    watermark_ms: int
    idle: bool


PartialsMessage = HealthKey | EdgeKey | Watermark


def message_key(msg: PartialsMessage) -> bytes | None:
    """The Kafka key: the entity for changed keys, none for watermarks (sent to every partition)."""
    if isinstance(msg, HealthKey):
        return msg.service.encode()
    if isinstance(msg, EdgeKey):
        return f"{msg.client}{_EDGE_KEY_SEP}{msg.server}".encode()
    return None


def encode(msg: PartialsMessage) -> bytes:
    if isinstance(msg, HealthKey):
        body: dict[str, object] = {"t": "h", "k": [msg.service, msg.window_start]}
    elif isinstance(msg, EdgeKey):
        body = {"t": "e", "k": [msg.client, msg.server, msg.connection_type, msg.window_start]}
        if msg.dimensions:  # absent without dimensions: the format older workers read
            body["d"] = [list(pair) for pair in msg.dimensions]
    else:
        body = {"t": "w", "s": msg.source, "wm": msg.watermark_ms, "idle": msg.idle}
    return json.dumps(body).encode()


def decode(value: bytes | None) -> PartialsMessage:
    """The message in a partials record; DecodeError when it is not one."""
    try:
        body = json.loads(value or b"")
        kind = body["t"]
        if kind == "w":
            return Watermark(str(body["s"]), int(body["wm"]), bool(body["idle"]))
        key = body["k"]
        if kind == "h":
            service, ws = key
            return HealthKey(str(service), int(ws))
        if kind == "e":
            client, server, conn, ws = key
            dims = tuple(sorted((str(n), str(v)) for n, v in body.get("d") or ()))
            return EdgeKey(str(client), str(server), str(conn), int(ws), dims)
    except (ValueError, KeyError, TypeError) as exc:
        raise DecodeError(f"not a partials message: {exc!r}") from None
    raise DecodeError(f"not a partials message: unknown type {kind!r}")
