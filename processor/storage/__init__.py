"""ClickHouse storage: versioned schema, chdb/HTTP backends, the Store facade and named queries."""

from processor.storage.backends import Backend, ChdbBackend, HttpBackend, open_backend
from processor.storage.catalogue_sql import CATALOGUE
from processor.storage.queries import rows_to_jsonable
from processor.storage.schema import MIGRATIONS, migrate
from processor.storage.store import Store

__all__ = [
    "Backend",
    "ChdbBackend",
    "HttpBackend",
    "MIGRATIONS",
    "CATALOGUE",
    "Store",
    "migrate",
    "open_backend",
    "rows_to_jsonable",
]
