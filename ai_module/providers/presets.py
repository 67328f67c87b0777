"""Named providers: the wire protocol each speaks and its defaults.

Every OpenAI-compatible service is the `openai` protocol with another base URL,
key variable and structured-output mode, so adding one is a new entry here.
Anthropic's Messages API is the `anthropic` protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PRESETS", "ProviderPreset", "preset_for"]


@dataclass(frozen=True)
class ProviderPreset:
    """Defaults of one named provider; `AIConfig` fields override each of them."""

    protocol: str
    base_url: str | None = None
    key_env: str | None = None
    key_required: bool = True
    # "json_schema" sends the task's schema, "json_object" asks for any JSON,
    # "none" relies on the instructions in the prompt alone.
    response_format: str = "json_schema"
    options: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, ProviderPreset] = {
    "openai": ProviderPreset("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    "azure": ProviderPreset(
        "openai",
        None,
        "AZURE_OPENAI_API_KEY",
        options={"auth_header": "api-key", "api_version": "2024-10-21"},
    ),
    "anthropic": ProviderPreset(
        "anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY"
    ),
    "openrouter": ProviderPreset(
        "openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"
    ),
    "together": ProviderPreset(
        "openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY", True, "json_object"
    ),
    "groq": ProviderPreset(
        "openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY", True, "json_object"
    ),
    "ollama": ProviderPreset("openai", "http://localhost:11434/v1", None, False),
    "vllm": ProviderPreset("openai", "http://localhost:8000/v1", "VLLM_API_KEY", False),
    "lmstudio": ProviderPreset("openai", "http://localhost:1234/v1", None, False),
    "mock": ProviderPreset("mock", None, None, False, "json_schema"),
}


def preset_for(name: str) -> ProviderPreset:
    """Return the preset of a provider name; an unknown name speaks `openai`.

    An unknown name is accepted so that any OpenAI-compatible service works with
    `base_url` and `api_key_env` set by hand.
    """
    return PRESETS.get(name, ProviderPreset("openai", None, None, False))
