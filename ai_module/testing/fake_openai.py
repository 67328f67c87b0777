"""Fake OpenAI-compatible chat-completions server for tests and benchmarks.

Run it as ``python -m ai_module.testing.fake_openai --port 0 [options]``. Once bound
to 127.0.0.1 it prints ``LISTENING 127.0.0.1 <port>`` on stdout and serves until
SIGTERM or SIGINT.

HTTP/1.1 is parsed by a small ``asyncio.Protocol`` with keep-alive, pipelining and
chunked request bodies, because benchmarks compare clients against this server and
it must not be the bottleneck.

Endpoints:

* ``POST /v1/chat/completions`` (or ``/chat/completions``): a chat completion whose
  content is JSON. With ``response_format.type == "json_schema"`` the content is a
  sample of that schema, otherwise ``{"answer": "<seed>"}``. The seed is the SHA-256
  hex digest of the ``messages`` array serialized with sorted keys, so equal
  messages get equal content.
* ``POST /v1/messages``: the same, in the shape of Anthropic's Messages API. The
  request is translated to a chat request (``x-api-key`` for the bearer token,
  ``output_config.format.schema`` for ``response_format``), goes through the same
  faults, and the answer is translated back: content blocks, ``stop_reason``, and
  ``{"type": "error", ...}`` bodies.
* ``GET /_stats``: counters, see ``ServerState.stats``.
* ``GET /_requests``: every chat request received, when ``record_bodies`` is on.
* ``GET /_config``, ``POST /_config``: read or change the settings of
  ``FakeSettings`` at run time. Changed keys take effect from the next request.
* ``POST /_reset``: clear counters and records, and restore ``fail_first``, the
  ``script``, the rate bucket and the RNG seed to their configured state.

A chat request gets the first of these that applies: the next ``script`` item, a
401 or 400 for a bad key or body, ``status_always``, ``fail_first``, the rate
limit, then the random faults drawn in the order of ``FAULT_NAMES``. Latency
applies to every chat response except the 429 of the rate limit, so that a
client's wait after that 429 comes from Retry-After alone.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import hashlib
import http
import logging
import math
import random
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from ai_module._schema_sample import SchemaSampleError, SchemaSampler

__all__ = [
    "ANSWER_SCHEMA",
    "FAULT_NAMES",
    "FakeSettings",
    "ServerState",
    "main",
    "serve",
    "start_server",
]

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
CHAT_PATHS = frozenset({"/v1/chat/completions", "/chat/completions"})
MESSAGES_PATHS = frozenset({"/v1/messages"})
# Random faults, in the order in which they are drawn for each chat request.
FAULT_NAMES = (
    "p_drop",
    "p_hang",
    "p500",
    "p429",
    "p_error_body",
    "p_garbage",
    "p_fenced",
    "p_prose",
    "p_truncated",
    "p_invalid_schema",
)
# Schema of the content sent when the request has no json_schema response format.
ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
    "additionalProperties": False,
}
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
# Distinct response-format schemas whose samplers are kept.
SAMPLER_CACHE_SIZE = 256
_SCRIPT_KEYS = frozenset(
    {"status", "headers", "body", "content", "finish_reason", "drop", "hang", "delay"}
)


# -- Settings ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FakeSettings:
    """Fault and latency settings. Field names are the ``/_config`` keys.

    The CLI flag of a field is its name with dashes, e.g. ``--latency-jitter``.
    Times are in seconds and probabilities in [0, 1].
    """

    latency: float = 0.0
    latency_jitter: float = 0.0
    rate_limit: float | None = None
    """Requests per second added to the token bucket. None turns rate limiting off."""
    burst: float | None = None
    """Bucket capacity in requests. None means ``max(1, rate_limit)``."""
    p500: float = 0.0
    p429: float = 0.0
    retry_after: float = 1.0
    """``Retry-After`` seconds sent with the 429 of ``p429`` and ``status_always``."""
    p_error_body: float = 0.0
    p_garbage: float = 0.0
    p_fenced: float = 0.0
    p_prose: float = 0.0
    p_truncated: float = 0.0
    p_invalid_schema: float = 0.0
    p_drop: float = 0.0
    p_hang: float = 0.0
    fail_first: int = 0
    """Number of chat requests, from start, reset or this setting, that get 500."""
    script: tuple[Mapping[str, Any], ...] = ()
    """Per-request overrides, consumed one per chat request.

    Item keys: ``status``, ``headers``, ``body`` (JSON, or a string sent as
    text/plain), ``content``, ``finish_reason``, ``drop``, ``hang`` and ``delay``
    (seconds, in place of latency). An item with ``drop``, ``hang``, ``body`` or a
    status other than 200 decides the response before the API key is checked.
    Other items skip the fault settings and use ``content`` or the normal sample.
    """
    status_always: int | None = None
    api_key: str | None = None
    """Required bearer token. None accepts any non-empty token."""
    seed: int | None = None
    """Seed of the fault and jitter RNG. None seeds it from the OS."""
    record_starts: bool = False
    record_bodies: bool = False

    def with_changes(self, changes: Mapping[str, Any]) -> FakeSettings:
        """Return a copy with ``changes`` applied after validating every key.

        Raises ValueError naming the key on an unknown key or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)}. Valid settings are "
                f"{', '.join(sorted(known))}"
            )
        values = {key: _validate_setting(key, value) for key, value in changes.items()}
        return dataclasses.replace(self, **values)

    def to_json(self) -> dict[str, Any]:
        """Return the settings as JSON-ready data, with the API key masked."""
        data = dataclasses.asdict(self)
        data["script"] = [dict(item) for item in self.script]
        if self.api_key is not None:
            data["api_key"] = "***"
        return data


def _validate_setting(key: str, value: Any) -> Any:
    if key in ("latency", "latency_jitter", "retry_after"):
        return _number(key, value, minimum=0.0)
    if key in FAULT_NAMES:
        probability = _number(key, value, minimum=0.0)
        if probability > 1.0:
            raise ValueError(f"invalid {key}: {value!r} is not a probability in [0, 1]")
        return probability
    if key in ("rate_limit", "burst"):
        if value is None:
            return None
        number = _number(key, value, minimum=0.0)
        if number == 0.0:
            raise ValueError(f"invalid {key}: must be positive, or null to turn it off")
        return number
    if key == "fail_first":
        return _integer(key, value, minimum=0)
    if key == "status_always":
        if value is None:
            return None
        status = _integer(key, value, minimum=100)
        if status > 599:
            raise ValueError(f"invalid status_always: {value!r} is not an HTTP status")
        return status
    if key == "seed":
        return None if value is None else _integer(key, value, minimum=None)
    if key == "api_key":
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError("invalid api_key: expected a non-empty string or null")
        return value
    if key in ("record_starts", "record_bodies"):
        if not isinstance(value, bool):
            raise ValueError(f"invalid {key}: expected true or false, got {value!r}")
        return value
    if key == "script":
        return _validate_script(value)
    raise AssertionError(f"setting {key} has no validation")


def _number(key: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"invalid {key}: expected a number, got {value!r}")
    if not math.isfinite(value) or value < minimum:
        raise ValueError(f"invalid {key}: {value!r} must be finite and >= {minimum}")
    return float(value)


def _integer(key: str, value: Any, minimum: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid {key}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"invalid {key}: {value!r} must be >= {minimum}")
    return value


def _validate_script(value: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"invalid script: expected a list of objects, got {value!r}")
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise ValueError(f"invalid script[{index}]: expected an object")
        unknown = sorted(set(item) - _SCRIPT_KEYS)
        if unknown:
            raise ValueError(
                f"invalid script[{index}]: unknown key(s) {', '.join(unknown)}. Valid "
                f"keys are {', '.join(sorted(_SCRIPT_KEYS))}"
            )
        status = item.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int):
            raise ValueError(f"invalid script[{index}].status: {status!r}")
        if not 100 <= status <= 599:
            raise ValueError(f"invalid script[{index}].status: {status!r}")
        headers = item.get("headers", {})
        if not isinstance(headers, Mapping):
            raise ValueError(f"invalid script[{index}].headers: expected an object")
        delay = item.get("delay")
        if delay is not None:
            _number(f"script[{index}].delay", delay, minimum=0.0)
        if "content" in item and not isinstance(item["content"], str):
            raise ValueError(f"invalid script[{index}].content: expected a string")
    return tuple(dict(item) for item in value)


# -- Server state --------------------------------------------------------------------


class ServerState:
    """Settings, counters and records shared by all connections of one server."""

    def __init__(self, settings: FakeSettings) -> None:
        self.settings = settings
        self.connections: set[_HttpProtocol] = set()
        self._samplers: collections.OrderedDict[bytes, SchemaSampler] = (
            collections.OrderedDict()
        )
        self._completion_counter = 0
        self.reset()

    def reset(self) -> None:
        """Clear counters and records, and restore the configured fault state."""
        self.requests = 0
        self.ok = 0
        self.status_counts: collections.Counter[str] = collections.Counter()
        self.dropped = 0
        self.hung = 0
        self.client_closed = 0
        self.faults: collections.Counter[str] = collections.Counter()
        # Requests still open on connections keep counting until they end.
        self.in_flight = sum(c.pending for c in self.connections)
        self.max_in_flight = self.in_flight
        self.starts: list[float] = []
        self.bodies: list[dict[str, Any]] = []
        self.fail_first_remaining = self.settings.fail_first
        self.script: collections.deque[Mapping[str, Any]] = collections.deque(
            self.settings.script
        )
        self.rng = random.Random(self.settings.seed)
        self._refill_bucket()

    def configure(self, changes: Mapping[str, Any]) -> FakeSettings:
        """Apply validated ``changes``. Raises ValueError on an invalid setting."""
        self.settings = self.settings.with_changes(changes)
        if "fail_first" in changes:
            self.fail_first_remaining = self.settings.fail_first
        if "script" in changes:
            self.script = collections.deque(self.settings.script)
        if "seed" in changes:
            self.rng = random.Random(self.settings.seed)
        if "rate_limit" in changes or "burst" in changes:
            self._refill_bucket()
        return self.settings

    def stats(self) -> dict[str, Any]:
        """Return the counters served by ``GET /_stats``.

        ``requests`` counts chat requests received, ``ok`` the 200 completions
        sent (not error bodies), and ``status_counts`` every chat response sent,
        by status. ``dropped`` and ``hung`` count injected faults, and
        ``client_closed`` counts requests whose client went away before the
        response. ``faults`` counts the random faults drawn, by name (a
        ``p_garbage`` completion is also in ``ok``). ``starts`` contains the
        ``time.time()`` arrival of each chat request while ``record_starts`` is on.
        """
        return {
            "requests": self.requests,
            "ok": self.ok,
            "status_counts": dict(self.status_counts),
            "dropped": self.dropped,
            "hung": self.hung,
            "client_closed": self.client_closed,
            "faults": dict(self.faults),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "starts": self.starts,
        }

    def sampler_for(self, schema: Any) -> SchemaSampler:
        """Return a cached sampler for ``schema``, keyed by its sorted-key JSON."""
        key = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
        sampler = self._samplers.get(key)
        if sampler is None:
            sampler = SchemaSampler(schema)
            self._samplers[key] = sampler
            if len(self._samplers) > SAMPLER_CACHE_SIZE:
                self._samplers.popitem(last=False)
        else:
            self._samplers.move_to_end(key)
        return sampler

    def next_completion_id(self) -> str:
        self._completion_counter += 1
        return f"chatcmpl-fake{self._completion_counter:010d}"

    # -- Rate limiting (token bucket) --

    def _refill_bucket(self) -> None:
        rate = self.settings.rate_limit
        self._capacity = self.settings.burst or max(1.0, rate or 0.0)
        self._tokens = self._capacity
        self._bucket_time = time.monotonic()

    def take_token(self) -> tuple[bool, list[tuple[str, str]], float]:
        """Take one request from the bucket.

        Returns whether a token was available, the ``x-ratelimit-*`` headers and
        the seconds until the next token.
        """
        rate = self.settings.rate_limit
        assert rate is not None
        now = time.monotonic()
        tokens = min(self._capacity, self._tokens + (now - self._bucket_time) * rate)
        self._bucket_time = now
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._tokens = tokens
        wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / rate
        headers = [
            ("x-ratelimit-limit-requests", str(math.floor(self._capacity))),
            ("x-ratelimit-remaining-requests", str(math.floor(tokens))),
            (
                "x-ratelimit-reset-requests",
                _format_duration((self._capacity - tokens) / rate),
            ),
        ]
        return allowed, headers, wait


def _format_duration(seconds: float) -> str:
    """Format like OpenAI's rate-limit reset headers: ``120ms``, ``1.5s``, ``6m0s``."""
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms"
    if seconds < 60.0:
        return f"{round(seconds, 3):g}s"
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}m{round(rest, 3):g}s"


def _format_seconds(seconds: float) -> tuple[str, str]:
    """Return ``Retry-After`` seconds (fractional allowed) and ``retry-after-ms``."""
    milliseconds = max(1, math.ceil(seconds * 1000))
    return f"{milliseconds / 1000:g}", str(milliseconds)


# -- Responses -----------------------------------------------------------------------


@dataclasses.dataclass
class _Outcome:
    """Planned response to one chat request."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    content_type: str = "application/json"
    delay: float = 0.0
    drop: bool = False
    hang: bool = False
    completion: bool = False
    """Whether ``body`` is a real chat completion, counted in ``ok``."""


_REASONS = {status.value: status.phrase for status in http.HTTPStatus}


def _error_type(status: int) -> tuple[str, str | None]:
    if status == 401:
        return "invalid_request_error", "invalid_api_key"
    if status == 429:
        return "requests", "rate_limit_exceeded"
    if status >= 500:
        return "server_error", None
    return "invalid_request_error", None


def _error_body(status: int, message: str, code: str | None = None) -> bytes:
    error_type, default_code = _error_type(status)
    error = {
        "message": message,
        "type": error_type,
        "param": None,
        "code": code if code is not None else default_code,
    }
    return orjson.dumps({"error": error})


def _encode_response(
    status: int,
    body: bytes,
    headers: Sequence[tuple[str, str]],
    keep_alive: bool,
    content_type: str = "application/json",
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
    ]
    for name, value in headers:
        lines.append(f"{name}: {value}\r\n")
    if not keep_alive:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body


def _completion_body(
    state: ServerState,
    model: Any,
    content: str,
    finish_reason: str,
    prompt_bytes: int,
) -> bytes:
    completion_tokens = max(1, len(content) // 4)
    prompt_tokens = max(1, prompt_bytes // 4)
    return orjson.dumps(
        {
            "id": state.next_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": None,
                    },
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_fake",
        }
    )


def _wrong_type(value: Any) -> Any:
    if isinstance(value, str):
        return 12345
    if isinstance(value, bool) or value is None:
        return "not-a-boolean-or-null"
    if isinstance(value, int | float):
        return "not-a-number"
    if isinstance(value, list):
        return "not-an-array"
    return "not-an-object"


def _invalid_instance(value: Any) -> Any:
    """Build JSON that keeps the keys of ``value`` but gives each the wrong type.

    NOTE: a property schema without a ``type`` accepts the swapped value, so for a
    schema made only of such properties the result can still validate.
    """
    if isinstance(value, dict):
        if not value:
            return ["not", "an", "object"]
        return {key: _wrong_type(item) for key, item in value.items()}
    return {"unexpected": _wrong_type(value)}


class _ChatError(Exception):
    """Invalid chat request, rejected with ``status`` and an OpenAI error body."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _plan_chat(state: ServerState, headers: dict[str, str], body: bytes) -> _Outcome:
    """Decide the response to one chat request and update the fault state."""
    settings = state.settings
    outcome = _Outcome()
    if settings.latency or settings.latency_jitter:
        outcome.delay = settings.latency + state.rng.uniform(
            0.0, settings.latency_jitter
        )

    # Every chat request takes a token and carries the x-ratelimit-* headers, but a
    # missing token only turns into a 429 after the checks that come first.
    rate_limited, retry_wait = False, 0.0
    if settings.rate_limit is not None:
        allowed, rate_headers, retry_wait = state.take_token()
        outcome.headers.extend(rate_headers)
        rate_limited = not allowed

    script_item = state.script.popleft() if state.script else None
    if script_item is not None and _apply_script(script_item, outcome):
        return outcome

    try:
        _check_auth(settings, headers)
        request = _parse_chat_request(body)
    except _ChatError as error:
        return _error_outcome(outcome, error.status, error.message, error.code)

    if settings.status_always is not None and script_item is None:
        status = settings.status_always
        outcome = _error_outcome(
            outcome, status, f"status_always={status} is set on the fake server"
        )
        if status == 429:
            _add_retry_after(outcome, settings.retry_after)
        return outcome
    if state.fail_first_remaining > 0 and script_item is None:
        state.fail_first_remaining -= 1
        return _error_outcome(outcome, 500, "The server had an error (fail_first).")

    if rate_limited and script_item is None:
        outcome.delay = 0.0
        _add_retry_after(outcome, retry_wait)
        return _error_outcome(
            outcome,
            429,
            f"Rate limit reached: limit {settings.rate_limit:g} requests/s. "
            f"Please try again in {retry_wait:.3f}s.",
        )

    fault = None if script_item is not None else _draw_fault(state)
    return _completion_outcome(state, outcome, request, body, fault, script_item)


def _apply_script(item: Mapping[str, Any], outcome: _Outcome) -> bool:
    """Apply a script item. Returns True when it fully decides the response."""
    if "delay" in item:
        outcome.delay = float(item["delay"])
    outcome.headers.extend((str(k), str(v)) for k, v in item.get("headers", {}).items())
    if item.get("drop"):
        outcome.drop = True
        return True
    if item.get("hang"):
        outcome.hang = True
        return True
    status = item.get("status", 200)
    if "body" in item:
        outcome.status = status
        body = item["body"]
        if isinstance(body, str):
            outcome.body = body.encode()
            outcome.content_type = "text/plain; charset=utf-8"
        else:
            outcome.body = orjson.dumps(body)
        return True
    if status != 200:
        _error_outcome(outcome, status, f"scripted status {status}")
        return True
    return False


def _error_outcome(
    outcome: _Outcome, status: int, message: str, code: str | None = None
) -> _Outcome:
    outcome.status = status
    outcome.body = _error_body(status, message, code)
    return outcome


def _add_retry_after(outcome: _Outcome, seconds: float) -> None:
    retry_after, retry_after_ms = _format_seconds(seconds)
    outcome.headers.append(("Retry-After", retry_after))
    outcome.headers.append(("retry-after-ms", retry_after_ms))


def _check_auth(settings: FakeSettings, headers: dict[str, str]) -> None:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _ChatError(
            401,
            "Missing bearer authentication in header: send "
            "'Authorization: Bearer <api key>'.",
            "invalid_api_key",
        )
    if settings.api_key is not None and token != settings.api_key:
        raise _ChatError(
            401, "Incorrect API key provided to the fake server.", "invalid_api_key"
        )


def _parse_chat_request(body: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise _ChatError(400, f"invalid JSON in request body: {error}") from None
    if not isinstance(request, dict):
        raise _ChatError(400, "invalid request body: expected a JSON object")
    if not isinstance(request.get("messages"), list):
        raise _ChatError(400, "missing required parameter: 'messages' (an array)")
    if "model" not in request:
        raise _ChatError(400, "missing required parameter: 'model'")
    if request.get("stream"):
        raise _ChatError(400, "stream=true is not supported by the fake server")
    return request


def _draw_fault(state: ServerState) -> str | None:
    """Draw every fault independently in FAULT_NAMES order. The first hit wins."""
    settings = state.settings
    probabilities = [getattr(settings, name) for name in FAULT_NAMES]
    if not any(probabilities):
        return None
    random_value = state.rng.random
    hits = [
        name
        for name, p in zip(FAULT_NAMES, probabilities, strict=True)
        if random_value() < p
    ]
    if not hits:
        return None
    state.faults[hits[0]] += 1
    return hits[0]


def _completion_outcome(
    state: ServerState,
    outcome: _Outcome,
    request: dict[str, Any],
    body: bytes,
    fault: str | None,
    script_item: Mapping[str, Any] | None,
) -> _Outcome:
    if fault == "p_drop":
        outcome.drop = True
        return outcome
    if fault == "p_hang":
        outcome.hang = True
        return outcome
    if fault == "p500":
        return _error_outcome(outcome, 500, "The server had an error (injected p500).")
    if fault == "p429":
        _add_retry_after(outcome, state.settings.retry_after)
        return _error_outcome(outcome, 429, "Rate limit reached (injected p429).")
    if fault == "p_error_body":
        outcome.body = _error_body(500, "The server had an error (injected body).")
        return outcome

    seed = hashlib.sha256(
        orjson.dumps(request["messages"], option=orjson.OPT_SORT_KEYS)
    ).hexdigest()
    finish_reason = "stop"
    if script_item is not None and "content" in script_item:
        content = script_item["content"]
        finish_reason = script_item.get("finish_reason", "stop")
    else:
        try:
            value = _sample_content(state, request, seed)
        except _ChatError as error:
            return _error_outcome(outcome, error.status, error.message, error.code)
        content, finish_reason = _apply_content_fault(fault, value, seed)
        if script_item is not None:
            finish_reason = script_item.get("finish_reason", finish_reason)

    outcome.completion = True
    outcome.body = _completion_body(
        state, request.get("model"), content, finish_reason, len(body)
    )
    return outcome


def _sample_content(state: ServerState, request: dict[str, Any], seed: str) -> Any:
    response_format = request.get("response_format")
    if not isinstance(response_format, dict):
        return {"answer": seed}
    if response_format.get("type") != "json_schema":
        return {"answer": seed}
    json_schema = response_format.get("json_schema")
    schema = json_schema.get("schema") if isinstance(json_schema, dict) else None
    if not isinstance(schema, dict | bool):
        raise _ChatError(
            400, "missing required parameter: 'response_format.json_schema.schema'"
        )
    try:
        return state.sampler_for(schema).sample(seed)
    except SchemaSampleError as error:
        raise _ChatError(400, f"invalid response_format schema: {error}") from None


def _apply_content_fault(fault: str | None, value: Any, seed: str) -> tuple[str, str]:
    """Return the content and finish_reason for ``value`` under a content fault."""
    text = orjson.dumps(value).decode()
    if fault == "p_garbage":
        return f"I could not produce the requested output (request {seed[:8]}).", "stop"
    if fault == "p_fenced":
        return f"Here is the JSON you asked for:\n```json\n{text}\n```", "stop"
    if fault == "p_prose":
        return f"{text}\nLet me know if you need anything else.", "stop"
    if fault == "p_truncated":
        return text[: max(1, len(text) // 2)], "length"
    if fault == "p_invalid_schema":
        return orjson.dumps(_invalid_instance(value)).decode(), "stop"
    return text, "stop"


# -- HTTP protocol -------------------------------------------------------------------


class _HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 server connection: keep-alive, pipelined requests in order.

    At most one request per connection is handled at a time. Bytes of later
    pipelined requests wait in the buffer until the current response is sent.
    """

    def __init__(self, state: ServerState) -> None:
        self._state = state
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        # Parsed head of a request whose body is still arriving: (method, target,
        # version, headers, body offset, Content-Length or -1 for chunked).
        self._head: tuple[str, str, str, dict[str, str], int, int] | None = None
        self._continue_sent = False
        self._busy = False
        self._closed = False
        self._timer: asyncio.TimerHandle | None = None
        self.pending = 0
        """Chat requests of this connection that are counted in ``in_flight``."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._state.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pending:
            self._state.in_flight -= self.pending
            self._state.client_closed += self.pending
            self.pending = 0

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._busy:
            self._process_buffer()

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.close()

    def _process_buffer(self) -> None:
        while not self._busy and not self._closed:
            request = self._next_request()
            if request is None:
                return
            method, target, headers, body, keep_alive = request
            try:
                self._dispatch(method, target, headers, body, keep_alive)
            except Exception:
                logger.exception("unexpected error handling %s %s", method, target)
                self._send_error(500, "internal error in the fake server", False)

    def _next_request(
        self,
    ) -> tuple[str, str, dict[str, str], bytes, bool] | None:
        """Take one complete request off the buffer, or return None to wait."""
        buffer = self._buffer
        if self._head is None:
            header_end = buffer.find(b"\r\n\r\n")
            if header_end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    self._send_error(431, "request header fields too large", False)
                return None
            self._head = self._parse_head(bytes(buffer[:header_end]), header_end + 4)
            if self._head is None:
                return None
        method, target, version, headers, body_start, length = self._head

        if length >= 0:
            end = body_start + length
            complete = len(buffer) >= end
            body = bytes(buffer[body_start:end]) if complete else b""
        else:
            try:
                decoded = _decode_chunked(buffer, body_start)
            except ValueError as error:
                self._send_error(400, f"invalid chunked body: {error}", False)
                return None
            if decoded is None and len(buffer) - body_start > MAX_BODY_BYTES:
                self._send_error(413, f"body larger than {MAX_BODY_BYTES} bytes", False)
                return None
            complete = decoded is not None
            body, end = decoded if decoded is not None else (b"", 0)
        if not complete:
            if (
                not self._continue_sent
                and headers.get("expect", "").lower() == "100-continue"
            ):
                self._continue_sent = True
                self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
            return None

        del buffer[:end]
        self._head = None
        self._continue_sent = False
        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = connection != "close"
        else:
            keep_alive = connection == "keep-alive"
        return method, target, headers, body, keep_alive

    def _parse_head(
        self, head: bytes, body_start: int
    ) -> tuple[str, str, str, dict[str, str], int, int] | None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self._send_error(400, f"invalid request line {lines[0][:100]!r}", False)
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, separator, value = line.partition(":")
            if not separator:
                self._send_error(400, f"invalid header line {line[:100]!r}", False)
                return None
            headers[name.strip().lower()] = value.strip()

        transfer_encoding = headers.get("transfer-encoding")
        if transfer_encoding is not None:
            if transfer_encoding.lower() != "chunked":
                self._send_error(
                    501, f"Transfer-Encoding {transfer_encoding!r} not supported", False
                )
                return None
            return parts[0], parts[1], parts[2], headers, body_start, -1
        try:
            length = int(headers.get("content-length", "0") or 0)
        except ValueError:
            self._send_error(400, "invalid Content-Length header", False)
            return None
        if length < 0 or length > MAX_BODY_BYTES:
            self._send_error(413, f"body larger than {MAX_BODY_BYTES} bytes", False)
            return None
        return parts[0], parts[1], parts[2], headers, body_start, length

    def _dispatch(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        path = target.partition("?")[0]
        if path in CHAT_PATHS or path in MESSAGES_PATHS:
            if method != "POST":
                self._send_error(
                    405, f"method {method} not allowed on {path}", keep_alive
                )
                return
            self._handle_chat(headers, body, keep_alive, path in MESSAGES_PATHS)
            return
        handler = _CONTROL_ROUTES.get((method, path))
        if handler is None:
            known = any(route_path == path for _, route_path in _CONTROL_ROUTES)
            if known:
                self._send_error(
                    405, f"method {method} not allowed on {path}", keep_alive
                )
            else:
                self._send_error(404, f"unknown path {path}", keep_alive)
            return
        try:
            status, payload = handler(self._state, body)
        except ValueError as error:
            self._send_error(400, str(error), keep_alive)
            return
        self._write(_encode_response(status, orjson.dumps(payload), (), keep_alive))
        if not keep_alive:
            self.close()

    def _handle_chat(
        self,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
        anthropic: bool = False,
    ) -> None:
        state = self._state
        state.requests += 1
        if state.settings.record_starts:
            state.starts.append(time.time())
        if state.settings.record_bodies:
            state.bodies.append(_record_request(headers, body))
        self.pending += 1
        state.in_flight += 1
        if state.in_flight > state.max_in_flight:
            state.max_in_flight = state.in_flight

        if anthropic:
            headers, body = _chat_from_messages(headers, body)
        outcome = _plan_chat(state, headers, body)
        if anthropic:
            _messages_from_chat(outcome)
        if outcome.hang:
            state.hung += 1
            self._busy = True  # Nothing more is read or sent on this connection.
            return
        if outcome.drop:
            state.dropped += 1
            self._finish_request()
            self._closed = True
            assert self._transport is not None
            self._transport.close()
            return
        response = _encode_response(
            outcome.status,
            outcome.body,
            outcome.headers,
            keep_alive,
            outcome.content_type,
        )
        if outcome.delay > 0:
            self._busy = True
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(
                outcome.delay, self._send_delayed, outcome, response, keep_alive
            )
            return
        self._send_chat(outcome, response, keep_alive)

    def _send_delayed(
        self, outcome: _Outcome, response: bytes, keep_alive: bool
    ) -> None:
        self._timer = None
        if self._closed:
            return
        self._busy = False
        self._send_chat(outcome, response, keep_alive)
        if keep_alive and self._buffer:
            self._process_buffer()

    def _send_chat(self, outcome: _Outcome, response: bytes, keep_alive: bool) -> None:
        state = self._state
        self._finish_request()
        state.status_counts[str(outcome.status)] += 1
        if outcome.completion and outcome.status == 200:
            state.ok += 1
        self._write(response)
        if not keep_alive:
            self.close()

    def _finish_request(self) -> None:
        self.pending -= 1
        self._state.in_flight -= 1

    def _send_error(self, status: int, message: str, keep_alive: bool) -> None:
        logger.warning("rejected request with status %d: %s", status, message)
        body = _error_body(status, message)
        self._write(_encode_response(status, body, (), keep_alive))
        if not keep_alive:
            self._buffer.clear()
            self.close()
            self._closed = True

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._closed:
            self._transport.write(data)


def _chat_from_messages(
    headers: dict[str, str], body: bytes
) -> tuple[dict[str, str], bytes]:
    """Translate a Messages API request into the chat request it stands for."""
    headers = dict(headers)
    if "x-api-key" in headers:
        headers["authorization"] = f"Bearer {headers['x-api-key']}"
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        return headers, body
    if not isinstance(request, dict):
        return headers, body
    messages = list(request.get("messages") or [])
    if request.get("system"):
        messages.insert(0, {"role": "system", "content": request["system"]})
    chat: dict[str, Any] = {"model": request.get("model"), "messages": messages}
    schema = ((request.get("output_config") or {}).get("format") or {}).get("schema")
    if schema is not None:
        chat["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema},
        }
    return headers, orjson.dumps(chat)


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}


def _messages_from_chat(outcome: _Outcome) -> None:
    """Rewrite a planned chat response in the Messages API's shape, in place."""
    if outcome.drop or outcome.hang or not outcome.body:
        return
    try:
        data = orjson.loads(outcome.body)
    except orjson.JSONDecodeError:
        return  # garbage stays garbage
    if not isinstance(data, dict):
        return
    if isinstance(data.get("error"), dict):
        kind = _ANTHROPIC_ERRORS.get(outcome.status, "api_error")
        message = data["error"].get("message", "")
        error = {"type": "error", "error": {"type": kind, "message": message}}
        outcome.body = orjson.dumps(error)
        return
    if not data.get("choices"):
        return
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    message = {
        "id": "msg_" + str(data.get("id", "")).removeprefix("chatcmpl-"),
        "type": "message",
        "role": "assistant",
        "model": data.get("model"),
        "content": [{"type": "text", "text": choice["message"].get("content") or ""}],
        "stop_reason": _STOP_REASONS.get(choice.get("finish_reason"), "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.get("prompt_tokens", 0),
            "output_tokens": usage.get("completion_tokens", 0),
        },
    }
    outcome.body = orjson.dumps(message)


def _decode_chunked(buffer: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body that starts at ``start``.

    Returns the body and the offset just past it, or None while it is incomplete.
    Chunk extensions and trailers are skipped. Raises ValueError on bad framing.
    """
    chunks: list[bytes] = []
    position = start
    while True:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        size_text = bytes(buffer[position:line_end]).split(b";", 1)[0].strip()
        if not size_text or size_text.startswith((b"-", b"+")):
            raise ValueError(f"invalid chunk size {size_text[:20]!r}")
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ValueError(f"invalid chunk size {size_text[:20]!r}") from None
        position = line_end + 2
        if size == 0:
            break
        if len(buffer) < position + size + 2:
            return None
        chunks.append(bytes(buffer[position : position + size]))
        if buffer[position + size : position + size + 2] != b"\r\n":
            raise ValueError("chunk data not followed by CRLF")
        position += size + 2
    while True:  # Trailer fields, up to an empty line.
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        if line_end == position:
            return b"".join(chunks), position + 2
        position = line_end + 2


def _record_request(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = body.decode("utf-8", errors="replace")
    secret = {"authorization", "x-api-key", "api-key"}
    return {
        "body": parsed,
        "headers": {k: v for k, v in headers.items() if k not in secret},
        "has_auth": bool(secret & set(headers)),
    }


# -- Control endpoints ---------------------------------------------------------------


def _get_stats(state: ServerState, body: bytes) -> tuple[int, Any]:
    return 200, state.stats()


def _get_requests(state: ServerState, body: bytes) -> tuple[int, Any]:
    if not state.settings.record_bodies:
        raise ValueError(
            "request recording is off. Start the server with --record-bodies or "
            'POST /_config {"record_bodies": true}'
        )
    return 200, state.bodies


def _get_config(state: ServerState, body: bytes) -> tuple[int, Any]:
    return 200, _settings_payload(state)


def _post_config(state: ServerState, body: bytes) -> tuple[int, Any]:
    try:
        changes = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as error:
        raise ValueError(f"invalid JSON in /_config body: {error}") from None
    if not isinstance(changes, dict):
        raise ValueError("invalid /_config body: expected a JSON object of settings")
    state.configure(changes)
    logger.info("settings changed: %s", _settings_payload(state))
    return 200, _settings_payload(state)


def _post_reset(state: ServerState, body: bytes) -> tuple[int, Any]:
    state.reset()
    logger.info("counters reset")
    return 200, state.stats()


def _settings_payload(state: ServerState) -> dict[str, Any]:
    payload = state.settings.to_json()
    payload["script"] = [dict(item) for item in state.script]
    return payload


_CONTROL_ROUTES = {
    ("GET", "/_stats"): _get_stats,
    ("GET", "/_requests"): _get_requests,
    ("GET", "/_config"): _get_config,
    ("POST", "/_config"): _post_config,
    ("POST", "/_reset"): _post_reset,
}


# -- Entry points --------------------------------------------------------------------


async def start_server(
    settings: FakeSettings, port: int = 0
) -> tuple[asyncio.Server, ServerState]:
    """Start serving on 127.0.0.1:``port`` in the running loop (0 picks a port)."""
    state = ServerState(settings)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _HttpProtocol(state), HOST, port, backlog=1024
    )
    return server, state


async def serve(settings: FakeSettings, port: int = 0) -> None:
    """Serve until SIGTERM or SIGINT, printing the LISTENING line once bound."""
    server, state = await start_server(settings, port)
    bound_port = server.sockets[0].getsockname()[1]
    logger.info("listening on %s:%d, settings %s", HOST, bound_port, settings.to_json())
    print(f"LISTENING {HOST} {bound_port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    await stop.wait()

    logger.info(
        "stopping after %d chat requests, %d open connections",
        state.requests,
        len(state.connections),
    )
    server.close()
    for connection in list(state.connections):
        connection.close()
    await server.wait_closed()


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ai_module.testing.fake_openai",
        description="Fake OpenAI-compatible chat-completions server on 127.0.0.1.",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port, 0 picks a free one (default)"
    )
    parser.add_argument("--api-key", help="required bearer token (default: any)")
    parser.add_argument("--seed", type=int, help="seed of the fault and jitter RNG")
    parser.add_argument(
        "--log-level", default="INFO", help="logging level on stderr (default INFO)"
    )

    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds before each chat response (default 0)",
    )
    parser.add_argument(
        "--latency-jitter",
        type=float,
        default=0.0,
        help="extra latency in seconds, uniform in [0, jitter]",
    )
    parser.add_argument(
        "--rate-limit", type=float, help="token bucket refill, in requests/s"
    )
    parser.add_argument(
        "--burst", type=float, help="bucket capacity in requests (default: rate)"
    )

    fault_help = {
        "p500": "500 with an error body",
        "p429": "429 with Retry-After",
        "p_error_body": "200 whose body is an error object",
        "p_garbage": "content that is not JSON",
        "p_fenced": "content in a ```json fence after a sentence",
        "p_prose": "JSON content followed by a sentence",
        "p_truncated": "content cut in half, finish_reason length",
        "p_invalid_schema": "JSON content that does not match the schema",
        "p_drop": "closing the connection without a response",
        "p_hang": "never sending a response",
    }
    for name in FAULT_NAMES:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=float,
            default=0.0,
            help=f"probability of {fault_help[name]}",
        )
    parser.add_argument(
        "--retry-after",
        type=float,
        default=1.0,
        help="Retry-After seconds of injected 429s (default 1)",
    )

    parser.add_argument(
        "--fail-first",
        type=int,
        default=0,
        help="send 500 to the first N chat requests",
    )
    parser.add_argument(
        "--script",
        help="JSON list of per-request overrides, or @FILE containing it",
    )
    parser.add_argument(
        "--status-always", type=int, help="send this status to every chat request"
    )

    parser.add_argument(
        "--record-starts", action="store_true", help="record chat arrival times"
    )
    parser.add_argument(
        "--record-bodies", action="store_true", help="record chat request bodies"
    )
    return parser


def _settings_from_args(args: argparse.Namespace) -> FakeSettings:
    values = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(FakeSettings)
        if field.name != "script"
    }
    if args.script:
        text = args.script
        if text.startswith("@"):
            with open(text[1:], encoding="utf-8") as script_file:
                text = script_file.read()
        try:
            values["script"] = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            raise ValueError(f"invalid --script JSON: {error}") from None
    return FakeSettings().with_changes(values)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server from the command line. Returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s fake_openai: %(message)s",
    )
    try:
        settings = _settings_from_args(args)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    try:
        asyncio.run(serve(settings, args.port))
    except OSError as error:
        logger.error("failed to listen on %s:%d: %s", HOST, args.port, error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
