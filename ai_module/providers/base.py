"""The provider interface: one chat request in, text, usage and finish reason out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "Provider",
    "Usage",
    "check_options",
    "redact_secret",
]


@dataclass(frozen=True)
class Usage:
    """Token counts the provider reported for one call."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class ChatRequest:
    """One chat call: messages plus what shapes the answer.

    `output_schema` is the JSON Schema the answer must match; a provider sends it
    as structured-output format where the service supports that.
    """

    model: str
    messages: list[dict[str, str]]
    generation: dict[str, Any] = field(default_factory=dict)
    output_schema: dict[str, Any] | None = None
    schema_name: str = "answer"


@dataclass
class ChatResponse:
    """The completion text with its usage (None when not reported).

    `pause_for` is set when the provider reported an exhausted rate-limit budget
    (`x-ratelimit-remaining-*: 0`): seconds until it resets.
    """

    text: str
    usage: Usage | None
    finish_reason: str | None
    pause_for: float | None = None


class Provider(Protocol):
    """Interface the kernel calls. Errors are `ai_module.errors.ProviderError`s."""

    name: str

    async def chat(self, request: ChatRequest) -> ChatResponse: ...

    async def aclose(self) -> None: ...


def redact_secret(content: bytes, secret: bytes | None) -> bytes:
    """Replace the API key in a response body before any error message quotes it.

    Some providers and proxies echo the key they were sent in a 401 message,
    and that message would otherwise reach logs, results and the store.
    """
    if secret and secret in content:
        return content.replace(secret, b"[redacted]")
    return content


def check_options(provider: str, options: Any, known: frozenset[str]) -> None:
    """Raise ConfigError for an option the provider does not read.

    A misspelt option would otherwise be ignored without a word, and the run
    would go ahead with the default.
    """
    import difflib

    from ai_module.errors import ConfigError

    unknown = sorted(str(name) for name in options if name not in known)
    if not unknown:
        return
    close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"unknown option options.{unknown[0]} for provider {provider!r}.{hint} "
        f"Its options: {', '.join(sorted(known))}."
    )
