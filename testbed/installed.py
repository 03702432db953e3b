"""What an installed Deployment would run, taken from the cluster, for a controller process.

The fake kubelet runs no containers, so a test that installs the chart (or `kubectl apply -k`)
runs the controller as a local process instead, with what the installed Deployment gives its
container: the environment (plain values, and the pod's name and namespace from the downward
API) and the files of its volume mounts (Secrets, ConfigMaps, projected volumes of those, empty
directories), copied from the API into a directory of the test. An environment value that names
a path inside a mount is pointed at the copy.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s

from testbed.cluster import controller_container, controller_env_from_deployment


async def installed_deployment(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    """The Deployment as stored by the API server, as a plain (camelCase) dict."""
    apps: Any = k8s.AppsV1Api(api)
    model = await apps.read_namespaced_deployment(name, namespace)
    doc: dict[str, Any] = api.sanitize_for_serialization(model)
    return doc


def _items(
    data: Mapping[str, bytes], items: Iterable[Mapping[str, Any]] | None
) -> dict[str, bytes]:
    if not items:
        return dict(data)
    return {item["path"]: data[item["key"]] for item in items}


async def _secret(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, bytes]:
    core: Any = k8s.CoreV1Api(api)
    secret = await core.read_namespaced_secret(name, namespace)
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


async def _config_map(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, bytes]:
    core: Any = k8s.CoreV1Api(api)
    config_map = await core.read_namespaced_config_map(name, namespace)
    return {key: value.encode() for key, value in (config_map.data or {}).items()}


async def volume_files(
    api: k8s.ApiClient, namespace: str, volume: Mapping[str, Any]
) -> dict[str, bytes]:
    """The files a volume shows its container, by relative path."""
    if "emptyDir" in volume:
        return {}
    if "secret" in volume:
        source = volume["secret"]
        return _items(await _secret(api, namespace, source["secretName"]), source.get("items"))
    if "configMap" in volume:
        source = volume["configMap"]
        return _items(await _config_map(api, namespace, source["name"]), source.get("items"))
    if "projected" in volume:
        files: dict[str, bytes] = {}
        for source in volume["projected"]["sources"]:
            if "secret" in source:
                data = await _secret(api, namespace, source["secret"]["name"])
                files |= _items(data, source["secret"].get("items"))
            elif "configMap" in source:
                data = await _config_map(api, namespace, source["configMap"]["name"])
                files |= _items(data, source["configMap"].get("items"))
            else:
                raise ValueError(f"unsupported projected source {sorted(source)}")
        return files
    raise ValueError(f"unsupported volume {volume.get('name')}: {sorted(volume)}")


async def process_environment(
    api: k8s.ApiClient, deployment: Mapping[str, Any], *, pod_name: str, root: Path
) -> tuple[dict[str, str], dict[str, Path]]:
    """The controller container's environment, and where each of its mounts was copied."""
    namespace = deployment["metadata"]["namespace"]
    env = controller_env_from_deployment(deployment, namespace=namespace, pod_name=pod_name)
    spec = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec.get("volumes") or ()}
    mounts: dict[str, Path] = {}
    for mount in controller_container(deployment).get("volumeMounts") or ():
        local = root / str(mount["mountPath"]).strip("/")
        local.mkdir(parents=True, exist_ok=True)
        for relative, data in (await volume_files(api, namespace, volumes[mount["name"]])).items():
            (local / relative).parent.mkdir(parents=True, exist_ok=True)
            (local / relative).write_bytes(data)
        mounts[str(mount["mountPath"]).rstrip("/")] = local
    for name, value in env.items():
        for mount_path in sorted(mounts, key=len, reverse=True):
            if value == mount_path or value.startswith(mount_path + "/"):
                env[name] = str(mounts[mount_path]) + value[len(mount_path) :]
                break
    return env, mounts
