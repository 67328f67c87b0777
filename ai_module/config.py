"""`AIConfig`: the settings of one batch, built by hand or from the Hydra config."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ai_module.errors import ConfigError
from ai_module.providers.presets import preset_for
from ai_module.secret_names import ENV_NAME, find_secrets

__all__ = ["AIConfig", "GENERATION_FIELDS"]

GENERATION_FIELDS = ("temperature", "max_tokens", "top_p", "seed", "stop")


class AIConfig(BaseModel):
    """Provider, model, concurrency, limits, timeouts and generation settings.

    Generation fields left as None fall back to the task's `generation` defaults,
    then to the provider's own defaults. The API key is never a field: only the
    name of the environment variable that holds it.
    """

    # Hidden inputs: pydantic's messages would otherwise repeat a mistyped key.
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, hide_input_in_errors=True
    )

    provider: str = Field("openai", min_length=1, description="provider protocol")
    model: str = Field("gpt-4o-mini", min_length=1)
    parallelism: int = Field(8, ge=1, le=4096, description="requests in flight")
    rps: float | None = Field(None, gt=0, description="request starts per second")
    burst: int = Field(1, ge=1, description="starts allowed ahead of the rps pace")
    tokens_per_minute: int | None = Field(None, gt=0)
    connect_timeout: float = Field(
        10.0, gt=0, allow_inf_nan=False, description="seconds"
    )
    read_timeout: float = Field(120.0, gt=0, allow_inf_nan=False, description="seconds")
    max_retries: int = Field(6, ge=0, description="retries per call after the first")
    max_repairs: int = Field(2, ge=0, description="re-asks after invalid output")
    retry_max_wait: float = Field(
        60.0, gt=0, allow_inf_nan=False, description="backoff cap, seconds"
    )
    max_consecutive_failures: int = Field(
        20, ge=1, description="stop the run after this many provider failures in a row"
    )
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    stop: list[str] | str | None = None
    base_url: str | None = None
    api_key_env: str | None = Field(None, description="name of the key's variable")
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _reject_secrets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        secrets = find_secrets(data)
        if secrets:
            provider = str(data.get("provider", "openai"))
            env = data.get("api_key_env")
            if not (isinstance(env, str) and ENV_NAME.fullmatch(env)):
                env = preset_for(provider).key_env
            variable = env or "the variable named by api_key_env"
            raise ValueError(
                f"{', '.join(map(repr, secrets))} not accepted: API keys are read "
                f"from the environment only. Set {variable} instead."
            )
        return data

    @field_validator("api_key_env")
    @classmethod
    def _check_env_name(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME.fullmatch(value):
            # The value is not repeated: it may be the key itself.
            raise ValueError(
                "api_key_env takes the name of an environment variable (capital "
                "letters, digits and underscores, such as OPENAI_API_KEY), not the key"
            )
        return value

    def generation(self) -> dict[str, Any]:
        """Return the generation parameters that are set, by name."""
        values = {name: getattr(self, name) for name in GENERATION_FIELDS}
        return {name: value for name, value in values.items() if value is not None}

    def key_env(self) -> str | None:
        """Return the name of the API key variable, or None for keyless providers."""
        return self.api_key_env or preset_for(self.provider).key_env

    def api_key(self, *, required: bool = True) -> str | None:
        """Read the API key from the environment.

        Raises ConfigError naming the variable when it is unset and the provider
        needs a key (local servers such as Ollama do not).
        """
        env = self.key_env()
        if env is None:
            return None
        value = os.environ.get(env)
        if value:
            return value
        if required and (self.api_key_env or preset_for(self.provider).key_required):
            raise ConfigError(
                f"missing API key: environment variable {env} is not set. "
                f"Export it (export {env}=...) or choose another variable with "
                "api_key_env=NAME."
            )
        return None
