"""Providers: one module per wire protocol behind the `Provider` interface."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ai_module.providers.base import ChatRequest, ChatResponse, Provider, Usage
from ai_module.providers.presets import PRESETS, preset_for

if TYPE_CHECKING:
    from ai_module.config import AIConfig

__all__ = [
    "PRESETS",
    "ChatRequest",
    "ChatResponse",
    "Provider",
    "Usage",
    "create_provider",
    "preset_for",
]


def create_provider(cfg: AIConfig) -> Provider:
    """Build the provider that `cfg.provider` names, reading its key now.

    A missing key raises ConfigError here, before any request is sent.
    """
    preset = preset_for(cfg.provider)
    if preset.protocol == "mock":
        from ai_module.providers.mock import MockProvider

        return MockProvider(cfg)
    if preset.protocol == "anthropic":
        from ai_module.providers.anthropic import AnthropicProvider

        return AnthropicProvider(cfg, preset)
    from ai_module.providers.openai import OpenAIProvider

    return OpenAIProvider(cfg, preset)
