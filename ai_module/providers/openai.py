"""OpenAI-compatible chat completions (`POST {base_url}/chat/completions`).

One pooled `httpx.AsyncClient` serves a whole run. The same code serves OpenAI,
Azure OpenAI, vLLM, Ollama, LM Studio, OpenRouter, Together and Groq: they
differ in base URL, key variable, auth header and structured-output support,
all set by `ai_module.providers.presets` and `AIConfig.options`.

Options read from `AIConfig.options`:
    response_format  "json_schema" | "json_object" | "none" (default: the preset's)
    strict           send `strict: true` with the schema (default: only when the
                     schema meets OpenAI's strict-mode rules)
    auth_header      "authorization" (Bearer, default) or "api-key" (Azure)
    api_version      Azure's `api-version` query parameter
    headers          extra, non-secret request headers
    extra_body       provider-specific fields merged into every request body
    transport        "aiohttp" (default) or "httpx": which connection pool sends
                     the requests (see `ai_module.providers.transport`)
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import httpx
import orjson

from ai_module.errors import (
    AuthenticationError,
    ConfigError,
    ErrorBodyError,
    InvalidRequestError,
    OutputError,
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
from ai_module.providers.presets import ProviderPreset
from ai_module.providers.ratelimit_headers import (
    exhausted_reset_seconds,
    retry_after_seconds,
)
from ai_module.providers.transport import pool_settings, transient_error

__all__ = ["OpenAIProvider", "build_body", "parse_completion", "strict_compatible"]

logger = logging.getLogger(__name__)

_USER_AGENT = f"aimod python-httpx/{httpx.__version__}"
# Sent with the schema when the provider is not asked for structured output.
JSON_INSTRUCTION = (
    "Reply with one JSON value and nothing else: no code fence, no comments. "
    "It must match this JSON Schema:\n"
)


# The options this provider reads: any other is a misspelling.
_OPTIONS = frozenset(
    {
        "response_format",
        "strict",
        "auth_header",
        "api_version",
        "headers",
        "extra_body",
        "transport",
    }
)


class OpenAIProvider:
    """Chat completions over HTTP for every OpenAI-compatible service."""

    def __init__(self, cfg: Any, preset: ProviderPreset) -> None:
        self.name = cfg.provider
        options = dict(preset.options)
        options.update(cfg.options or {})
        check_options(self.name, options, _OPTIONS)
        self.response_format = str(
            options.get("response_format", preset.response_format)
        )
        if self.response_format not in {"json_schema", "json_object", "none"}:
            raise ConfigError(
                f"invalid options.response_format {self.response_format!r}: use "
                "json_schema, json_object or none"
            )
        self.strict = options.get("strict")
        self.extra_body = dict(options.get("extra_body") or {})

        base_url = cfg.base_url
        if not base_url and cfg.provider == "openai":
            base_url = os.environ.get("OPENAI_BASE_URL")
        base_url = base_url or preset.base_url
        if not base_url:
            raise ConfigError(_no_base_url(cfg.provider))
        self.base_url = base_url.rstrip("/")

        headers = {"content-type": "application/json", "accept": "application/json"}
        headers.update(
            {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
        )
        key = cfg.api_key()
        self._secret = key.encode() if key else None
        if key:
            if str(options.get("auth_header", "authorization")).lower() == "api-key":
                headers["api-key"] = key
            else:
                headers["authorization"] = f"Bearer {key}"
        params = {}
        if options.get("api_version"):
            params["api-version"] = str(options["api_version"])

        limits, timeout, transport = pool_settings(
            cfg, options.get("transport"), self.base_url
        )
        # Built once: parsing the URL and merging headers for every request
        # cost more CPU than the rest of the request path together.
        self._url = httpx.URL(self.base_url + "/chat/completions", params=params)
        self._headers = httpx.Headers(
            {
                "host": self._url.netloc.decode("ascii"),
                "user-agent": _USER_AGENT,
                "accept-encoding": "gzip, deflate",
                **headers,
            }
        )
        self._extensions = {"timeout": timeout.as_dict()}
        self._strict_by_schema: dict[int, tuple[Any, bool]] = {}
        # With aimod's aiohttp transport, requests go to the transport
        # directly. httpx.AsyncClient would add redirect, cookie and auth
        # handling that these calls do not use, at about 0.1 ms of CPU per
        # request. With httpx's own transport the client stays, because the
        # client applies the proxy variables of the environment.
        self._transport = transport
        self._client = httpx.AsyncClient(
            timeout=timeout,
            limits=limits,
            transport=self._transport,
            follow_redirects=False,
        )

    def _strict_for(self, schema: Any) -> bool:
        if self.strict is not None:
            return bool(self.strict)
        cached = self._strict_by_schema.get(id(schema))
        # The schema object is kept in the cache, so its id is not reused.
        if cached is None or cached[0] is not schema:
            cached = (schema, strict_compatible(schema))
            self._strict_by_schema[id(schema)] = cached
        return cached[1]

    async def chat(self, request: ChatRequest) -> ChatResponse:
        strict = (
            self._strict_for(request.output_schema)
            if request.output_schema is not None
            else self.strict
        )
        content = orjson.dumps(
            build_body(request, self.response_format, strict, self.extra_body)
        )
        # A request given a stream takes its headers as they are, where
        # `content=` would make httpx look up and set Host and Content-Length
        # (12 µs against 3 µs per request).
        headers = self._headers.copy()
        headers["content-length"] = str(len(content))
        http_request = httpx.Request(
            "POST",
            self._url,
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions=self._extensions,
        )
        try:
            if self._transport is not None:
                response = await self._transport.handle_async_request(http_request)
            else:
                response = await self._client.send(http_request)
        except httpx.TransportError as exc:
            raise transient_error(exc, self.base_url) from None
        return parse_completion(
            response.status_code,
            response.headers,
            redact_secret(response.content, self._secret),
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _no_base_url(provider: str) -> str:
    import difflib

    from ai_module.providers.presets import PRESETS

    message = f"provider {provider!r} has no default base URL"
    if provider not in PRESETS:
        close = difflib.get_close_matches(provider, sorted(PRESETS), n=1)
        hint = f"Did you mean {close[0]!r}? " if close else ""
        return (
            f"unknown provider {provider!r}. {hint}Known providers: "
            f"{', '.join(sorted(PRESETS))}. Any other OpenAI-compatible service "
            "works under another name with base_url set."
        )
    return (
        f"{message}: set base_url (for Azure: https://RESOURCE.openai.azure.com/"
        "openai/deployments/DEPLOYMENT)"
    )


def build_body(
    request: ChatRequest,
    response_format: str = "json_schema",
    strict: bool | None = None,
    extra_body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the JSON body of one chat completions request."""
    messages = request.messages
    schema = request.output_schema
    body: dict[str, Any] = {"model": request.model}
    if schema is not None and not _root_is_object(schema):
        # Both response formats make the model return an object, so another
        # root (an array, a string) is asked for in the instructions.
        response_format = "none"
    if schema is not None and response_format != "json_schema":
        messages = _with_json_instruction(messages, schema)
    body["messages"] = messages
    body.update(request.generation)
    if schema is not None and response_format == "json_schema":
        use_strict = strict_compatible(schema) if strict is None else bool(strict)
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": request.schema_name,
                "schema": schema,
                "strict": use_strict,
            },
        }
    elif schema is not None and response_format == "json_object":
        body["response_format"] = {"type": "json_object"}
    if extra_body:
        body.update(extra_body)
    return body


def _root_is_object(schema: dict[str, Any]) -> bool:
    kind = schema.get("type")
    return kind == "object" or (kind is None and "properties" in schema)


def _with_json_instruction(
    messages: list[dict[str, str]], schema: dict[str, Any]
) -> list[dict[str, str]]:
    instruction = JSON_INSTRUCTION + json.dumps(schema, ensure_ascii=False)
    if messages and messages[0]["role"] == "system":
        first = {
            "role": "system",
            "content": messages[0]["content"] + "\n\n" + instruction,
        }
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def strict_compatible(schema: Any) -> bool:
    """Tell whether a schema meets OpenAI's strict structured-output rules.

    Strict mode needs every object to list all its properties as required and to
    forbid additional properties; a free-form object (like nl2cypher's `params`)
    does not qualify, and the schema is then sent with `strict: false`.
    """
    if isinstance(schema, list):
        return all(strict_compatible(item) for item in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        properties = schema.get("properties") or {}
        if schema.get("additionalProperties") is not False:
            return False
        if set(schema.get("required") or []) != set(properties):
            return False
    return all(
        strict_compatible(value)
        for key, value in schema.items()
        if key not in {"enum", "const", "default", "examples", "required"}
    )


def parse_completion(status: int, headers: Any, content: bytes) -> ChatResponse:
    """Turn one HTTP response into a ChatResponse or raise the matching error."""
    if status != 200:
        raise _status_error(status, headers, content)
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise TransientError(
            "provider returned HTTP 200 with a body that is not JSON: "
            + _excerpt(content),
            status=status,
        ) from None
    if not isinstance(data, dict):
        raise TransientError(f"unexpected completion body: {_excerpt(content)}")
    if data.get("error"):
        raise _error_body(data["error"], status)

    try:
        choice = data["choices"][0]
        message = choice.get("message") or {}
        text = message.get("content")
        finish_reason = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise TransientError(
            f"completion has no choices[0].message: {_excerpt(content)}", status=status
        ) from None
    if text is None:
        refusal = message.get("refusal")
        if refusal:
            raise OutputError(f"the model refused: {refusal}")
        text = ""
    return ChatResponse(
        text=text,
        usage=_usage(data.get("usage")),
        finish_reason=finish_reason,
        pause_for=exhausted_reset_seconds(headers),
    )


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    try:
        return Usage(
            int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0)
        )
    except (TypeError, ValueError):
        return None


def _status_error(status: int, headers: Any, content: bytes) -> ProviderError:
    message = f"HTTP {status}: {_error_message(content)}"
    if status == 429 and _error_code(content) == "insufficient_quota":
        return QuotaExceededError(
            message.rstrip(".") + ". Add credit or raise the account's limit, "
            "then run the same command again.",
            status=status,
        )
    if status == 429:
        return RateLimitedError(message, retry_after=retry_after_seconds(headers))
    if status in (401, 403):
        return AuthenticationError(
            as_sentence(message) + " Check the API key variable and its permissions.",
            status=status,
        )
    if status in (400, 404, 413, 422):
        return InvalidRequestError(message, status=status)
    if status == 503:
        error = RateLimitedError(
            message, retry_after=retry_after_seconds(headers), status=503
        )
        if error.retry_after is not None:
            return error
    return TransientError(message, status=status)


def _error_body(error: Any, status: int) -> ProviderError:
    if isinstance(error, dict):
        text = str(error.get("message") or error)
        kind = f"{error.get('type', '')} {error.get('code', '')}".lower()
    else:
        text, kind = str(error), ""
    message = f"provider returned HTTP 200 with an error object: {text}"
    if "auth" in kind or "api_key" in kind:
        return AuthenticationError(message, status=status)
    if "quota" in kind:
        return QuotaExceededError(message, status=status)
    if "invalid_request" in kind or "not_found" in kind:
        return InvalidRequestError(message, status=status)
    if "rate" in kind:
        return RateLimitedError(message, status=status)
    return ErrorBodyError(message, status=status)


def _error_code(content: bytes) -> str:
    """Return the error object's code or type (OpenAI's body), or ''."""
    try:
        error = orjson.loads(content).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    return str(error.get("code") or error.get("type") or "")


def _error_message(content: bytes) -> str:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        return _excerpt(content)
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message") or data["error"])
    return _excerpt(content)


def _excerpt(content: bytes, limit: int = 200) -> str:
    text = content[:limit].decode("utf-8", "replace")
    return repr(text + ("…" if len(content) > limit else ""))
