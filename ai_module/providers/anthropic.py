"""Anthropic's Messages API (`POST {base_url}/v1/messages`).

The Messages API differs from chat completions in ways that matter here: the
system prompt is a top-level field, `max_tokens` is required, the key goes in an
`x-api-key` header with an `anthropic-version` header, the answer is a list of
content blocks, and a cut-off answer has `stop_reason: "max_tokens"`.

Options read from `AIConfig.options`:
    response_format     "json_schema" sends the schema as `output_config.format`
                        (Anthropic's structured outputs); "none" puts it in the
                        system prompt. Default: json_schema when the schema is
                        closed (every object lists all its properties as required
                        and forbids others), otherwise none.
    default_max_tokens  `max_tokens` when neither the run nor the task sets one
                        (default 4096)
    anthropic_version   the `anthropic-version` header (default "2023-06-01")
    headers             extra, non-secret request headers
    transport           "aiohttp" (default) or "httpx": the connection pool
                        (see `ai_module.providers.transport`)
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import orjson

from ai_module.errors import (
    AuthenticationError,
    ConfigError,
    ErrorBodyError,
    InvalidRequestError,
    ProviderError,
    QuotaExceededError,
    RateLimitedError,
    TransientError,
    as_sentence,
)
from ai_module.providers.base import (
    ChatRequest,
    ChatResponse,
    Usage,
    check_options,
    redact_secret,
)
from ai_module.providers.openai import JSON_INSTRUCTION, strict_compatible
from ai_module.providers.presets import ProviderPreset
from ai_module.providers.ratelimit_headers import retry_after_seconds
from ai_module.providers.transport import pool_settings, transient_error

__all__ = ["AnthropicProvider", "build_messages_body", "parse_message"]

# Anthropic's stop reasons, in the terms the kernel uses for chat completions.
_FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


# The options this provider reads: any other is a misspelling.
_OPTIONS = frozenset(
    {
        "response_format",
        "default_max_tokens",
        "anthropic_version",
        "headers",
        "transport",
    }
)


class AnthropicProvider:
    """Messages API over one pooled `httpx.AsyncClient` per run."""

    def __init__(self, cfg: Any, preset: ProviderPreset) -> None:
        self.name = cfg.provider
        options = dict(preset.options)
        options.update(cfg.options or {})
        check_options(self.name, options, _OPTIONS)
        self.response_format = options.get("response_format")
        if self.response_format not in (None, "json_schema", "none"):
            raise ConfigError(
                f"invalid options.response_format {self.response_format!r} for "
                "anthropic: use json_schema or none"
            )
        self.default_max_tokens = int(options.get("default_max_tokens", 4096))
        base_url = cfg.base_url
        if not base_url and cfg.provider == "anthropic":
            base_url = os.environ.get("ANTHROPIC_BASE_URL")
        base_url = (base_url or preset.base_url or "").rstrip("/")
        if not base_url:
            raise ConfigError("provider anthropic needs base_url")
        # The official SDK's base URL has no /v1, but OpenAI habits add one.
        base_url = base_url.removesuffix("/v1")
        self.base_url = base_url

        headers = {
            "content-type": "application/json",
            "anthropic-version": str(options.get("anthropic_version", "2023-06-01")),
        }
        headers.update(
            {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
        )
        key = cfg.api_key()
        self._secret = key.encode() if key else None
        if key:
            headers["x-api-key"] = key
        # aiohttp's pool unless options.transport=httpx or a proxy variable
        # applies (see ai_module.providers.transport).
        limits, timeout, transport = pool_settings(
            cfg, options.get("transport"), self.base_url
        )
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=timeout,
            limits=limits,
            transport=transport,
        )

    async def chat(self, request: ChatRequest) -> ChatResponse:
        body = build_messages_body(
            request, self.response_format, self.default_max_tokens
        )
        try:
            response = await self._client.post(
                "/v1/messages", content=orjson.dumps(body)
            )
        except httpx.TransportError as exc:
            raise transient_error(exc, self.base_url) from None
        content = redact_secret(response.content, self._secret)
        return parse_message(response.status_code, response.headers, content)

    async def aclose(self) -> None:
        await self._client.aclose()


def build_messages_body(
    request: ChatRequest,
    response_format: str | None = None,
    default_max_tokens: int = 4096,
) -> dict[str, Any]:
    """Build the JSON body of one Messages API request."""
    system_parts = [m["content"] for m in request.messages if m["role"] == "system"]
    messages = [m for m in request.messages if m["role"] != "system"]
    schema = request.output_schema
    mode = response_format
    if mode is None:
        mode = (
            "json_schema"
            if schema is not None and strict_compatible(schema)
            else "none"
        )
    if schema is not None and mode == "none":
        system_parts.append(JSON_INSTRUCTION + json.dumps(schema, ensure_ascii=False))

    generation = dict(request.generation)
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": int(generation.pop("max_tokens", None) or default_max_tokens),
        "messages": messages,
    }
    if system_parts:
        body["system"] = "\n\n".join(system_parts)
    stop = generation.pop("stop", None)
    if stop:
        body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    generation.pop("seed", None)  # the Messages API has no seed
    body.update(generation)
    if schema is not None and mode == "json_schema":
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    return body


def parse_message(status: int, headers: Any, content: bytes) -> ChatResponse:
    """Turn one Messages API response into a ChatResponse or raise."""
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    if status != 200 or (isinstance(data, dict) and data.get("type") == "error"):
        raise _error(status, headers, data, content)
    if not isinstance(data, dict) or not isinstance(data.get("content"), list):
        raise TransientError(f"unexpected Messages API body: {content[:200]!r}")

    text = "".join(
        block.get("text", "")
        for block in data["content"]
        if isinstance(block, dict) and block.get("type") == "text"
    )
    usage = data.get("usage")
    parsed_usage = None
    if isinstance(usage, dict):
        parsed_usage = Usage(
            int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
        )
    stop_reason = data.get("stop_reason")
    return ChatResponse(
        text=text,
        usage=parsed_usage,
        finish_reason=_FINISH_REASONS.get(stop_reason, stop_reason),
    )


def _error(status: int, headers: Any, data: Any, content: bytes) -> ProviderError:
    error = data.get("error") if isinstance(data, dict) else None
    kind = str(error.get("type", "")) if isinstance(error, dict) else ""
    message = str(error.get("message", "")) if isinstance(error, dict) else ""
    message = f"HTTP {status}: {message or repr(content[:200])}"
    if "credit balance" in message.lower():
        return QuotaExceededError(
            message.rstrip(".") + ". Add credit, then run the same command again.",
            status=status,
        )
    if status == 429 or kind == "rate_limit_error":
        return RateLimitedError(message, retry_after=retry_after_seconds(headers))
    if status in (401, 403) or kind in ("authentication_error", "permission_error"):
        return AuthenticationError(
            as_sentence(message) + " Check the API key variable and its permissions.",
            status=status,
        )
    if status in (400, 404, 413, 422) or kind in (
        "invalid_request_error",
        "not_found_error",
    ):
        return InvalidRequestError(message, status=status)
    if status == 200:
        return ErrorBodyError(message, status=status)
    # 500 api_error and 529 overloaded_error pass with time.
    return TransientError(message, status=status)
