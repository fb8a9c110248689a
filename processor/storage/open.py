"""Open the configured ClickHouse store (and migrate it when create_schema is set)."""

from __future__ import annotations

from processor.config.components import ClickHouseExporter
from processor.storage.backends import open_backend
from processor.storage.store import Store


def open_store(ch: ClickHouseExporter, migrate: bool | None = None) -> Store:
    backend = open_backend(ch)
    store = Store(backend, ch.database)
    if ch.create_schema if migrate is None else migrate:
        store.migrate(ch.ttl.ns // 1_000_000_000, ch.cluster_name)
    return store
