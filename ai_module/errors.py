"""The exceptions aimod raises, in one tree.

    AimodError
    ├── ConfigError                 invalid setting, missing API key
    ├── TaskError                   task file, template or schema
    │   ├── TaskNotFoundError
    │   └── RenderError             an item could not be rendered
    ├── InputError                  input file or record
    ├── ProviderError               one call to the provider failed
    │   ├── RateLimitedError        HTTP 429, carries the wait the provider asked for
    │   ├── TransientError          5xx, timeout, dropped connection
    │   │   └── ErrorBodyError      HTTP 200 whose body is an error object
    │   ├── AuthenticationError     401/403, never retried
    │   └── InvalidRequestError     400/404/422, never retried
    ├── OutputError                 the answer is unusable
    │   ├── InvalidJSONError
    │   ├── SchemaValidationError
    │   └── TruncatedOutputError    finish_reason == "length"
    ├── RunAbortedError             the item was not attempted because the run stopped
    └── StoreError

`run_batch` returns these in place of failed items. Each carries `attempts`, the
number of provider calls spent on the item (0 when none was made).
"""

from __future__ import annotations

__all__ = [
    "as_sentence",
    "AimodError",
    "AuthenticationError",
    "ConfigError",
    "ErrorBodyError",
    "InputError",
    "InvalidJSONError",
    "InvalidRequestError",
    "OutputError",
    "ProviderError",
    "RateLimitedError",
    "RenderError",
    "RunAbortedError",
    "SchemaValidationError",
    "StoreError",
    "TaskError",
    "TaskNotFoundError",
    "TransientError",
    "TruncatedOutputError",
]


class AimodError(Exception):
    """Base class of every error aimod raises on purpose."""

    attempts: int = 0


class ConfigError(AimodError):
    """A setting is invalid or missing (including a missing API key)."""


class TaskError(AimodError):
    """A task file, template or schema is invalid."""


class TaskNotFoundError(TaskError):
    """No task has the requested name."""


class RenderError(TaskError):
    """A template could not be rendered for one item (an undefined variable)."""


class InputError(AimodError):
    """An input file or one of its records is unusable."""


class ProviderError(AimodError):
    """A call to the provider failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RateLimitedError(ProviderError):
    """HTTP 429 from the provider; `retry_after` is the requested wait in seconds."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int = 429
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class TransientError(ProviderError):
    """A failure that may pass on retry: 5xx, timeout, dropped connection."""


class ErrorBodyError(TransientError):
    """The provider returned HTTP 200 with an error object instead of a completion."""


class AuthenticationError(ProviderError):
    """The provider rejected the API key. Retrying cannot help."""


class QuotaExceededError(ProviderError):
    """The account has no quota or credit left. Retrying cannot help."""


class InvalidRequestError(ProviderError):
    """The provider rejected the request itself (bad model name, bad parameter)."""


class OutputError(AimodError):
    """The model answered, but the answer cannot be used."""

    def __init__(self, message: str, *, text: str | None = None) -> None:
        super().__init__(message)
        self.text = text


class InvalidJSONError(OutputError):
    """The answer contains no parseable JSON value."""


class SchemaValidationError(OutputError):
    """The answer is JSON but does not match the task's output schema."""


class TruncatedOutputError(OutputError):
    """The answer was cut off by the token limit (finish_reason "length")."""


class ParseOutputError(OutputError):
    """The task's `parse_output` raised on a validated response (the cause)."""


class RunAbortedError(AimodError):
    """The item was not attempted because the run stopped early."""


class StoreError(AimodError):
    """The SQLite store cannot be opened, read or written."""


def as_sentence(text: object) -> str:
    """Return the text ending with exactly one full stop, to join messages.

    Provider and library messages sometimes end with a full stop and sometimes
    do not, and appending advice must not give '..'.
    """
    return str(text).rstrip().rstrip(".") + "."
