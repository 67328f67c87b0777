"""Run the fake OpenAI server in a subprocess, for tests and benchmarks."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import IO, Any

import httpx

__all__ = ["DEFAULT_API_KEY", "FakeOpenAIServer", "FakeServerError"]

# Bearer token that clients of the fake server send when no api_key flag is given.
DEFAULT_API_KEY = "sk-fake-test-key"
STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
_NOT_RUNNING = "the fake server is not running: call start() or use it in a with"


class FakeServerError(RuntimeError):
    """Error for a fake server that failed to start or to respond to a control call."""


class FakeOpenAIServer:
    """Context manager that runs ``python -m ai_module.testing.fake_openai``.

    Keyword arguments are server settings with their ``/_config`` names, e.g.
    ``FakeOpenAIServer(latency=0.05, p500=0.1, record_bodies=True)``. True booleans
    become bare flags, None and False are left out, lists and dicts are passed as
    JSON. The server's stderr goes to a temporary file rather than a pipe, so its
    logging cannot block on a full pipe, and the file's text is included in
    startup errors.
    """

    def __init__(self, **flags: Any) -> None:
        self.flags = flags
        self.api_key: str = flags.get("api_key") or DEFAULT_API_KEY
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._client: httpx.Client | None = None

    @property
    def pid(self) -> int:
        return self._require_process().pid

    @property
    def url(self) -> str:
        """Server root, e.g. ``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise FakeServerError(_NOT_RUNNING)
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-style base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.url}/v1"

    def command(self) -> list[str]:
        """Return the argv that starts the server with this object's flags."""
        argv = [sys.executable, "-m", "ai_module.testing.fake_openai", "--port", "0"]
        for name, value in self.flags.items():
            option = "--" + name.replace("_", "-")
            if value is None or value is False:
                continue
            if value is True:
                argv.append(option)
            elif isinstance(value, list | tuple | dict):
                argv += [option, json.dumps(value)]
            else:
                argv += [option, str(value)]
        return argv

    def start(self) -> FakeOpenAIServer:
        """Start the subprocess and wait for its LISTENING line."""
        if self._process is not None:
            raise FakeServerError("the fake server is already running")
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=_child_environment(),
        )
        try:
            self.port = self._wait_for_port()
        except BaseException:
            self.stop()
            raise
        self._client = httpx.Client(base_url=self.url, timeout=10.0)
        return self

    def stop(self) -> None:
        """Stop the subprocess: SIGTERM, then SIGKILL after 5 s."""
        if self._client is not None:
            self._client.close()
            self._client = None
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self.port = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- Control endpoints --

    def stats(self) -> dict[str, Any]:
        """Return ``GET /_stats``."""
        return self._call("GET", "/_stats")

    def requests(self) -> list[dict[str, Any]]:
        """Return ``GET /_requests``, which needs ``record_bodies=True``."""
        return self._call("GET", "/_requests")

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings at run time and return all settings."""
        return self._call("POST", "/_config", settings)

    def reset(self) -> dict[str, Any]:
        """Clear counters and records, and return the cleared stats."""
        return self._call("POST", "/_reset", {})

    def stderr_text(self) -> str:
        """Return what the server has written to stderr so far."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", errors="replace")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self._client is None:
            raise FakeServerError(_NOT_RUNNING)
        response = self._client.request(method, path, json=body)
        if response.status_code != 200:
            raise FakeServerError(
                f"{method} {path} failed with {response.status_code}: {response.text}"
            )
        return response.json()

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise FakeServerError(_NOT_RUNNING)
        return self._process

    def _wait_for_port(self) -> int:
        process = self._require_process()
        assert process.stdout is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        line = b""
        try:
            while not line.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._startup_error(
                        f"no LISTENING line within {STARTUP_TIMEOUT:g} s"
                    )
                if not selector.select(timeout=remaining):
                    continue
                chunk = os.read(process.stdout.fileno(), 1)
                if not chunk:
                    process.wait(timeout=STOP_TIMEOUT)
                    raise self._startup_error(
                        f"the server exited with status {process.returncode}"
                    )
                line += chunk
        finally:
            selector.close()
        words = line.decode("utf-8", errors="replace").split()
        if len(words) != 3 or words[0] != "LISTENING" or not words[2].isdigit():
            raise self._startup_error(f"unexpected first line {line!r}")
        return int(words[2])

    def _startup_error(self, reason: str) -> FakeServerError:
        command = " ".join(self.command())
        return FakeServerError(
            f"fake OpenAI server failed to start: {reason}.\ncommand: {command}\n"
            f"stderr:\n{self.stderr_text()}"
        )


def _child_environment() -> dict[str, str]:
    """Return the environment with this checkout first on PYTHONPATH.

    The child must import the same ``ai_module`` as the parent, even when the
    package is not installed and the parent found it through the working
    directory or pytest's path settings.
    """
    package_root = os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    )
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = package_root + (os.pathsep + existing if existing else "")
    return env
