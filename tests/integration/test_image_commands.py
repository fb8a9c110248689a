"""The image's entry commands, run outside Docker exactly as the image runs them: the console script
its ENTRYPOINT names, each role's command built from its CMD, the config it COPYs, its ENV, and
its HEALTHCHECK command, against a real broker and a ClickHouse server (chdb behind the HTTP shim).
Only what a container gets from its surroundings changes: addresses, free ports (each role has a
host of its own in a pod or compose), and topic and group names unique to this test. Also the
rotel example of the chart: rotel configured by examples/rotel.env alone delivers traces to Kafka."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from processor.generate import ShopGenerator
from processor.generate.demo_traffic import run_http
from processor.localstack import free_port
from tests.chshim import start_shim
from tests.dockerfile import REPO, stages
from tests.e2e.procs import ChildProcess, rotel_agent
from tests.integration.harness import http_get, read_records, wait_until

pytestmark = pytest.mark.integration
INTERNAL_TOPICS = ("otel-insights-rekeyed", "otel-insights-partials", "otel-insights-anomalies",
                   "enriched-insights", "dashboard-specs", "otel-insights-dlq")


def _status(url: str) -> int:
    return http_get(url)[0]


class Image:
    """What the Dockerfile's final stage says, mapped onto this machine."""

    def __init__(self, root: Path) -> None:
        _, found = stages()
        final = found[-1]
        self.entrypoint = final.last("ENTRYPOINT").exec_form  # type: ignore[union-attr]
        self.cmd = final.last("CMD").exec_form  # type: ignore[union-attr]
        self.healthcheck = final.last("HEALTHCHECK").exec_form  # type: ignore[union-attr]
        self.copies = {i.text.split()[-1]: i.text.split()[0] for i in final.all("COPY")}
        tmp = root / "tmp"  # the image's /tmp: its TMPDIR and HOME
        tmp.mkdir()
        self.env = {k: (str(tmp) if v == "/tmp" else v) for k, v in final.env().items()}
        self.root = root

    def argv(self, role: str, config: Path) -> list[str]:
        """ENTRYPOINT + CMD with CMD's subcommand replaced by ``role`` and the config path mapped."""
        script = Path(sys.executable).parent / self.entrypoint[0]  # the console script pip installs
        assert script.is_file(), script
        return [str(script), role, *[str(config) if a == self.cmd[2] else a for a in self.cmd[1:]]]

    def config_for(self, role: str, path_in_image: str, names: dict[str, str]) -> tuple[Path, dict[str, int]]:
        """The file the image COPYs to ``path_in_image``, with free ports and this test's names."""
        text = (REPO / self.copies[path_in_image]).read_text()
        ports: dict[str, int] = {}

        def port(m: re.Match[str]) -> str:
            ports[m[1]] = free_port()
            return f'"127.0.0.1:{ports[m[1]]}"'

        text = re.sub(r'"0\.0\.0\.0:(\d+)"', port, text)
        for old, new in names.items():
            text = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", new, text)
        out = self.root / f"{role}.yaml"
        out.write_text(text)
        return out, ports


def _start(child: ChildProcess, env: dict[str, str]) -> None:
    with open(child.log_path, "ab") as log:
        child.proc = subprocess.Popen(child.argv, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True, env=env)


def test_every_role_starts_from_the_image_commands(broker, new_topic, unique_name, tmp_path) -> None:
    image = Image(tmp_path)
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert image.entrypoint == ["otel-insights"] and image.cmd[0] == "run"
    path_in_image = image.cmd[image.cmd.index("--config") + 1]
    topic, group = new_topic("image"), unique_name("image")
    names = {"otlp_spans": topic, "otel-insights": group, **{t: f"{group}-{t}" for t in INTERNAL_TOPICS}}
    shim = start_shim(tmp_path / "clickhouse")
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}, **image.env,
           "KAFKA_BROKERS": broker.bootstrap, "CLICKHOUSE_ENDPOINT": shim.url,
           "OTEL_INSIGHTS_API_TOKEN": "image-test-token"}
    children: list[ChildProcess] = []
    try:
        config, _ = image.config_for("migrate", path_in_image, names)
        done = subprocess.run(image.argv("migrate", config), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "applied migrations" in done.stdout, done.stdout + done.stderr

        # The default command: the worker (with production.yaml it also runs the OTLP receiver
        # and serves the UI), then the gateway and the UI as roles of their own.
        probes = {}
        for role, page in (("run", "9464"), ("gateway", "9464"), ("ui", "8080")):
            config, ports = image.config_for(role, path_in_image, names)
            child = ChildProcess(image.argv(role, config), tmp_path / f"{role}.log")
            _start(child, env)
            children.append(child)
            probes[role] = f"http://127.0.0.1:{ports[page]}"
        for role, child in zip(probes, children, strict=True):
            wait_until(lambda c=child, r=role: (c.check_alive(), _status(probes[r] + "/readyz"))[1] == 200,
                       120, f"the {role} role to be ready")
            # The image's HEALTHCHECK, as Docker runs it inside that container.
            health = {**env, "OTEL_INSIGHTS_HEALTH_URL": probes[role] + "/healthz"}
            check = subprocess.run(image.healthcheck, env=health, capture_output=True, timeout=30)
            assert check.returncode == 0, check.stderr
            # docker-compose.yml's readiness check of the same role, on this host's port.
            test = compose[{"run": "pipeline"}.get(role, role)]["healthcheck"]["test"]
            assert test[0] == "CMD"
            argv = [re.sub(r"http://127\.0\.0\.1:\d+", probes[role], a) for a in test[1:]]
            assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0, argv
        dead = {**env, "OTEL_INSIGHTS_HEALTH_URL": f"http://127.0.0.1:{free_port()}/healthz"}
        assert subprocess.run(image.healthcheck, env=dead, capture_output=True, timeout=30).returncode != 0
        # The image's TMPDIR is the only place they wrote to.
        assert (Path(image.env["TMPDIR"]) / "otel-insights-faust").is_dir()
    finally:
        for child in children:
            child.stop()
        shim.stop()


def test_rotel_configured_by_the_chart_example_delivers_to_kafka(broker, new_topic, tmp_path) -> None:
    binary = rotel_agent()
    if binary is None:
        pytest.skip("the rotel wheel is not installed")
    example = REPO / "deploy/helm/otel-insights/examples/rotel.env"
    env = dict(line.split("=", 1) for line in example.read_text().splitlines() if line and not line.startswith("#"))
    topic = new_topic("rotel-example")
    grpc, http = free_port(), free_port()
    env.update({"ROTEL_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{grpc}", "ROTEL_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{http}",
                "ROTEL_KAFKA_EXPORTER_BROKERS": broker.bootstrap, "ROTEL_KAFKA_EXPORTER_TRACES_TOPIC": topic,
                "ROTEL_KAFKA_EXPORTER_METRICS_TOPIC": f"{topic}-metrics", "ROTEL_KAFKA_EXPORTER_LOGS_TOPIC": f"{topic}-logs",
                "ROTEL_TRACES_BATCH_TIMEOUT": "100ms", "ROTEL_PID_FILE": str(tmp_path / "rotel.pid"),
                "ROTEL_LOG_FILE": str(tmp_path / "rotel.daemon.log"), "PATH": os.environ.get("PATH", "")})
    rotel = ChildProcess([str(binary), "start"], tmp_path / "rotel.log")
    _start(rotel, env)
    try:
        wait_until(lambda: (rotel.check_alive(), _status(f"http://127.0.0.1:{http}/"))[1] != 0, 30, "rotel to listen")
        traces = list(ShopGenerator(seed=3, rate=50, start_ns=time.time_ns() - 10**9).traces(0.5))
        assert asyncio.run(run_http(traces, f"http://127.0.0.1:{http}/v1/traces")) == len(traces)
        assert asyncio.run(read_records(broker.bootstrap, topic, want=1, timeout_s=30)), rotel.log()
    finally:
        rotel.stop()
