"""An httpx transport that sends requests over aiohttp's connection pool.

Providers keep httpx as their HTTP API: requests, responses, timeouts and
errors are httpx's. httpx's own connection pool, though, costs milliseconds of
CPU per request at 64 requests in flight, which caps a batch at a few hundred
requests per second on one core. aiohttp's pool and HTTP parser cost a small
fraction of that (bench/README.md has the figures).

The transport reads every response body whole before returning it, because
chat completions are small JSON documents and the kernel needs all of them.
Content decoding (gzip and the like) stays with httpx: aiohttp hands over the
bytes as they came.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.request
from typing import Any

import aiohttp
import httpx

__all__ = ["AiohttpTransport", "create_transport"]

logger = logging.getLogger(__name__)

TRANSPORTS = ("aiohttp", "httpx")


class AiohttpTransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncBaseTransport` backed by one `aiohttp.ClientSession`.

    The session is created on first use, inside the event loop that sends the
    request, and again if a later request comes from another loop (as when
    `run_batch_sync` is called twice). Timeouts come from the request's
    `timeout` extension, as httpx sets them: connect, read (per socket read)
    and pool (waiting for a free connection).
    """

    def __init__(
        self,
        limits: httpx.Limits,
        ssl_context: ssl.SSLContext | bool = True,
    ) -> None:
        self._limits = limits
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}

    def _session_for_loop(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._limits.max_connections or 0,
                limit_per_host=0,
                keepalive_timeout=self._limits.keepalive_expiry or 5.0,
                ssl=self._ssl,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # httpx decodes Content-Encoding itself, from the raw bytes.
                auto_decompress=False,
                trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
            self._loop = loop
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        values = request.extensions.get("timeout") or {}
        key = (values.get("connect"), values.get("read"), values.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            timeout = aiohttp.ClientTimeout(
                total=None, connect=pool, sock_connect=connect, sock_read=read
            )
            self._timeouts[key] = timeout
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session_for_loop()
        try:
            content = request.content
        except httpx.RequestNotRead:
            content = await request.aread()
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=content or None,
                allow_redirects=False,
                timeout=self._timeout(request),
            ) as response:
                body = await response.read()
                status = response.status
                headers = response.raw_headers
                reason = response.reason
        except aiohttp.ClientError as exc:
            raise _to_httpx_error(exc, request) from exc
        except asyncio.TimeoutError as exc:
            raise httpx.ReadTimeout(
                "timed out waiting for the response", request=request
            ) from exc
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if reason:
            extensions["reason_phrase"] = reason.encode("latin-1", "replace")
        response = httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(body),
            request=request,
            extensions=extensions,
        )
        # Built with content=body, a Response costs about 12 µs (measured with
        # httpx 0.29), mostly to encode and re-read a body that is already in
        # memory; built on a stream, 2 µs. httpx keeps a read body in
        # `_content`, which `.content` and `aread()` return.
        # NOTE: `_content` is private to httpx; tests/test_transport.py fails
        # if a new httpx stores the body elsewhere.
        response._content = body
        return response

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


def _to_httpx_error(
    exc: aiohttp.ClientError, request: httpx.Request
) -> httpx.TransportError:
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.ClientOSError):
        return httpx.ReadError(message, request=request)
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx.RemoteProtocolError(message, request=request)
    return httpx.NetworkError(message, request=request)


def _proxied(url: str) -> bool:
    """Tell whether a proxy variable of the environment applies to `url`."""
    parsed = httpx.URL(url)
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parsed.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(parsed.host)


def transient_error(exc: httpx.TransportError, base_url: str) -> Exception:
    """Describe a failed HTTP exchange as the TransientError the kernel retries."""
    from ai_module.errors import TransientError

    if isinstance(exc, httpx.TimeoutException):
        return TransientError(f"request timed out ({type(exc).__name__})")
    return TransientError(
        f"connection to {base_url} failed: {type(exc).__name__}: {exc}"
    )


def pool_settings(
    cfg: Any, transport_name: Any, base_url: str
) -> tuple[httpx.Limits, httpx.Timeout, httpx.AsyncBaseTransport | None]:
    """Return the pool limits, timeouts and transport a provider's client uses.

    Raises ConfigError for an `options.transport` that is not one of TRANSPORTS.
    """
    from ai_module.errors import ConfigError

    if transport_name is not None and transport_name not in TRANSPORTS:
        raise ConfigError(
            f"invalid options.transport {transport_name!r}: use "
            f"{' or '.join(TRANSPORTS)}"
        )
    limits = httpx.Limits(
        max_connections=cfg.parallelism,
        max_keepalive_connections=cfg.parallelism,
    )
    timeout = httpx.Timeout(
        connect=cfg.connect_timeout,
        read=cfg.read_timeout,
        write=cfg.read_timeout,
        pool=None,
    )
    return limits, timeout, create_transport(transport_name, base_url, limits)


def create_transport(
    name: str | None, base_url: str, limits: httpx.Limits
) -> httpx.AsyncBaseTransport | None:
    """Return the transport for `options.transport`, or None for httpx's own.

    The default is aiohttp, except when an HTTP(S)_PROXY or ALL_PROXY variable
    applies to `base_url`: httpx's own transport honours those and aiohttp's
    pool is not given them.
    """
    if name is None:
        if _proxied(base_url):
            logger.info(
                "a proxy variable applies to %s: using httpx's transport", base_url
            )
            return None
        name = "aiohttp"
    if name == "httpx":
        return None
    # httpx's default verification (certifi's CA bundle), for https base URLs.
    ssl_context = httpx.create_ssl_context() if base_url.startswith("https:") else True
    return AiohttpTransport(limits, ssl_context)
