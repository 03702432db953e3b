"""Small Kubernetes client helpers shared by the testbed, its tests and the benchmarks."""

from __future__ import annotations

import os

from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.config import new_client_from_config

__all__ = ["api_status", "new_api_client"]


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
