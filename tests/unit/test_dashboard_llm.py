"""The model generator through litellm's real Router against the local provider stub: a valid
spec is used, a bad one is repaired once or replaced by the rule-based spec, free SQL never passes."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from processor.config.components import HealthConfig, NarratorConfig
from processor.dashboards import rules, spec
from processor.dashboards.llm import ModelDashboards
from processor.insights import message
from processor.insights.message import template_narration
from processor.insights.models import ModelRouter
from processor.telemetry import Metrics
from tests.llm_stub import LLMStub
from tests.unit.test_llm_narrator import _facts

H = HealthConfig()


def _insight() -> dict[str, Any]:
    facts = _facts()
    return message.build(facts, template_narration(facts), insight_id="inc-1", version=3, status="open",
                         change="updated", now_ms=1_767_225_600_000)


def _good_answer() -> dict[str, Any]:
    """What a model that follows the instructions could answer: panels over catalogue queries."""
    base = rules.incident(_insight(), "developer", H)
    return {"title": "Payment is slow", "description": "Latency of payment and who calls it.",
            "panels": [{**p, "thresholds": [{"value": None, "color": "green"}, {"value": 1, "color": "red"}]}
                       if p.get("unit") == "percentunit" else p for p in base["panels"][:5]]}


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    state: dict[str, Any] = {"answers": []}

    def reply(provider: str, body: dict) -> str:
        return state["answers"].pop(0) if state["answers"] else json.dumps(_good_answer())

    with LLMStub(reply) as s:
        s.state = state  # type: ignore[attr-defined]
        yield s


def _generator(stub: LLMStub) -> tuple[ModelDashboards, Metrics]:
    cfg = NarratorConfig.model_validate({
        "models": [{"name": "gpt", "model": "openai/gpt-4o-mini", "api_key": "sk-test", "api_base": f"{stub.base}/v1"}],
        "routes": {"dashboard": ["gpt"]}, "timeout": "2s", "retries": 0})
    metrics = Metrics()
    return ModelDashboards(ModelRouter(cfg, metrics), H), metrics


async def _validate(s: dict[str, Any]) -> list[str]:
    return spec.check(s)


def _run(gen: ModelDashboards, insight: dict[str, Any] | None = None) -> dict[str, Any]:
    insight = insight or _insight()
    base = rules.incident(insight, "developer", H, version=insight["version"])
    return asyncio.run(gen.incident(insight, "developer", base, _validate))


def test_a_valid_model_spec_is_published_with_the_health_thresholds(stub) -> None:
    gen, _ = _generator(stub)
    out = _run(gen)
    assert out["generator"] == {"kind": "model", "model": "openai/gpt-4o-mini", "repaired": False}
    assert out["title"] == "Payment is slow" and spec.check(out) == []
    # Identity and range are not the model's: they are this incident version's.
    base = rules.incident(_insight(), "developer", H, version=3)
    assert (out["id"], out["version"], out["time_range"]) == (base["id"], 3, base["time_range"])
    errors = [p for p in out["panels"] if p.get("unit") == "percentunit"]
    assert errors and all(p["thresholds"] == rules.error_thresholds(H) for p in errors)
    user = stub.requests[0][1]["messages"][1]["content"]
    assert user.startswith("<facts>") and "service_red" in stub.requests[0][1]["messages"][0]["content"]


def test_an_unknown_query_is_repaired_once(stub) -> None:
    bad = _good_answer()
    bad["panels"][1]["queries"][0]["name"] = "raw_sql"
    stub.state["answers"] = [json.dumps(bad)]
    gen, _ = _generator(stub)
    out = _run(gen)
    assert out["generator"]["repaired"] is True and spec.check(out) == []
    repair = stub.requests[1][1]["messages"][-1]["content"]
    assert "unknown query 'raw_sql'" in repair and len(stub.requests) == 2


@pytest.mark.parametrize("mistake", ["free_sql", "bad_param", "not_json"])
def test_a_spec_still_wrong_after_the_repair_is_replaced_by_the_rules(stub, mistake: str) -> None:
    bad = _good_answer()
    if mistake == "free_sql":
        bad["panels"][1]["queries"][0]["sql"] = "SELECT * FROM system.users"
    elif mistake == "bad_param":
        bad["panels"][1]["queries"][0]["params"]["service"] = 42
    text = "here is your dashboard!" if mistake == "not_json" else json.dumps(bad)
    stub.state["answers"] = [text, text]
    gen, metrics = _generator(stub)
    out = _run(gen)
    base = rules.incident(_insight(), "developer", H, version=3)
    assert out["panels"] == base["panels"] and out["generator"]["kind"] == "rules"
    assert out["generator"]["refused"] and spec.check(out) == []
    assert metrics.registry.get_sample_value("otel_insights_llm_fallbacks_total", {"reason": "invalid_spec"}) == 1


def test_equal_facts_reuse_the_layout_without_a_second_call(stub) -> None:
    gen, _ = _generator(stub)
    first = _run(gen)
    later = copy.deepcopy(_insight())
    later["version"] = 4
    second = _run(gen, later)
    assert len(stub.requests) == 1 and second["panels"] == first["panels"] and second["version"] == 4


def test_a_failing_model_leaves_the_rules(stub) -> None:
    stub.behaviour["openai"] = "error"
    gen, _ = _generator(stub)
    out = _run(gen)
    assert out["generator"]["kind"] == "rules" and spec.check(out) == []
