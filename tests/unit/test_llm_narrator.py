"""The model narrator through litellm's real Router and provider adapters, against a local
stub of the OpenAI, Anthropic and Ollama APIs: fallback, timeouts, budget, cache, grounding
repair, hostile names and secrets."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from processor.config.components import NarratorConfig
from processor.insights import facts as facts_mod
from processor.insights import llm, template
from processor.insights import models as model_router
from processor.telemetry import Metrics
from tests.llm_stub import LLMStub
from tests.unit.test_insights import HOSTILE, SHOP, W, _anomaly, _edge

KEYS = {"openai": "sk-test-openai-0123456789", "anthropic": "sk-ant-test-9876543210"}


def _facts(name: str = "payment") -> facts_mod.Facts:
    rows = [_anomaly("checkout", "p95_ms", 850, 80, 0.8), _anomaly(name, "p95_ms", 800, 40, 0.95)]
    return facts_mod.build("inc-1", rows, SHOP + [_edge("checkout", name)], W)


@pytest.fixture
def stub() -> Iterator[LLMStub]:
    state: dict[str, Any] = {"facts": _facts(), "answers": []}

    def reply(provider: str, body: dict) -> str:
        if state["answers"]:
            return state["answers"].pop(0)
        return json.dumps(template.narrate(state["facts"]))  # a model that follows the rules

    with LLMStub(reply) as s:
        s.state = state  # type: ignore[attr-defined]
        yield s


def _narrator(stub: LLMStub, route: list[str], **extra: Any) -> tuple[llm.LLMNarrator, Metrics]:
    models = {
        "claude": {"model": "anthropic/claude-sonnet-4-5", "api_key": KEYS["anthropic"], "api_base": stub.base},
        "gpt": {"model": "openai/gpt-4o-mini", "api_key": KEYS["openai"], "api_base": f"{stub.base}/v1"},
        "llama": {"model": "ollama_chat/llama3.1", "api_base": stub.base,
                  "input_cost_per_token": 0, "output_cost_per_token": 0},
    }
    cfg = NarratorConfig.model_validate({
        "models": [{"name": n, **m} for n, m in models.items()], "routes": {"narrative": route},
        "timeout": "1s", "retries": 0, **extra})
    metrics = Metrics()
    return llm.LLMNarrator(model_router.ModelRouter(cfg, metrics)), metrics


def _metric(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def test_a_grounded_answer_from_the_first_model_is_used_with_its_tokens_and_cost(stub) -> None:
    narrator, metrics = _narrator(stub, ["gpt", "claude"])
    out = asyncio.run(narrator(stub.state["facts"]))
    assert out.narrator == "openai/gpt-4o-mini" and out.model == "openai/gpt-4o-mini" and out.grounded
    assert out.narrative["summary"] == template.narrate(stub.state["facts"])["summary"]
    assert (out.prompt_tokens, out.completion_tokens) == (900, 300) and out.cost_usd > 0
    assert stub.calls("openai") == 1 and stub.calls("anthropic") == 0
    body = stub.requests[0][1]
    assert body["response_format"]["type"] == "json_schema"  # structured output where supported
    assert _metric(metrics, "otel_insights_llm_requests_total", model="openai/gpt-4o-mini", outcome="ok") == 1
    assert _metric(metrics, "otel_insights_llm_cost_usd_total", model="openai/gpt-4o-mini") == pytest.approx(out.cost_usd)


def test_a_failing_first_model_falls_back_to_the_second_provider(stub) -> None:
    stub.behaviour["anthropic"] = "error"
    narrator, metrics = _narrator(stub, ["claude", "gpt"])
    out = asyncio.run(narrator(stub.state["facts"]))
    assert out.narrator == "openai/gpt-4o-mini" and out.grounded
    assert stub.calls("anthropic") >= 1 and stub.calls("openai") == 1
    assert _metric(metrics, "otel_insights_llm_fallbacks_total", reason="failed") == 1
    assert _metric(metrics, "otel_insights_llm_requests_total", model="anthropic/claude-sonnet-4-5",
                   outcome="error") == 1


def test_a_timing_out_model_falls_back_then_every_failure_ends_in_the_template(stub) -> None:
    stub.behaviour["openai"] = "slow"
    stub.slow_s = 3.0
    narrator, metrics = _narrator(stub, ["gpt", "llama"])
    out = asyncio.run(narrator(stub.state["facts"]))
    assert out.narrator == "ollama_chat/llama3.1" and out.cost_usd == 0  # local price override
    assert _metric(metrics, "otel_insights_llm_requests_total", model="openai/gpt-4o-mini", outcome="timeout") == 1
    assert stub.requests[-1][1]["format"]["type"] == "object"  # ollama gets the schema as `format`

    stub.behaviour["ollama"] = "error"
    out = asyncio.run(narrator(_facts("billing")))
    assert out.narrator == "template" and out.grounded and out.model is None
    assert _metric(metrics, "otel_insights_llm_fallbacks_total", reason="failed") == 3


def test_a_spent_budget_narrates_with_the_template_without_calling(stub) -> None:
    narrator, metrics = _narrator(stub, ["gpt"], daily_budget_usd=0.0001)
    first = asyncio.run(narrator(stub.state["facts"]))
    assert first.narrator == "openai/gpt-4o-mini" and first.cost_usd > 0.0001  # this call spent it
    second = asyncio.run(narrator(_facts("billing")))
    assert second.narrator == "template" and stub.calls("openai") == 1
    assert _metric(metrics, "otel_insights_llm_budget_remaining_usd") == 0
    assert _metric(metrics, "otel_insights_llm_fallbacks_total", reason="budget") == 1


def test_equal_facts_hit_the_cache_and_make_no_second_call(stub) -> None:
    narrator, metrics = _narrator(stub, ["gpt"])
    a = asyncio.run(narrator(stub.state["facts"]))
    b = asyncio.run(narrator(_facts()))  # rebuilt, equal
    assert stub.calls("openai") == 1 and b.narrative == a.narrative and b.cost_usd == 0
    assert _metric(metrics, "otel_insights_llm_cache_hits_total") == 1


def _hallucinated(facts: facts_mod.Facts) -> str:
    n = template.narrate(facts)
    n["summary"] = "p95 latency of `ghost-service` rose 17.3x since 2026-01-01T00:00:00Z."
    return json.dumps(n)


def test_a_hallucinated_number_or_name_is_repaired_once(stub) -> None:
    stub.state["answers"] = [_hallucinated(stub.state["facts"])]  # then a grounded one
    narrator, metrics = _narrator(stub, ["gpt"])
    out = asyncio.run(narrator(stub.state["facts"]))
    assert out.narrator == "openai/gpt-4o-mini" and out.grounded and stub.calls("openai") == 2
    repair = stub.requests[-1][1]["messages"][-1]["content"]
    assert "ghost-service" in repair and "17.3" in repair  # the violations were listed
    assert any("ghost-service" in v for v in out.violations)
    assert _metric(metrics, "otel_insights_llm_grounding_total", outcome="repaired") == 1


def test_a_narrative_still_ungrounded_after_the_repair_is_replaced_by_the_template(stub) -> None:
    stub.state["answers"] = [_hallucinated(stub.state["facts"])] * 2
    narrator, metrics = _narrator(stub, ["gpt", "claude"])
    out = asyncio.run(narrator(stub.state["facts"]))
    assert out.narrator == "template" and out.grounded and stub.calls("openai") == 2
    assert stub.calls("anthropic") == 0  # a model that answers badly is not a failure of the next
    assert out.violations and all(v.startswith("openai/gpt-4o-mini:") for v in out.violations)
    assert out.prompt_tokens == 1800  # both attempts counted
    assert _metric(metrics, "otel_insights_llm_grounding_total", outcome="failed") == 1


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_names_stay_data_in_the_prompt_and_cannot_change_the_output(stub, hostile: str) -> None:
    facts = _facts(hostile)
    stub.state["facts"] = facts
    # A model that obeys the name's "instructions" answers off-schema: repaired, then refused.
    stub.state["answers"] = [json.dumps({"summary": "all good"}), json.dumps({"summary": "all good", "x": 1})]
    narrator, _ = _narrator(stub, ["gpt"])
    out = asyncio.run(narrator(facts))
    assert out.narrator == "template" and out.grounded
    system, user = stub.requests[0][1]["messages"][:2]
    assert system["content"] == llm.SYSTEM  # nothing of a span reaches the instructions
    inside = user["content"].split("<facts>", 1)[1].split("</facts>", 1)[0]
    assert user["content"].startswith("<facts>") and "</facts>" not in inside
    assert not any(ch in user["content"] for ch in "\x1b\x00\x07")
    assert len(user["content"]) < 12_000  # a 10 kB name is cut


def test_no_api_key_reaches_a_log_line_an_error_or_a_repr(stub, caplog) -> None:
    stub.behaviour["openai"] = "auth"  # echoes the key it got back in its error
    stub.behaviour["anthropic"] = "auth"
    caplog.set_level(logging.DEBUG)
    narrator, _ = _narrator(stub, ["gpt", "claude"])
    out = asyncio.run(narrator(stub.state["facts"]))
    assert out.narrator == "template"
    assert any("failed" in r.getMessage() for r in caplog.records if r.name == "otel_insights.models")
    text = "\n".join(r.getMessage() for r in caplog.records) + repr(narrator.cfg) + str(narrator.cfg)
    for key in KEYS.values():
        assert key not in text


def test_models_without_a_key_or_base_url_are_skipped_and_the_template_narrates() -> None:
    cfg = NarratorConfig.model_validate({
        "models": [{"name": "gpt", "model": "openai/gpt-4o-mini", "api_key": ""},
                   {"name": "llama", "model": "ollama_chat/llama3.1"}],
        "routes": {"narrative": ["gpt", "llama"]}})
    narrator = llm.LLMNarrator(model_router.ModelRouter(cfg, Metrics()))
    assert narrator.router is None and narrator.describe().startswith("template")
    assert asyncio.run(narrator(_facts())).narrator == "template"


def test_litellm_mock_response_runs_through_the_router(stub, monkeypatch) -> None:
    facts = _facts()
    real = model_router._deployment

    def mocked(m, cfg):  # litellm answers itself: no HTTP at all
        d = real(m, cfg)
        d["litellm_params"]["mock_response"] = json.dumps(template.narrate(facts))
        return d

    monkeypatch.setattr(model_router, "_deployment", mocked)
    narrator, _ = _narrator(stub, ["gpt"])
    out = asyncio.run(narrator(facts))
    assert out.narrator == "openai/gpt-4o-mini" and out.grounded and stub.calls("openai") == 0


def test_a_route_naming_an_unknown_model_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="not in models"):
        NarratorConfig.model_validate({"models": [], "routes": {"narrative": ["nope"]}})
