"""docker-compose.yml without Docker: the compose-spec JSON schema (as vendored, with its licence,
in the pinned check-jsonschema wheel), then what makes `docker compose up` work with nothing else
to do: pinned images or a build, mounted files present, dependencies that can become healthy,
declared volumes, every otel-insights config valid for the environment its service gets, and a
collector config whose kafka exporter writes what the pipeline reads."""

from __future__ import annotations

import base64
import importlib.metadata
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import typer
import yaml

from pipelines.cli import app as cli_app
from processor.config import load_config
from tests.dockerfile import REPO

COMPOSE = REPO / "docker-compose.yml"
_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::?-(?P<default>[^}]*))?\}")


def _schema() -> dict[str, Any]:
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    assert vendor.joinpath("licenses", "LICENSE.compose-spec").is_file()  # Apache-2.0, shipped with it
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def _interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's `${VAR}` / `${VAR:-default}` with an empty environment unless given."""
    if isinstance(node, str):
        return _VAR.sub(lambda m: env.get(m["name"]) or (m["default"] or ""), node)
    if isinstance(node, dict):
        return {k: _interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, env) for v in node]
    return node


def _compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    return _interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})


def _ours(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in doc["services"].items() if s.get("image", "").startswith("otel-insights:")}


def test_the_compose_spec_schema_accepts_it_and_rejects_a_wrong_type() -> None:
    schema = _schema()
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    problems = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(_compose())]
    assert problems == []
    broken = _compose()
    broken["services"]["kafka"]["volumes"] = "kafka-data:/var/lib/kafka/data"  # a string, not a list
    broken["services"]["pipeline"]["depends_on"]["migrate"]["condition"] = "when_ready"
    found = sorted(e.json_path for e in validator.iter_errors(broken))
    assert "$.services.kafka.volumes" in found and any("pipeline.depends_on" in p for p in found), found
    assert importlib.metadata.version("check-jsonschema")  # the schema's version is this wheel's


def test_every_service_has_a_pinned_image_or_our_build() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        image = svc.get("image", "")
        if name in _ours(_compose()):
            assert svc["build"] == "." and image == "otel-insights:" + _project_version(), name
            continue
        assert "build" not in svc, name
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.fullmatch(r"v?\d+(\.\d+){2,3}", tag), f"{name}: {image}"


def _project_version() -> str:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_mounted_files_exist_and_named_volumes_are_declared() -> None:
    doc = _compose()
    declared = set(doc.get("volumes") or {})
    used = set()
    for name, svc in doc["services"].items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source} is not in the repository"
            else:
                used.add(source)
    assert used == declared and {"kafka-data", "clickhouse-data", "grafana-data"} <= declared


def test_dependencies_can_be_met_and_long_running_services_have_health_checks() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        for dep, how in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy: it has no check"
            if how["condition"] == "service_completed_successfully":
                assert services[dep].get("restart") == "no", dep
    one_shot = {"migrate", "traffic"}
    distroless = {"otel-collector"}  # no shell in the image to run a check with (README)
    for name, svc in services.items():
        if name in one_shot:  # else the image's HEALTHCHECK would mark them unhealthy
            assert svc["healthcheck"] == {"disable": True}, name
        elif name not in distroless:
            assert svc["healthcheck"]["test"], name
    # Ours probe readiness, on the port each role serves it.
    for name, port in (("pipeline", 9464), ("gateway", 9464), ("ui", 8080)):
        assert f"http://127.0.0.1:{port}/readyz" in " ".join(services[name]["healthcheck"]["test"])
    assert services["pipeline"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_published_ports_are_loopback_only_and_llm_keys_optional() -> None:
    raw = yaml.safe_load(COMPOSE.read_text())
    for name, svc in raw["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: {port}"
    env = raw["x-otel-insights"]["environment"]
    for key in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OLLAMA_API_BASE"):
        assert env[key] == f"${{{key}:-}}", key  # unset is fine: the template narrates
    cluster = raw["services"]["kafka"]["environment"]["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster + "==")) == 16  # Kafka wants a UUID


def _config_of(svc: dict[str, Any]) -> Path:
    mounted = {m.split(":")[1]: m.split(":")[0] for m in svc["volumes"]}
    command = svc["command"]
    return REPO / mounted[command[command.index("--config") + 1]]


def test_every_otel_insights_config_validates_with_its_service_environment(monkeypatch) -> None:
    for name, svc in _ours(_compose()).items():
        if "--config" not in svc["command"]:
            continue
        cfg = load_config(_config_of(svc), environ={k: str(v) for k, v in svc["environment"].items()})
        assert cfg.kafka is not None and cfg.kafka.brokers == ("kafka:9092",), name
        assert cfg.clickhouse is not None and cfg.clickhouse.endpoint == "http://clickhouse:8123"
        password = cfg.clickhouse.password
        secret = password.get_secret_value() if hasattr(password, "get_secret_value") else password
        assert secret == "otel-insights"  # a SecretStr once issue 13 lands
        if name == "ui":
            assert cfg.ui is None and cfg.extensions["ui"].endpoint == "0.0.0.0:8080"
        if name == "pipeline":
            assert cfg.prometheus is not None and cfg.prometheus.endpoint == "0.0.0.0:9464"
            assert not cfg.clickhouse.create_schema  # `migrate` runs first


def test_every_command_parses_as_the_cli_would(monkeypatch) -> None:
    command = typer.main.get_command(cli_app)
    for name, svc in _ours(_compose()).items():
        args = list(svc["command"])
        sub = command.commands[args[0]]  # type: ignore[attr-defined]
        with sub.make_context(args[0], args[1:]) as ctx:  # unknown options or bad values raise
            assert ctx.params, name


def test_the_collector_writes_what_the_pipeline_reads() -> None:
    doc = _compose()
    svc = doc["services"]["otel-collector"]
    mounted = {m.split(":")[1]: m.split(":")[0] for m in svc["volumes"]}
    collector = yaml.safe_load((REPO / mounted["/etc/otelcol-contrib/config.yaml"]).read_text())
    kafka = collector["exporters"]["kafka"]
    assert kafka["partition_traces_by_id"] is True and kafka["traces"]["encoding"] == "otlp_proto"
    assert kafka["producer"]["required_acks"] == -1
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["kafka"]
    assert set(collector["service"]["pipelines"]["traces"]["receivers"]) == {"otlp"}
    cfg = load_config(_config_of(doc["services"]["pipeline"]), environ={})
    assert cfg.kafka is not None
    assert kafka["brokers"] == list(cfg.kafka.brokers) and kafka["traces"]["topic"] in _topics(cfg.kafka.traces)
    generator = doc["services"]["traffic"]["command"]
    assert generator[generator.index("--otlp-http") + 1] == "http://otel-collector:4318/v1/traces"


def _topics(traces: Any) -> list[str]:
    return list(getattr(traces, "topics", None) or [traces.topic])  # issue 13 makes it a list


def test_grafana_gets_our_provisioning_and_the_plugin() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in grafana["volumes"]}
    provider = yaml.safe_load((REPO / "config/grafana/provisioning/dashboards/otel-insights.yaml").read_text())
    assert mounts[provider["providers"][0]["options"]["path"]] == "./config/grafana/dashboards"
    assert mounts["/etc/grafana/provisioning/datasources"] == "./config/grafana/provisioning/datasources"
    env = grafana["environment"]
    assert env["GF_PLUGINS_PREINSTALL_SYNC"].startswith("grafana-clickhouse-datasource@")
    datasource = (REPO / "config/grafana/provisioning/datasources/otel-insights.yaml").read_text()
    for var in set(re.findall(r"\$(OTEL_INSIGHTS_CLICKHOUSE_[A-Z]+)", datasource)):
        assert var in env, var


def test_no_secret_is_written_into_the_stack() -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"(API_KEY|TOKEN|PASSWORD):\s+[^$\s{]", text), "credentials only from the environment"
