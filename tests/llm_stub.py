"""A local HTTP server speaking the OpenAI chat completions, Anthropic messages and Ollama
chat APIs, so tests run litellm's real provider adapters and HTTP client against it.

What it answers is up to the test: ``reply(provider, request_json) -> str`` gives the
assistant text (a JSON narrative), and ``behaviour[provider]`` can make a provider fail
(``"error"``: HTTP 500, ``"auth"``: HTTP 401 echoing the key it got, ``"slow"``: answer
after ``slow_s``). Every request is recorded.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from processor.localstack import free_port


class LLMStub:
    def __init__(self, reply: Callable[[str, dict[str, Any]], str]) -> None:
        self.reply = reply
        self.behaviour: dict[str, str] = {}
        self.slow_s = 5.0
        self.requests: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.port = free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self, provider: str) -> int:
        return sum(1 for p, _, _ in self.requests if p == provider)

    def __enter__(self) -> LLMStub:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _serve(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/api/chat", self._ollama)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    async def _take(self, provider: str, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body = await request.json()
        self.requests.append((provider, body, dict(request.headers)))
        mode = self.behaviour.get(provider, "ok")
        if mode == "error":
            return body, web.json_response({"error": {"message": "upstream overloaded", "type": "server_error"}},
                                           status=500)
        if mode == "auth":
            key = request.headers.get("Authorization", "") or request.headers.get("x-api-key", "")
            return body, web.json_response({"error": {"message": f"invalid api key: {key}",
                                                      "type": "authentication_error"}}, status=401)
        if mode == "slow":
            await asyncio.sleep(self.slow_s)
        return body, None

    async def _openai(self, request: web.Request) -> web.Response:
        body, failed = await self._take("openai", request)
        if failed is not None:
            return failed
        text = self.reply("openai", body)
        return web.json_response({
            "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "stub"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 300, "total_tokens": 1200}})

    async def _anthropic(self, request: web.Request) -> web.Response:
        body, failed = await self._take("anthropic", request)
        if failed is not None:
            return failed
        text = self.reply("anthropic", body)
        tools = [t.get("name") for t in body.get("tools") or []]
        if tools:  # structured output through a forced tool call, as litellm asks for it
            content: list[dict[str, Any]] = [{"type": "tool_use", "id": "toolu_stub", "name": tools[0],
                                              "input": json.loads(text)}]
            stop = "tool_use"
        else:
            content, stop = [{"type": "text", "text": text}], "end_turn"
        return web.json_response({
            "id": "msg_stub", "type": "message", "role": "assistant", "model": body.get("model", "stub"),
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 800, "output_tokens": 250}})

    async def _ollama(self, request: web.Request) -> web.Response:
        body, failed = await self._take("ollama", request)
        if failed is not None:
            return failed
        text = self.reply("ollama", body)
        return web.json_response({
            "model": body.get("model", "stub"), "created_at": "2026-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": text}, "done": True, "done_reason": "stop",
            "prompt_eval_count": 700, "eval_count": 200})


def instructed_reply(provider: str, body: dict[str, Any]) -> str:
    """What a model that follows the narrator's instructions writes: only names and numbers
    of the facts in the prompt, as shown there."""
    user = [m for m in body.get("messages", []) if m.get("role") == "user"][-1]
    content = user["content"]
    text = content if isinstance(content, str) else " ".join(c.get("text", "") for c in content)
    facts = json.loads(text.split("<facts>", 1)[1].split("</facts>", 1)[0])
    metrics = sorted(facts["metrics"], key=lambda m: -m["score"])
    top = metrics[0]
    origin = facts["suspected_origin_ranking"][0] if facts["suspected_origin_ranking"] else None
    summary = (f"{top['metric']} of `{top['name']}` was {top['shown']['observed']}, expected "
               f"{top['shown']['expected']}, since {facts['incident']['first_window']}.")
    if origin:
        summary += f" Suspected origin: `{origin['name']}`."
    return json.dumps({
        "summary": summary,
        "observed": [{"text": f"`{m['name']}` {m['metric']} was {m['shown']['observed']} against "
                              f"{m['shown']['expected']}.", "facts": [m["id"]]} for m in metrics[:4]],
        "possible_causes": [{"text": f"Possibly a problem in `{origin['name']}` itself.",
                             "facts": origin["facts"]}] if origin else [],
        "suggested_checks": [f"Check `{origin['name']}` first."] if origin else [],
    })
