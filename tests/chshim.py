"""Test-support ClickHouse HTTP front over chdb: the subset of the HTTP interface clickhouse-connect uses.

It is not a server: one embedded chdb session executes every request, one at a time.
It lets HttpBackend (and so several worker processes) share one real ClickHouse engine
where no server exists; chdb itself allows one process per data directory.

In-process: ``handler_for(engine)`` gives a handler class for ``ThreadingHTTPServer``.
As a child process: ``python -m tests.chshim --data DIR --port 0`` prints
``chshim: port N`` and serves until SIGTERM; ``start_shim`` wraps that for tests (a
``tests.e2e.procs.ChildProcess`` like the other children the tests run).
"""

from __future__ import annotations

import argparse
import gzip
import re
import signal
import sys
import threading
import time
import urllib.request
import zlib
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from processor.storage.backends import ChdbBackend
from tests.e2e.procs import ChildProcess

REPO = Path(__file__).resolve().parents[1]
_LISTENING = re.compile(r"chshim: port (\d+)")
_FORMAT_RE = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.IGNORECASE)


class AdaptorHandler(BaseHTTPRequestHandler):
    """ClickHouse HTTP interface subset clickhouse-connect uses, executed by chdb."""

    protocol_version = "HTTP/1.1"
    engine: ChdbBackend  # set on the subclass made per adaptor (handler_for)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    break
                parts.append(chunk)
            data = b"".join(parts)
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = self.headers.get("Content-Encoding", "")
        if encoding == "lz4":
            import lz4.frame

            return bytes(lz4.frame.decompress(data))
        if encoding == "gzip":
            return gzip.decompress(data)
        if encoding == "deflate":
            return zlib.decompress(data)
        return data

    def _handle(self) -> None:
        url = urlsplit(self.path)
        args = dict(parse_qsl(url.query, keep_blank_values=True))
        body = self._body()
        if url.path == "/ping":
            return self._reply(200, b"Ok.\n")
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            # Large parameter sets travel as form fields (query + param_*).
            form = BytesParser(policy=email_policy).parsebytes(
                f"Content-Type: {content_type}\r\n\r\n".encode() + body
            )
            for part in form.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if isinstance(name, str) and isinstance(payload, bytes):
                    args[name] = payload.decode()
            body = b""
        sql = args.get("query")
        head, _, rest = body.partition(b"\n")
        if sql is None and head[:6].upper() == b"INSERT" and _FORMAT_RE.search(head.decode()):
            # Inserts of data put "INSERT ... FORMAT Native\n" in front of the data
            # (an INSERT ... SELECT has no FORMAT line and no data: it runs as a query).
            sql, body = head.decode(), rest
        elif sql is None:
            sql, body = body.decode(), b""
        # clickhouse-connect already sends parameters in ClickHouse's text form.
        params = {k[len("param_") :]: v for k, v in args.items() if k.startswith("param_")}
        match = _FORMAT_RE.search(sql)
        fmt = match.group(1) if match else "TabSeparated"
        core = sql[: match.start()] if match else sql
        engine = self.engine
        try:
            # One chdb session serves every connection thread: statements run one at a time.
            with engine._lock:
                if core.lstrip().upper().startswith("INSERT") and body:
                    with engine._session.send_insert(core, fmt) as ins:
                        ins.append(body)
                        ins.finish()
                    out = b""
                else:
                    out = engine._session.query(core, fmt, params=params).bytes()
        except Exception as exc:
            code = re.search(r"Code: (\d+)", str(exc))
            headers = {"X-ClickHouse-Exception-Code": code.group(1) if code else "1"}
            return self._reply(500, str(exc).encode(), headers)
        self._reply(200, out, {"X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC"})

    def _reply(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _handle


def handler_for(engine: ChdbBackend) -> type[AdaptorHandler]:
    """A handler class bound to one chdb engine."""
    return type("Handler", (AdaptorHandler,), {"engine": engine})


# --------------------------------------------------------------------------- child process


class Shim(ChildProcess):
    """A running ``python -m tests.chshim`` child over one chdb data directory."""

    def __init__(self, data: Path, log_path: Path, port: int = 0) -> None:
        super().__init__([sys.executable, "-m", "tests.chshim", "--data", str(data), "--port", str(port)],
                         log_path, cwd=REPO)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout_s: float = 30) -> None:
        super().stop(timeout_s)
        if self.proc is not None and self.proc.returncode == -signal.SIGKILL:
            raise AssertionError(f"chshim did not stop within {timeout_s}s:\n{self.log()}")


def sql(url: str, statement: str) -> None:
    """Run one statement through the shim as a client would (tests change the schema under a worker)."""
    from processor.storage.backends import HttpBackend

    backend = HttpBackend(url, "default", "", "otel_insights", 10)
    try:
        backend.command(statement)
    finally:
        backend.close()


def start_shim(data: Path, log_path: Path | None = None, timeout_s: float = 60, port: int = 0) -> Shim:
    """Start the shim over chdb directory ``data`` on ``port`` (0: a free one; a stopped
    shim's port brings ClickHouse "back" where clients expect it); returns once /ping answers."""
    shim = Shim(data, log_path or data.with_name(data.name + "-chshim.log"), port)
    shim.start()
    deadline = time.monotonic() + timeout_s  # chdb's import takes a few seconds

    def fail(why: str) -> AssertionError:
        ChildProcess.stop(shim, timeout_s=5)  # the shim is broken anyway: no stop assertion
        return AssertionError(f"chshim {why}:\n{shim.log()}")

    while time.monotonic() < deadline:
        try:
            shim.check_alive()
        except AssertionError:
            raise fail("exited") from None
        if not shim.port:
            m = _LISTENING.search(shim.log_path.read_text(errors="replace"))
            shim.port = int(m[1]) if m else 0
        if shim.port:
            try:
                with urllib.request.urlopen(f"{shim.url}/ping", timeout=5) as r:
                    if r.read() == b"Ok.\n":
                        return shim
            except OSError:
                pass
        time.sleep(0.1)
    raise fail("did not answer /ping" if shim.port else "printed no port")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chshim", description=__doc__)
    parser.add_argument("--data", required=True, help="chdb data directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    engine = ChdbBackend(args.data)
    server = ThreadingHTTPServer((args.host, args.port), handler_for(engine))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # serve_forever runs on a thread: shutdown() from the thread serving would deadlock.
    thread = threading.Thread(target=server.serve_forever, name="chshim", daemon=True)
    thread.start()
    print(f"chshim: port {server.server_address[1]}", flush=True)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    server.server_close()
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
