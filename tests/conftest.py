"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ai_module.testing.server_process import FakeOpenAIServer


@pytest.fixture
def fake_server() -> Iterator[FakeOpenAIServer]:
    """Fake OpenAI server with default faults off and request recording on."""
    with FakeOpenAIServer(record_starts=True, record_bodies=True) as server:
        yield server


@pytest.fixture
def fake_server_factory() -> Iterator[Callable[..., FakeOpenAIServer]]:
    """Start fake servers with the given settings. All are stopped after the test."""
    servers: list[FakeOpenAIServer] = []

    def start(**flags: Any) -> FakeOpenAIServer:
        server = FakeOpenAIServer(**flags)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
