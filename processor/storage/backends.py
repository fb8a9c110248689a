"""ClickHouse backends: one Backend protocol over embedded chdb and a clickhouse-connect server.

Both backends run the same SQL strings. Query parameters use ClickHouse's own
`{name:Type}` placeholders, and both backends turn Python values into parameter
text with clickhouse-connect's formatter, so a string value can never become SQL.
Every failure reaches the caller as one-line `StorageError` (endpoint + reason), marked
transient or not and read or write (see processor.storage.retry).
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import threading
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal, Protocol
from urllib.parse import unquote, urlsplit

from clickhouse_connect.driver.binding import format_bind_value

from processor.config.components import ClickHouseExporter
from processor.errors import ConfigError, StorageError
from processor.storage.retry import is_transient_code, is_transient_message

Row = Sequence[Any]

_MAX_REASON = 400


class Backend(Protocol):
    """What the storage layer needs from ClickHouse; implementations are thread-safe."""

    endpoint: str  # for messages; never contains a password

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]: ...

    def columns(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        """(name, ClickHouse type) of what ``sql`` returns; it runs (LIMIT it to 0 to only check)."""
        ...

    def insert(self, table: str, column_names: list[str], rows: Sequence[Row]) -> None: ...

    def close(self) -> None: ...


def one_line(text: str) -> str:
    """First non-empty line of an engine message, trimmed to a readable length."""
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= _MAX_REASON else line[:_MAX_REASON] + "..."
    return "no reason given"


# --------------------------------------------------------------------------- chdb


def _chdb_json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        # DateTime64 columns parse text in the column's time zone; ours are all UTC.
        if value.tzinfo is not None:
            value = value.astimezone(timezone.utc)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot insert a {type(value).__name__} value")


_TZ_RE = re.compile(r"'([^']+)'")


def _strip_wrappers(ch_type: str) -> str:
    for wrapper in ("LowCardinality(", "Nullable("):
        while ch_type.startswith(wrapper):
            ch_type = ch_type[len(wrapper) : -1]
    return ch_type


def _converter(ch_type: str) -> Callable[[Any], Any]:
    """Python value from a JSONCompact cell, matching what clickhouse-connect returns."""
    t = _strip_wrappers(ch_type)
    if t.startswith("Array("):
        inner = _converter(t[len("Array(") : -1])
        return lambda v: None if v is None else [inner(x) for x in v]
    if t.startswith("DateTime"):
        # session_timezone is UTC, so zone-less DateTime columns are UTC too.
        return _to_utc_datetime
    if t == "Date" or t == "Date32":
        return lambda v: None if v is None else date.fromisoformat(v)
    if t.startswith(("Int", "UInt")):
        return lambda v: None if v is None else int(v)
    if t.startswith(("Float", "BFloat")):
        return lambda v: None if v is None else float(v)
    return lambda v: v


def _to_utc_datetime(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)


def _chdb_holder(path: str) -> str | None:
    """Describe the other process holding `path`, or None when nobody holds it.

    ClickHouse takes an exclusive flock on <data dir>/status and writes its PID
    there; trying the same lock tells a busy directory from other start-up failures.
    """
    status = os.path.join(path, "status")
    try:
        fd = os.open(status, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with open(status, encoding="utf-8", errors="replace") as fh:
                match = re.search(r"PID:\s*(\d+)", fh.read())
            return f"pid {match.group(1)}" if match else "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class ChdbBackend:
    """Embedded ClickHouse (chdb) on a data directory; one process per directory.

    chdb also allows only one data directory per process at a time; opening a
    second directory while the first is open fails with a StorageError.
    """

    def __init__(self, path: str, async_insert: bool = False) -> None:
        from chdb.session import Session  # heavy import, only when chdb is used

        self.path = path
        self._insert_settings = _insert_settings_clause(async_insert)
        self.endpoint = f"chdb://{path}"
        self._lock = threading.Lock()
        if path != ":memory:":
            os.makedirs(path.split("?", 1)[0], exist_ok=True)
        try:
            self._session: Any = Session(path)
        except Exception as exc:  # chdb raises a bare RuntimeError here
            raise StorageError(self._open_error(exc)) from None
        # Deterministic, lossless JSON: UTC times, numeric 64-bit ints, nan/inf as strings.
        self.command(
            "SET session_timezone = 'UTC', output_format_json_quote_64bit_integers = 0, "
            "output_format_json_quote_denormals = 1"
        )

    def _open_error(self, exc: Exception) -> str:
        abs_path = os.path.abspath(self.path.split("?", 1)[0])
        holder = _chdb_holder(abs_path) if self.path != ":memory:" else None
        if holder is not None:
            return (
                f"ClickHouse {self.endpoint}: data directory {abs_path} is in use by {holder}; "
                "only one process may open a chdb directory: stop it, use another path, "
                "or point both at an http(s):// ClickHouse server"
            )
        reason = one_line(str(exc))
        other = re.search(r"already initialized with path '([^']*)'", reason)
        if other:
            return (
                f"ClickHouse {self.endpoint}: this process already has chdb directory "
                f"{other.group(1)} open and chdb allows one data directory per process"
            )
        return f"ClickHouse {self.endpoint}: cannot open embedded engine: {reason}"

    def _run(self, sql: str, fmt: str, params: dict[str, Any] | None,
             operation: Literal["read", "write"]) -> Any:
        text_params = {k: format_bind_value(v) for k, v in (params or {}).items()}
        with self._lock:
            if self._session is None:
                raise StorageError(f"ClickHouse {self.endpoint}: backend is closed", operation=operation)
            try:
                return self._session.query(sql, fmt, params=text_params)
            except Exception as exc:
                raise self._error("statement", exc, operation) from exc

    def _error(self, what: str, exc: Exception, operation: Literal["read", "write"]) -> StorageError:
        reason = one_line(str(exc))
        return StorageError(f"ClickHouse {self.endpoint} rejected {what}: {reason}",
                            transient=is_transient_message(str(exc)), operation=operation)

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        self._run(sql, "CSV", params, "write")

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        raw = self._run(sql, "JSONCompact", params, "read").bytes()
        if not raw:
            return []
        doc = json.loads(raw)
        names = [m["name"] for m in doc["meta"]]
        convs = [_converter(m["type"]) for m in doc["meta"]]
        return [{n: c(v) for n, c, v in zip(names, convs, row, strict=True)} for row in doc["data"]]

    def columns(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        raw = self._run(sql, "JSONCompact", params, "read").bytes()
        return [(m["name"], m["type"]) for m in json.loads(raw)["meta"]] if raw else []

    def insert(self, table: str, column_names: list[str], rows: Sequence[Row]) -> None:
        if not rows:
            return
        # Values travel as a JSON data stream, never inside the SQL text.
        data = "\n".join(
            json.dumps(list(r), default=_chdb_json_default, ensure_ascii=False) for r in rows
        )
        cols = ", ".join(_quote_ident(c) for c in column_names)
        sql = f"INSERT INTO {_quote_table(table)} ({cols}){self._insert_settings}"
        with self._lock:
            if self._session is None:
                raise StorageError(f"ClickHouse {self.endpoint}: backend is closed", operation="write")
            try:
                with self._session.send_insert(sql, "JSONCompactEachRow") as ins:
                    ins.append(data + "\n")
                    ins.finish()
            except Exception as exc:
                raise self._error(f"insert into {table}", exc, "write") from exc

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _quote_ident(name: str) -> str:
    if not _IDENT_RE.match(name):
        raise StorageError(f"invalid ClickHouse identifier {name!r}")
    return f"`{name}`"


def _quote_table(table: str) -> str:
    return ".".join(_quote_ident(part) for part in table.split(".", 1))


# --------------------------------------------------------------------------- http


def _http_reason(exc: Exception) -> str:
    """The useful part of a clickhouse-connect/urllib3 error (e.g. "Connection refused")."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    if match:
        return match.group(0).strip()
    for marker in ("timed out", "Name or service not known", "certificate verify failed"):
        if marker in text:
            return marker
    return one_line(text)


_DRIVER_PREFIX = re.compile(r"^Received ClickHouse exception, code: \d+, server response: ")
_DRIVER_URL = re.compile(r" \(for url [^)]*\)$")


def _server_reason(text: str) -> str:
    """The server's own message out of clickhouse-connect's wrapping (its prefix, its URL)."""
    return _DRIVER_URL.sub("", _DRIVER_PREFIX.sub("", text.strip()))


class HttpBackend:
    """ClickHouse server over HTTP(S) via clickhouse-connect.

    Every statement names its database explicitly, so the client connects to the
    user's default database and `CREATE DATABASE` works before ours exists.
    """

    def __init__(self, url: str, username: str, password: str, database: str, timeout: float,
                 async_insert: bool = False) -> None:
        import clickhouse_connect

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"clickhouse endpoint {url!r}: expected http(s)://host:port")
        secure = parts.scheme == "https"
        port = parts.port or (8443 if secure else 8123)
        self.endpoint = f"{parts.scheme}://{parts.hostname}:{port}"
        self.database = database
        self._insert_settings = insert_settings(async_insert)
        if parts.username:
            username = unquote(parts.username)
            password = unquote(parts.password or "")
        try:
            self._client: Any = clickhouse_connect.get_client(
                host=parts.hostname,
                port=port,
                username=username,
                password=password,
                secure=secure,
                connect_timeout=max(1, int(math.ceil(timeout))),
                send_receive_timeout=max(1, int(math.ceil(timeout * 3))),
                # Sessions serialise queries server-side ("session is locked"), which
                # breaks use from several threads; we keep no session state.
                autogenerate_session_id=False,
                query_retries=1,
            )
        except Exception as exc:
            raise StorageError(
                f"ClickHouse {self.endpoint} is unreachable: {_http_reason(exc)}"
            ) from None

    def _fail(self, what: str, exc: Exception, operation: Literal["read", "write"]) -> StorageError:
        from clickhouse_connect.driver.exceptions import OperationalError

        code = getattr(exc, "code", None)
        text = str(exc)
        if isinstance(exc, OperationalError) and code is None and "HTTP status" not in text:
            return StorageError(f"ClickHouse {self.endpoint} is unreachable: {_http_reason(exc)}",
                                transient=True, operation=operation)
        return StorageError(f"ClickHouse {self.endpoint} rejected {what}: {one_line(_server_reason(text))}",
                            transient=is_transient_code(code) or is_transient_message(text),
                            operation=operation)

    def command(self, sql: str, params: dict[str, Any] | None = None) -> None:
        try:
            self._client.command(sql, parameters=params or None)
        except Exception as exc:
            raise self._fail("statement", exc, "write") from exc

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        try:
            result = self._client.query(sql, parameters=params or None)
        except Exception as exc:
            raise self._fail("statement", exc, "read") from exc
        rows = list(result.named_results())
        # clickhouse-connect returns naive datetimes for UTC columns; make them aware
        # so both backends hand back identical values.
        for row in rows:
            for key, value in row.items():
                if isinstance(value, datetime):
                    row[key] = _as_utc(value)
        return rows

    def columns(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[str, str]]:
        try:
            result = self._client.query(sql, parameters=params or None)
        except Exception as exc:
            raise self._fail("statement", exc, "read") from exc
        return [(n, t.name) for n, t in zip(result.column_names, result.column_types, strict=True)]

    def insert(self, table: str, column_names: list[str], rows: Sequence[Row]) -> None:
        if not rows:
            return
        database, _, name = table.rpartition(".")
        data = [[_http_value(v) for v in r] for r in rows]
        try:
            self._client.insert(
                name, data, column_names=column_names, database=database or self.database,
                settings=self._insert_settings,
            )
        except Exception as exc:
            raise self._fail(f"insert into {table}", exc, "write") from exc

    def close(self) -> None:
        self._client.close()


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _http_value(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return value


# --------------------------------------------------------------------------- open


def insert_settings(async_insert: bool) -> dict[str, int]:
    """Settings of every insert (`exporters.clickhouse.async_insert`). Said either way, since
    servers differ in their default. An asynchronous insert still waits for its flush
    (wait_for_async_insert): offsets are committed only once rows are durable."""
    if async_insert:
        return {"async_insert": 1, "wait_for_async_insert": 1}
    return {"async_insert": 0}


def _insert_settings_clause(async_insert: bool) -> str:
    return " SETTINGS " + ", ".join(f"{k} = {v}" for k, v in insert_settings(async_insert).items())


def open_backend(ch: ClickHouseExporter) -> Backend:
    """The backend of `exporters.clickhouse`: chdb for `chdb://<path>`, else clickhouse-connect."""
    if ch.backend == "chdb":
        return ChdbBackend(ch.chdb_path, ch.async_insert)
    return HttpBackend(ch.endpoint, ch.username, ch.password, ch.database, ch.timeout.seconds,
                       ch.async_insert)


def epoch_ms_to_datetime(ms: int) -> datetime:
    """Exact UTC datetime for integer epoch milliseconds (no float rounding)."""
    return _EPOCH + timedelta(milliseconds=int(ms))


def datetime_to_epoch_ms(value: datetime) -> int:
    """Integer epoch milliseconds of an aware (or naive-UTC) datetime."""
    return (_as_utc(value) - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
