"""The configured language models behind litellm's Router: routes, budget, metrics, secrets.

Every model call of stage 3 (narratives, dashboard specs) goes through one `ModelRouter`:
the Router does per-model timeouts, retries, rate limits and cooldowns; the daily budget
comes from litellm's cost tracking; provider errors are logged with every configured key
scrubbed (providers echo them back). litellm is imported with its bundled cost map and
offline mode, so neither the import nor a call reaches the network for metadata.
"""

from __future__ import annotations

import os

# Before litellm is imported: its bundled cost map and headers, never a fetch at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS", "True")

import asyncio  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

from processor.config.components import ModelEntry, NarratorConfig  # noqa: E402
from processor.insights.text import safe_name  # noqa: E402
from processor.telemetry import Metrics  # noqa: E402

log = logging.getLogger("otel_insights.models")


@dataclass
class Answer:
    """One model's reply and what it cost."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class Budget:
    """USD spent per UTC day; spent when a response's cost is known."""

    def __init__(self, daily_usd: float) -> None:
        self.daily_usd = daily_usd
        self.day = ""
        self.spent = 0.0

    def _roll(self) -> None:
        today = time.strftime("%Y-%m-%d", time.gmtime())
        if today != self.day:
            self.day, self.spent = today, 0.0

    def left(self) -> float:
        self._roll()
        return max(0.0, self.daily_usd - self.spent)

    def spend(self, usd: float) -> None:
        self._roll()
        self.spent += usd


class ModelRouter:
    """The usable models of `processors.narrator` (a hosted one needs its key, a local one its
    base URL) behind one litellm Router, one daily budget and one set of metrics."""

    def __init__(self, cfg: NarratorConfig, metrics: Metrics) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.budget = Budget(cfg.daily_budget_usd)
        self.usable = {m.name: m for m in cfg.models if _usable(m)}
        self._secrets = [m.api_key.get_secret_value() for m in cfg.models if m.api_key.get_secret_value()]
        self.router: Any = None
        if any(self.route(task) for task in cfg.routes):
            import litellm
            from litellm import Router

            litellm.suppress_debug_info = True
            logging.getLogger("LiteLLM").setLevel(logging.ERROR)  # our own line says what failed
            self.router = Router(model_list=[_deployment(m, cfg) for m in self.usable.values()],
                                 num_retries=cfg.retries, timeout=cfg.timeout.seconds)
        self.metrics.set("otel_insights_llm_budget_remaining_usd", self.budget.left())

    def route(self, task: str) -> list[str]:
        """The usable models of a task's route, in order (the fallbacks)."""
        return [n for n in self.cfg.routes.get(task, ()) if n in self.usable]  # type: ignore[call-overload]

    def describe(self, task: str) -> str:
        names = self.route(task)
        if not names:
            return "no model configured with its key or base URL"
        return " -> ".join(self.usable[n].model for n in names)

    def spent(self) -> bool:
        """Whether today's budget is gone (then say so once per request)."""
        if self.budget.left() > 0:
            return False
        self.metrics.inc("otel_insights_llm_fallbacks_total", reason="budget")
        log.warning("models: the daily budget of %.2f USD is spent; rules and templates take over until "
                    "00:00 UTC", self.cfg.daily_budget_usd)
        return True

    async def ask(self, entry: ModelEntry, convo: list[dict[str, str]],
                  response_format: dict[str, Any]) -> Answer | None:
        """One request through the Router: (text, prompt tokens, completion tokens, USD), or
        None when the model failed (one error line, key scrubbed)."""
        import litellm

        t0 = time.perf_counter()
        try:
            resp = await asyncio.wait_for(
                self.router.acompletion(model=entry.name, messages=convo, response_format=response_format,
                                        temperature=0, max_tokens=self.cfg.max_tokens),
                timeout=self.cfg.timeout.seconds * (self.cfg.retries + 1) + 1)
        except Exception as exc:  # provider errors, timeouts, rate limits: next model
            outcome = "timeout" if isinstance(exc, (asyncio.TimeoutError, litellm.Timeout)) else "error"
            self.metrics.inc("otel_insights_llm_requests_total", model=entry.model, outcome=outcome)
            log.error("model %s failed (%s): %s", entry.model, type(exc).__name__, self._scrub(str(exc)))
            return None
        finally:
            self.metrics.observe("otel_insights_llm_request_seconds", time.perf_counter() - t0, model=entry.model)
        self.metrics.inc("otel_insights_llm_requests_total", model=entry.model, outcome="ok")
        text = str(resp.choices[0].message.content or "")
        usage = getattr(resp, "usage", None)
        p_tok = int(getattr(usage, "prompt_tokens", 0) or 0)
        c_tok = int(getattr(usage, "completion_tokens", 0) or 0)
        try:
            usd = float(litellm.completion_cost(completion_response=resp) or 0.0)
        except Exception:  # a model litellm has no price for, and none configured
            usd = 0.0
        self.budget.spend(usd)
        self.metrics.inc("otel_insights_llm_tokens_total", p_tok, model=entry.model, kind="prompt")
        self.metrics.inc("otel_insights_llm_tokens_total", c_tok, model=entry.model, kind="completion")
        self.metrics.inc("otel_insights_llm_cost_usd_total", usd, model=entry.model)
        self.metrics.set("otel_insights_llm_budget_remaining_usd", self.budget.left())
        return Answer(text, p_tok, c_tok, usd)

    def _scrub(self, text: str) -> str:
        """An error line without any configured key (providers echo them back)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return safe_name(text.splitlines()[0] if text else "", 300)




def response_format(entry: ModelEntry, name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema where litellm says the provider takes one (ollama takes it as `format`),
    else JSON mode."""
    import litellm

    try:
        structured = litellm.supports_response_schema(entry.model)
    except Exception:
        structured = False
    if structured or entry.model.startswith(("ollama", "ollama_chat")):
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}}
    return {"type": "json_object"}


def _usable(m: ModelEntry) -> bool:
    """A model can be called: local ones need a base URL, hosted ones a key."""
    local = m.model.split("/", 1)[0] in ("ollama", "ollama_chat", "hosted_vllm", "lm_studio")
    return bool(m.api_base) if local else bool(m.api_key.get_secret_value())


def _deployment(m: ModelEntry, cfg: NarratorConfig) -> dict[str, Any]:
    params: dict[str, Any] = {"model": m.model, "timeout": cfg.timeout.seconds}
    if m.api_key.get_secret_value():
        params["api_key"] = m.api_key.get_secret_value()
    if m.api_base:
        params["api_base"] = m.api_base
    if m.rpm:
        params["rpm"] = m.rpm
    if m.input_cost_per_token is not None:
        params["input_cost_per_token"] = m.input_cost_per_token
    if m.output_cost_per_token is not None:
        params["output_cost_per_token"] = m.output_cost_per_token
    return {"model_name": m.name, "litellm_params": params}
