"""Small Kubernetes client helpers shared by the testbed, its tests and the benchmarks."""

from __future__ import annotations

import os

import aiohttp
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import new_client_from_config

__all__ = ["abort_stream", "api_status", "new_api_client"]


async def new_api_client(kubeconfig: str | os.PathLike[str]) -> ApiClient:
    """An API client for the current context of `kubeconfig`; the caller closes it."""
    client: ApiClient = await new_client_from_config(
        config_file=os.fspath(kubeconfig), persist_config=False
    )
    return client


def api_status(exc: BaseException) -> int | None:
    """The HTTP status of a failed API call, or None if `exc` is not an API error."""
    if isinstance(exc, ApiException):
        status: int | None = exc.status
        return status
    return None


def abort_stream(response: aiohttp.ClientResponse) -> None:
    """Close a streaming response (a watch) read only in part, its socket at once.

    aiohttp closes such a connection gracefully and does not wait for it: over TLS the
    close_notify goes out, and the socket is closed only once the server answers. An event loop
    that stops first (at the end of a test) leaves that socket open, and its transport is
    reported unclosed (a ResourceWarning, an error under ``filterwarnings = error``) whenever
    the garbage collector finds it, in some later test. A watch being stopped has nothing left
    to say, so its connection is aborted instead.
    """
    connection = response.connection
    transport = connection.transport if connection is not None else None
    if transport is not None:
        transport.abort()
    response.close()
