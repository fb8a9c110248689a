"""Child processes the e2e tests run next to the pipeline: the otel-insights gateway and rotel."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import yaml

from processor.localstack import free_port

_LISTENING = re.compile(r"gateway: grpc=(\d+) http=(\d+) .*health and metrics port (\d+)")


class ChildProcess:
    """A child process logging to a file, stopped with SIGTERM (then SIGKILL) on exit."""

    def __init__(self, argv: list[str], log_path: Path, cwd: Path | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.cwd,
                                         env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.argv[0]} exited {self.proc.returncode}:\n{self.log()}")

    def stop(self, timeout_s: float = 15) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class GatewayProcess(ChildProcess):
    """`otel-insights gateway --config` on free ports, writing to the pipeline's input topic."""

    def __init__(self, pipeline_config: Path, tmp: Path) -> None:
        cfg = yaml.safe_load(pipeline_config.read_text())
        # Port 0: the gateway binds free ports and prints them, so no port race.
        cfg["receivers"]["otlp"] = {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"},
                                                  "http": {"endpoint": "127.0.0.1:0"}}}
        # Its /metrics, /healthz and /readyz too (the worker has the configured port).
        cfg["exporters"].setdefault("prometheus", {})["endpoint"] = "127.0.0.1:0"
        path = tmp / f"gateway-{pipeline_config.name}"
        path.write_text(yaml.safe_dump(cfg))
        super().__init__([sys.executable, "-m", "pipelines.cli", "gateway", "--config", str(path)],
                         tmp / f"gateway-{pipeline_config.stem}.log")
        self.grpc_port = 0
        self.http_port = 0
        self.health_port = 0

    def __enter__(self) -> GatewayProcess:
        self.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.check_alive()
            m = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if m:
                self.grpc_port, self.http_port, self.health_port = int(m[1]), int(m[2]), int(m[3])
                return self
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"gateway did not report its ports:\n{self.log()}")


def rotel_agent() -> Path | None:
    """The rotel collector binary shipped in the `rotel` wheel, if it is installed."""
    try:
        import rotel
    except ImportError:
        return None
    path = Path(rotel.__file__).parent / "rotel-agent"
    return path if path.is_file() and os.access(path, os.X_OK) else None


class RotelAgent(ChildProcess):
    """rotel with its Kafka exporter: OTLP gRPC/HTTP in, one record per export batch out.

    rotel writes records with an empty key through librdkafka's consistent-random
    partitioner (it has no partition-by-trace-id option), so a trace's spans may land on
    several partitions: the pipeline must re-key them.
    """

    def __init__(self, binary: Path, bootstrap: str, topic: str, fmt: str, tmp: Path) -> None:
        self.grpc_port, self.http_port = free_port(), free_port()
        name = f"rotel-{topic}-{fmt}"
        super().__init__([
            str(binary), "start",
            "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
            "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
            "--exporter", "kafka",
            "--kafka-exporter-brokers", bootstrap,
            "--kafka-exporter-traces-topic", topic,
            "--kafka-exporter-format", fmt,
            "--kafka-exporter-compression", "zstd",
            "--kafka-exporter-acks", "all",
            # Flush quickly: the spans are few and the test waits for them.
            "--traces-batch-timeout", "100ms",
            "--kafka-exporter-linger-ms", "5",
            # Metrics/logs topics are unused; keep their names per test so nothing collides.
            "--kafka-exporter-metrics-topic", f"{topic}-metrics",
            "--kafka-exporter-logs-topic", f"{topic}-logs",
            "--pid-file", str(tmp / f"{name}.pid"),
            "--log-file", str(tmp / f"{name}.daemon.log"),
        ], tmp / f"{name}.log")

    def __enter__(self) -> RotelAgent:
        import socket

        self.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with socket.create_connection(("127.0.0.1", self.grpc_port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"rotel did not listen on {self.grpc_port}:\n{self.log()}")
