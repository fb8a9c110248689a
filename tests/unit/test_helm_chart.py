"""The Helm chart through Helm's own Go SDK (helm-python-sdk): strict lint and template for the
default values and every value set under examples/, every rendered object checked against the
Kubernetes API schemas (kubernetes-validate), and what the objects must say: ports, probes,
security contexts, Secret references, the migration hook, replica counts, the checksum that
rolls the pods, and a rendered config that `otel-insights validate-config` accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.dockerfile import REPO

CHART = REPO / "deploy/helm/otel-insights"
EXAMPLES = sorted((CHART / "examples").glob("values-*.yaml"))
KUBE_VERSION = "1.30.0"


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values or {}, name="oi", namespace="observability", is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def notes(values: dict[str, Any] | None = None) -> str:
    with helm.Chart.load(str(CHART)) as chart:
        out = chart.render(values or {}, name="oi", namespace="observability", is_install=True)
    return out["otel-insights/templates/NOTES.txt"]


def find(docs: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {[d['metadata']['name'] for d in found]}"
    return found[0]


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                yield d, c


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((CHART / "examples" / name).read_text())


VALUE_SETS = [("defaults", {})] + [(p.name, yaml.safe_load(p.read_text())) for p in EXAMPLES]


@pytest.mark.parametrize(("name", "values"), VALUE_SETS, ids=[n for n, _ in VALUE_SETS])
def test_strict_lint_and_kubernetes_schemas(name: str, values: dict[str, Any]) -> None:
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == [], report
    docs = render(values)
    for d in docs:
        if d["apiVersion"].startswith("monitoring.coreos.com/"):
            assert d["kind"] == "ServiceMonitor"  # a CRD: no schema in the Kubernetes API
            continue
        kubernetes_validate.validate(d, KUBE_VERSION, strict=True)  # unknown fields are errors too


def _pod_env(container: dict[str, Any]) -> dict[str, str]:
    """The environment a pod would get, with stand-ins for what Secrets hold."""
    env = {"HOSTNAME": "oi-otel-insights-pipeline-5d9f-x2x7k"}
    for e in container.get("env", []):
        env[e["name"]] = e.get("value", f"from-secret-{e['valueFrom']['secretKeyRef']['key']}")
    return env


def _rendered_config(docs: list[dict[str, Any]], name: str = "oi-otel-insights") -> str:
    return next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name)["data"]["config.yaml"]


@pytest.mark.parametrize(("name", "values"), VALUE_SETS, ids=[n for n, _ in VALUE_SETS])
def test_the_rendered_config_passes_validate_config(name: str, values: dict[str, Any], tmp_path) -> None:
    docs = render(values)
    config = tmp_path / "config.yaml"
    config.write_text(_rendered_config(docs))
    assert _rendered_config(docs, "oi-otel-insights-migrate") == config.read_text()  # the hook's copy
    for deployment, container in containers(docs):
        done = subprocess.run([sys.executable, "-m", "pipelines.cli", "validate-config", str(config)],
                              capture_output=True, text=True, timeout=120, env=_pod_env(container) | _path_env())
        assert done.returncode == 0, f"{deployment['metadata']['name']}: {done.stdout}{done.stderr}"


def _path_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PATH", "LITELLM_LOCAL_MODEL_COST_MAP", "HOME")}


def test_defaults_roles_ports_and_probes() -> None:
    docs = render()
    args = {d["metadata"]["name"]: c["args"] for d, c in containers(docs)}
    assert args == {
        "oi-otel-insights-pipeline": ["run", "--config", "/etc/otel-insights/config/config.yaml"],
        "oi-otel-insights-gateway": ["gateway", "--config", "/etc/otel-insights/config/config.yaml"],
        "oi-otel-insights-ui": ["ui", "--config", "/etc/otel-insights/config/config.yaml"],
        "oi-otel-insights-migrate": ["migrate", "--config", "/etc/otel-insights/config/config.yaml"],
    }
    ports = {d["metadata"]["name"]: {p["name"]: p["containerPort"] for p in c.get("ports", [])}
             for d, c in containers(docs)}
    assert ports["oi-otel-insights-gateway"] == {"otlp-grpc": 4317, "otlp-http": 4318, "metrics": 9464}
    assert ports["oi-otel-insights-pipeline"] == {"metrics": 9464} and ports["oi-otel-insights-ui"] == {"http": 8080}
    service = find(docs, "Service", "-gateway")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"otlp-grpc": 4317, "otlp-http": 4318,
                                                                         "metrics": 9464}
    # The ports the config binds are the ports the containers declare.
    cfg = yaml.safe_load(_rendered_config(docs))
    assert cfg["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    assert cfg["exporters"]["prometheus"]["endpoint"].endswith(":9464")
    assert cfg["extensions"]["ui"]["endpoint"].endswith(":8080")
    for d, c in containers(docs):
        if d["kind"] == "Job":
            assert "readinessProbe" not in c
            continue
        port = "http" if d["metadata"]["name"].endswith("-ui") else "metrics"
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert find(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert not [d for d in docs if d["kind"] in ("HorizontalPodAutoscaler", "Ingress", "ServiceMonitor")]


def test_security_contexts_and_service_account() -> None:
    docs = render()
    sa = find(docs, "ServiceAccount")
    for d, c in containers(docs):
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        # The read-only root filesystem leaves TMPDIR (/tmp) to an emptyDir.
        assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        if d["kind"] == "Deployment":
            assert pod["serviceAccountName"] == sa["metadata"]["name"]
        else:
            assert "serviceAccountName" not in pod  # the hook runs before the release's account exists


def test_replicas_fit_the_partitions() -> None:
    docs = render({"kafka": {"partitions": 6}, "pipeline": {"replicas": 6}})
    assert find(docs, "Deployment", "-pipeline")["spec"]["replicas"] == 6
    assert yaml.safe_load(_rendered_config(docs))["receivers"]["kafka"]["partitions"] == 6
    with pytest.raises(helm.HelmError, match=r"pipeline.replicas \(4\) is more than kafka.partitions \(3\)"):
        render({"pipeline": {"replicas": 4}})
    hpa = render(example("values-production.yaml"))
    assert "replicas" not in find(hpa, "Deployment", "-gateway")["spec"]  # the HPA owns it
    auto = find(hpa, "HorizontalPodAutoscaler")["spec"]
    assert auto["minReplicas"] == 2 and auto["maxReplicas"] == 8
    assert auto["scaleTargetRef"]["name"] == "oi-otel-insights-gateway"


def test_the_checksum_rolls_every_pod_when_the_config_changes() -> None:
    def sums(values: dict[str, Any]) -> dict[str, str]:
        return {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for d in render(values) if d["kind"] == "Deployment"}

    before, same, after = sums({}), sums({"ui": {"replicas": 2}}), sums({"windows": {"size": "30s"}})
    assert len(set(before.values())) == 1 and before == same
    assert all(after[k] != before[k] for k in before)
    own = sums({"config": {"existingConfigMap": "my-config"}})
    assert len(set(own.values())) == 1 and set(own.values()) != set(before.values())


def test_the_migration_runs_as_a_hook_before_the_workloads() -> None:
    docs = render({"clickhouse": {"password": "inline-only-for-the-test"}})
    job = find(docs, "Job")
    hooks = {d["kind"]: d["metadata"].get("annotations", {}) for d in docs if d["metadata"]["name"].endswith("-migrate")}
    assert set(hooks) == {"Job", "ConfigMap", "Secret"}
    for kind, notes_of in hooks.items():
        assert notes_of["helm.sh/hook"] == "pre-install,pre-upgrade", kind
        assert "before-hook-creation" in notes_of["helm.sh/hook-delete-policy"]
    assert int(hooks["ConfigMap"]["helm.sh/hook-weight"]) < int(hooks["Job"]["helm.sh/hook-weight"])
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["volumes"][0]["configMap"]["name"] == "oi-otel-insights-migrate"
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["containers"][0]["env"]}
    assert env == {"CLICKHOUSE_PASSWORD": {"name": "oi-otel-insights-migrate", "key": "clickhouse-password"}}
    # The workloads never create the schema themselves.
    assert yaml.safe_load(_rendered_config(docs))["exporters"]["clickhouse"]["create_schema"] is False
    assert not [d for d in render({"migration": {"enabled": False}}) if d["kind"] == "Job"]


def test_credentials_only_from_secrets() -> None:
    docs = render(example("values-existing-secrets.yaml"))
    assert not [d for d in docs if d["kind"] == "Secret"], "the chart keeps no Secret of its own here"
    pipeline = next(c for d, c in containers(docs) if d["metadata"]["name"].endswith("-pipeline"))
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pipeline["env"] if "valueFrom" in e}
    assert refs["CLICKHOUSE_PASSWORD"] == {"name": "otel-insights-clickhouse", "key": "password"}
    assert refs["OTEL_INSIGHTS_API_TOKEN"] == {"name": "otel-insights-api", "key": "token"}
    assert refs["ANTHROPIC_API_KEY"] == {"name": "otel-insights-llm", "key": "anthropic", "optional": True}
    assert refs["OPENAI_API_KEY"] == {"name": "otel-insights-llm", "key": "openai", "optional": True}
    text = json.dumps(docs)
    cfg = _rendered_config(docs)
    assert "${env:CLICKHOUSE_PASSWORD:-}" in cfg and "${env:ANTHROPIC_API_KEY:-}" in cfg
    assert "bearer_token_env: OTEL_INSIGHTS_API_TOKEN" in cfg
    # Defaults: the chart generates the API token into its own Secret, never into the config.
    generated = find(render(), "Secret")
    assert set(generated["data"]) == {"api-token"} and generated["data"]["api-token"] not in text


def test_kafka_tls_and_sasl_from_secrets() -> None:
    docs = render(example("values-kafka-tls-sasl.yaml"))
    cfg = yaml.safe_load(_rendered_config(docs))["receivers"]["kafka"]
    assert cfg["tls"] == {"ca_file": "/etc/otel-insights/kafka-tls/ca.crt", "insecure_skip_verify": False}
    assert cfg["auth"]["sasl"] == {"mechanism": "SCRAM-SHA-512", "username": "otel-insights",
                                   "password": "${env:KAFKA_SASL_PASSWORD:-}"}
    for d, c in containers(docs):
        if d["kind"] == "Job":
            continue  # the migration talks to ClickHouse only
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
        assert refs["KAFKA_SASL_PASSWORD"] == {"name": "otel-insights-kafka", "key": "password"}
        assert {"name": "kafka-tls", "mountPath": "/etc/otel-insights/kafka-tls", "readOnly": True} in c["volumeMounts"]
        volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        assert volumes["kafka-tls"]["secret"]["secretName"] == "kafka-ca"
    mtls = yaml.safe_load(_rendered_config(render(example("values-kafka-mtls-topics.yaml"))))["receivers"]["kafka"]
    assert mtls["tls"]["cert_file"].endswith("/tls.crt") and mtls["tls"]["key_file"].endswith("/tls.key")
    assert mtls["traces"]["topics"] == ["otlp_spans", "otlp_spans_edge"]
    with pytest.raises(helm.HelmError, match="kafka.sasl.existingSecret"):
        render({"kafka": {"sasl": {"enabled": True, "username": "u"}}})
    with pytest.raises(helm.HelmError, match="kafka.tls.existingSecret"):
        render({"kafka": {"tls": {"enabled": True}}})


def test_clickhouse_cluster_ui_disabled_and_extras() -> None:
    cluster = yaml.safe_load(_rendered_config(render(example("values-clickhouse-cluster.yaml"))))
    assert cluster["exporters"]["clickhouse"]["cluster_name"] == "otel"
    assert cluster["exporters"]["clickhouse"]["async_insert"] is True
    no_ui = render(example("values-no-ui.yaml"))
    assert not [d for d in no_ui if d["metadata"]["name"].endswith("-ui")]
    assert not [d for d in no_ui if d["kind"] == "PodDisruptionBudget"]
    prod = render(example("values-production.yaml"))
    ingress = find(prod, "Ingress")
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
        "name": "oi-otel-insights-ui", "port": {"name": "http"}}
    monitor = find(prod, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    override = yaml.safe_load(_rendered_config(prod))["processors"]["windows"]
    assert override == {"size": "60s", "allowed_lateness": "30s", "cardinality_limit": 5000}


def test_grafana_dashboards_are_sidecar_configmaps_of_the_shipped_files() -> None:
    shipped = {p.name: p.read_text() for p in (REPO / "config/grafana/dashboards").glob("*.json")}
    # A link, so the chart always ships what `dashboards provision` wrote (helm package copies it in).
    assert (CHART / "dashboards").is_symlink()
    assert (CHART / "dashboards").resolve() == (REPO / "config/grafana/dashboards").resolve()
    maps = [d for d in render(example("values-production.yaml")) if d["kind"] == "ConfigMap"
            and "-dashboard-" in d["metadata"]["name"]]
    assert len(maps) == len(shipped)
    for m in maps:
        assert m["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert m["metadata"]["annotations"] == {"grafana_folder": "otel-insights"}
        (file, body), = m["data"].items()
        assert json.loads(body) == json.loads(shipped[file])


def test_values_schema_rejects_wrong_types_and_unknown_keys() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema({})
        for bad, where in (({"pipeline": {"replicas": "three"}}, "/pipeline/replicas"),
                           ({"kafka": {"sasl": {"mechanism": "GSSAPI"}}}, "/kafka/sasl/mechanism"),
                           ({"clickhouse": {"endpoint": "clickhouse:8123"}}, "/clickhouse/endpoint"),
                           ({"windows": {"size": 60}}, "/windows/size"),
                           ({"replicas": 3}, "additional properties")):
            with pytest.raises(helm.HelmValuesError, match=where):
                chart.validate_schema(bad)
        with pytest.raises(helm.HelmError):  # rendering checks the schema too
            chart.render({"pipeline": {"replicas": "three"}}, name="oi", namespace="x")


def test_notes_show_the_collector_exporter_and_how_to_reach_things() -> None:
    text = notes(example("values-kafka-tls-sasl.yaml"))
    lines = text.splitlines()
    start = lines.index("   exporters:")
    end = lines.index("", start)
    exporter = yaml.safe_load("\n".join(line[3:] for line in lines[start:end]))
    kafka = exporter["exporters"]["kafka/otel-insights"]
    assert kafka["partition_traces_by_id"] is True and kafka["traces"] == {"topic": "otlp_spans",
                                                                         "encoding": "otlp_proto"}
    assert kafka["brokers"][0] == "kafka-0.kafka.kafka.svc:9093"
    assert kafka["auth"]["sasl"]["mechanism"] == "SCRAM-SHA-512" and "ca_file" in kafka["tls"]
    assert "port-forward svc/oi-otel-insights-ui 8080" in text and "get secret oi-otel-insights" in text
    assert "https://otel-insights.example.com/" in notes(example("values-production.yaml"))


def test_the_example_collector_config_feeds_the_chart_defaults() -> None:
    collector = yaml.safe_load((CHART / "examples/collector-contrib.yaml").read_text())
    kafka = collector["exporters"]["kafka/otel-insights"]
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert kafka["partition_traces_by_id"] is True and kafka["traces"]["encoding"] == values["kafka"]["encoding"]
    assert kafka["traces"]["topic"] in values["kafka"]["topics"]
    assert "kafka/otel-insights" in collector["service"]["pipelines"]["traces"]["exporters"]
    env = dict(line.split("=", 1) for line in (CHART / "examples/rotel.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["ROTEL_EXPORTER"] == "kafka" and env["ROTEL_KAFKA_EXPORTER_TRACES_TOPIC"] in values["kafka"]["topics"]
    assert env["ROTEL_KAFKA_EXPORTER_FORMAT"] == "protobuf"  # otlp_proto


def test_chart_version_follows_the_project() -> None:
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert Path(CHART / "values.schema.json").is_file()
