"""Reading the wait a provider asks for from response headers."""

from __future__ import annotations

import pytest

from ai_module.providers.ratelimit_headers import (
    exhausted_reset_seconds,
    parse_duration,
    retry_after_seconds,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("120ms", 0.12),
        ("1h2m3.5s", 3723.5),
        ("0.5", 0.5),
        ("", None),
        ("soon", None),
        ("5x", None),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds else seconds)


def test_retry_after_prefers_milliseconds():
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5


def test_retry_after_http_date_in_past_is_zero():
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_exhausted_budget_only_when_remaining_zero():
    headers = {
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "2s",
    }
    assert exhausted_reset_seconds(headers) is None
    headers["x-ratelimit-remaining-requests"] = "0"
    assert exhausted_reset_seconds(headers) == 2.0
