"""An offline provider that answers deterministic JSON valid against the schema.

It lets a user try a task with no key and no network. The answer is derived
from a hash of the request, so the same request always gets the same answer.

Options read from `AIConfig.options`:
    latency       seconds to wait before answering (default 0)
    failure_rate  share of calls, 0 to 1, that raise TransientError (default 0)
    seed          changes which calls fail and what the answers say
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import orjson

from ai_module._schema_sample import sample_instance
from ai_module.errors import ConfigError, TransientError
from ai_module.providers.base import ChatRequest, ChatResponse, Usage, check_options

__all__ = ["MockProvider"]


class MockProvider:
    """Answers every request offline; see the module docstring for options."""

    def __init__(self, cfg: Any) -> None:
        self.name = cfg.provider
        options = cfg.options or {}
        check_options(
            self.name, options, frozenset({"latency", "failure_rate", "seed"})
        )
        try:
            self.latency = float(options.get("latency", 0.0))
            self.failure_rate = float(options.get("failure_rate", 0.0))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid mock option: {exc}") from None
        if self.latency < 0 or not 0 <= self.failure_rate <= 1:
            raise ConfigError(
                "invalid mock options: latency must be >= 0 and failure_rate "
                f"between 0 and 1 (got {self.latency}, {self.failure_rate})"
            )
        self.seed = str(options.get("seed", ""))
        self._random = random.Random(self.seed)

    async def chat(self, request: ChatRequest) -> ChatResponse:
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.failure_rate and self._random.random() < self.failure_rate:
            raise TransientError("mock provider: injected failure")

        digest = hashlib.sha256(
            orjson.dumps([self.seed, request.model, request.messages])
        ).hexdigest()
        schema = request.output_schema or {"type": "object"}
        text = orjson.dumps(sample_instance(schema, digest)).decode()
        prompt_chars = sum(len(m["content"]) for m in request.messages)
        usage = Usage(
            prompt_tokens=prompt_chars // 4 + 1, completion_tokens=len(text) // 4 + 1
        )
        return ChatResponse(text=text, usage=usage, finish_reason="stop")

    async def aclose(self) -> None:
        return None
