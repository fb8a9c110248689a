"""Open the configured ClickHouse store (and migrate it when create_schema is set)."""

from __future__ import annotations

from processor.config.components import ClickHouseExporter, WindowsConfig
from processor.storage.backends import open_backend
from processor.storage.catalogue import Context
from processor.storage.store import Store


def open_store(ch: ClickHouseExporter, migrate: bool | None = None,
               windows: WindowsConfig | None = None) -> Store:
    """``windows``: the window size and health definition catalogue queries use (defaults otherwise)."""
    backend = open_backend(ch)
    w = windows or WindowsConfig()
    store = Store(backend, ch.database, Context(ch.database, w.size.ms, w.health))
    if ch.create_schema if migrate is None else migrate:
        store.migrate(ch.ttl.ns // 1_000_000_000, ch.cluster_name)
    return store
