"""Real Jibris, built from their source, as the pods of the fake kubelet.

A pod annotated ``testbed.jibri-pod-controller.io/real-jibri: "true"`` (put it on a Deployment's
template) is run by the fake kubelet as a real Jibri: the jar that scripts/build-jibri.sh builds,
Debian's Chromium (headless) and chromedriver, a fake ffmpeg and a fake meeting page of this
module. Everything Jibri does on the wire is its own: webhooks, their JWT, its health and
control API, when and what it sends.

**Its own network.** Each such pod gets a network namespace with one veth into a host bridge
(one bridge and one /24 per process, out of 198.18.0.0/15, the block RFC 2544 sets aside for
benchmarking, so no real network is shadowed). The pod's address is what the kubelet reports as
``status.podIP``; Jibri's health and internal APIs listen on it (0.0.0.0:2222 and 0.0.0.0:3333
inside the namespace), and its webhooks leave from it, so the controller's source-address check
stays on. The controller, a process on the host, is reached at the bridge's address
(`RealJibris.gateway`): the host of the subscriber URL a test puts in the pod's environment. The
namespace has a resolv.conf of its own with no name server: a lookup fails at once instead of
waiting for a server this network cannot reach.

**Its configuration, from the pod.** Rendered in three layers, later ones winning:

1. the pod: ``jibri.id`` = the pod's name, single-use mode, the external API on 0.0.0.0:2222 and,
   if the container sets ``JIBRI_WEBHOOK_SUBSCRIBER``, that one subscriber;
2. the ``jibri.conf`` the container mounts at /etc/jitsi/jibri/jibri.conf (deploy/jibri/ mounts
   its ConfigMap there), read through the API like every ConfigMap and Secret volume of the
   container, which are written into the pod's directory; a quoted absolute path under one of
   the container's mounts (the signing key Secret's /secrets/...) is mapped to that copy;
3. this machine: the internal API on 0.0.0.0:3333, no XMPP, the recordings directory, the fake
   ffmpeg, a finalize script, Chromium's headless flags (and the ones a network without the
   internet needs), no statsd.

The JVM gets the container's environment (plain values, ``$(VAR)`` references and the
downward-API fields), so ``${POD_NAME}``-style substitutions in jibri.conf resolve as in a pod.

**Processes.** Jibri stops ffmpeg with SIGINT, and a process started with SIGINT ignored (from a
shell without job control, or a parent that ignores it) passes that on to ffmpeg, which would
then never stop; so the JVM starts with SIGINT's default action restored (``env
--default-signal=INT``, what a shell's job control gives a foreground job) in a session of its
own. Starts are staggered: the next JVM starts once the previous one answers its health check
and has had `STAGGER_SECONDS` more to send its first webhook (JVMs started together on two cores
each lose their first webhook to Jibri's 2 s client timeout).

A pod's Jibri is an object with `RealJibri.start`, `RealJibri.signal` (SIGTERM to the JVM, as a
runtime signals a container's main process; SIGKILL to every process in the pod's namespace),
`RealJibri.exited` (a future of the JVM's exit code), `RealJibri.exec` (run a command inside
the pod's namespace, as a preStop exec hook does) and `RealJibri.close`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import itertools
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import yaml

__all__ = [
    "ANNOTATION",
    "CONFIG_MOUNT",
    "HEALTH_PORT",
    "INTERNAL_PORT",
    "MountedFile",
    "PodNetwork",
    "RealJibri",
    "RealJibriError",
    "RealJibris",
    "api_call",
    "busy_status",
    "call_params",
    "container_env",
    "deploy_jwt_info",
    "deploy_objects",
    "find_jar",
    "mounted_files",
    "render_config",
    "wants_real_jibri",
]

log = logging.getLogger(__name__)

ANNOTATION: Final = "testbed.jibri-pod-controller.io/real-jibri"
CONFIG_MOUNT: Final = "/etc/jitsi/jibri/jibri.conf"
"""Where the container's jibri.conf is mounted (where Debian's Jibri package reads it)."""
HEALTH_PORT: Final = 2222
INTERNAL_PORT: Final = 3333
HEALTH_PATH: Final = "/jibri/api/v1.0/health"
SUBSCRIBER_ENV: Final = "JIBRI_WEBHOOK_SUBSCRIBER"
NETWORK: Final = ipaddress.IPv4Network("198.18.0.0/15")
STAGGER_SECONDS: Final = 2.0
READY_TIMEOUT: Final = 120.0
"""Launch to a health answer; a JVM on a loaded machine, queued behind others, takes its time."""
COMMAND_TIMEOUT: Final = 20.0
REPO: Final = Path(__file__).resolve().parent.parent
BUILD_SCRIPT: Final = REPO / "scripts" / "build-jibri.sh"
JAR_ENV: Final = "JPC_JIBRI_JAR"

# Chromium as Jibri drives it here: headless and as root (no sandbox), /dev/shm left alone, and
# none of the background connections (updates, sync, QUIC probes, first-run fetches) that a
# network without the internet refuses.
CHROME_FLAGS: Final = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
# Heap and compiler sized for many JVMs on two cores; they change no behaviour of Jibri's.
JVM_OPTIONS: Final = ("-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")

_NAME_RE = re.compile(r"^jpc-(\d+)-\d+$")
_BRIDGE_RE = re.compile(r"^jpcb([0-9a-f]+)n[0-9a-f]+$")
_REFERENCE = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


class RealJibriError(RuntimeError):
    """A real Jibri pod could not be set up, started or torn down."""


# --------------------------------------------------------------------------------------------
# From the pod (pure)


def wants_real_jibri(pod: Mapping[str, Any]) -> bool:
    """True if the pod asks the fake kubelet for a real Jibri."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION, "")).lower() == "true"


def _first_container(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    first: Mapping[str, Any] = containers[0]
    return first


def container_env(pod: Mapping[str, Any], *, pod_ip: str) -> dict[str, str]:
    """The first container's environment as a kubelet would give it.

    Plain values, with ``$(NAME)`` references to earlier entries expanded (``$$`` is a literal
    ``$``), and the downward-API fields metadata.name, metadata.namespace, metadata.uid and
    status.podIP. Entries from Secrets, ConfigMaps or resource fields are left out (no test
    needs them); so is ``envFrom``.
    """
    meta = pod.get("metadata") or {}
    fields = {
        "metadata.name": str(meta.get("name", "")),
        "metadata.namespace": str(meta.get("namespace", "")),
        "metadata.uid": str(meta.get("uid", "")),
        "status.podIP": pod_ip,
    }
    env: dict[str, str] = {}

    def expand(value: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            return "$" if name is None else env.get(name, match.group(0))

        return _REFERENCE.sub(substitute, value)

    for entry in _first_container(pod).get("env") or ():
        source = entry.get("valueFrom")
        if source is None:
            env[entry["name"]] = expand(str(entry.get("value", "")))
            continue
        path = (source.get("fieldRef") or {}).get("fieldPath")
        if path in fields:
            env[entry["name"]] = fields[path]
    return env


@dataclass(frozen=True)
class MountedFile:
    """One file of a ConfigMap or Secret volume, as the container sees it."""

    path: str
    """Absolute path in the container."""
    kind: str
    """``configMap`` or ``secret``."""
    source: str
    """The ConfigMap's or Secret's name."""
    key: str
    mode: int


def mounted_files(pod: Mapping[str, Any]) -> tuple[list[MountedFile], list[str]]:
    """The files the first container's ConfigMap and Secret mounts hold, and every mount path.

    A mount with ``subPath`` is one file (the item at that path); without, a directory of the
    volume's items (``items`` if listed, else every key: the keys are read from the API, so
    such entries carry ``key == "*"``). Other volumes are ignored.
    """
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or ()}
    files: list[MountedFile] = []
    paths: list[str] = []
    for mount in _first_container(pod).get("volumeMounts") or ():
        target = str(mount["mountPath"]).rstrip("/") or "/"
        paths.append(target)
        volume = volumes.get(mount.get("name")) or {}
        for kind, name_field in (("configMap", "name"), ("secret", "secretName")):
            source = volume.get(kind)
            if source is None:
                continue
            mode = int(source.get("defaultMode", 0o644))
            items = [
                (i["key"], i["path"], int(i.get("mode", mode))) for i in source.get("items") or ()
            ]
            name = str(source.get(name_field, ""))
            sub_path = mount.get("subPath")
            if sub_path:
                key = next((k for k, p, _ in items if p == sub_path), sub_path)
                files.append(MountedFile(target, kind, name, key, mode))
            elif items:
                files.extend(MountedFile(f"{target}/{p}", kind, name, k, m) for k, p, m in items)
            else:
                files.append(MountedFile(f"{target}/*", kind, name, "*", mode))
    return files, paths


def remap_paths(text: str, mounts: Iterable[str], root: Path) -> str:
    """Every quoted absolute path under one of ``mounts`` in ``text``, moved under ``root``
    (in one pass: a path moved is never moved again)."""
    targets = sorted({m for m in mounts if m != "/"}, key=len, reverse=True)
    if not targets:
        return text
    pattern = re.compile('"(' + "|".join(re.escape(m) for m in targets) + ')(?=[/"])')

    def move(match: re.Match[str]) -> str:
        return f'"{root}{match.group(1)}'

    return pattern.sub(move, text)


def _q(value: str) -> str:
    """A HOCON quoted string (JSON's string syntax is HOCON's)."""
    return json.dumps(value)


def render_config(
    *,
    pod_name: str,
    env: Mapping[str, str],
    mounted_config: Path | None,
    recordings: Path,
    finalize_script: Path,
    ffmpeg: Path,
) -> str:
    """The jibri.conf this testbed runs a pod's Jibri with (the three layers of the module's
    docstring)."""
    subscriber = env.get(SUBSCRIBER_ENV)
    lines = [
        "// The pod.",
        "jibri {",
        f"  id = {_q(pod_name)}",
        "  single-use-mode = true",
        f'  api.http {{ external-api-host = "0.0.0.0", external-api-port = {HEALTH_PORT} }}',
    ]
    if subscriber:
        lines.append(f"  webhook.subscribers = [{_q(subscriber)}]")
    lines.append("}")
    if mounted_config is not None:
        lines += [f"// The container's {CONFIG_MOUNT}.", f"include file({_q(str(mounted_config))})"]
    flags = ", ".join(_q(flag) for flag in CHROME_FLAGS)
    lines += [
        "// This machine.",
        "jibri {",
        f'  api.http {{ internal-api-host = "0.0.0.0", internal-api-port = {INTERNAL_PORT} }}',
        "  api.xmpp.environments = []",
        f"  recording.recordings-directory = {_q(str(recordings))}",
        f"  recording.finalize-script = {_q(str(finalize_script))}",
        f"  ffmpeg.ffmpeg-binary = {_q(str(ffmpeg))}",
        f"  chrome.flags = ${{jibri.chrome.flags}} [{flags}]",
        "  stats.enable-stats-d = false",
        "}",
    ]
    return "\n".join(lines) + "\n"


def logging_properties(directory: Path) -> str:
    """java.util.logging for one Jibri: its log to stderr (the pod's log file), the webhook
    client's debug lines included (they show each send and its answer), ffmpeg's and the
    browser's logs to files of the pod."""
    lines = [
        "handlers = java.util.logging.ConsoleHandler",
        "java.util.logging.ConsoleHandler.level = FINE",
        "java.util.logging.ConsoleHandler.formatter = java.util.logging.SimpleFormatter",
        "java.util.logging.SimpleFormatter.format = %1$tF %1$tT.%1$tL %4$s %3$s: %5$s%6$s%n",
        ".level = INFO",
        "org.jitsi.jibri.webhooks.level = FINE",
    ]
    for handler, name in (
        ("org.jitsi.jibri.capture.ffmpeg.util.FfmpegFileHandler", "ffmpeg"),
        ("org.jitsi.jibri.selenium.util.BrowserFileHandler", "browser"),
        ("org.jitsi.jibri.sipgateway.pjsua.util.PjsuaFileHandler", "pjsua"),
    ):
        lines += [
            f"{handler}.level = FINE",
            f"{handler}.pattern = {directory}/{name}.%g.log",
            f"{handler}.formatter = java.util.logging.SimpleFormatter",
        ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# The files every real Jibri pod shares

MEETING_PAGE: Final = """<!doctype html>
<html>
<head>
<meta charset="utf-8">
<title>testbed meeting</title>
<script>
// Just enough of Jitsi Meet's window.APP for Jibri's call page (AppCallPage): the conference
// is joined, one remote participant sends media over a connected ICE session, and leaving
// empties the room. Nothing here talks to a network.
(function () {
  function participant(id) {
    return {
      getId: function () { return id; },
      isHidden: function () { return false; },
      isHiddenFromRecorder: function () { return false; },
      isAudioMuted: function () { return false; },
      isVideoMuted: function () { return false; },
      getProperty: function () { return undefined; }
    };
  }
  var participants = [participant("speaker")];
  var room = {
    members: {},
    addListener: function () {},
    addOrReplaceInPresence: function () { return true; },
    sendPresence: function () {}
  };
  window.APP = {
    conference: {
      _room: {
        room: room,
        isJoined: function () { return true; },
        getParticipants: function () { return participants; },
        leave: function () { participants = []; return Promise.resolve(); }
      },
      getStats: function () { return { bitrate: { download: 1000, upload: 0 } }; },
      getConnectionState: function () { return "connected"; },
      isLocalAudioMuted: function () { return true; },
      isLocalVideoMuted: function () { return true; }
    },
    store: {
      getState: function () { return {}; },
      subscribe: function () { return function () {}; },
      dispatch: function () {}
    }
  };
})();
</script>
</head>
<body>testbed meeting</body>
</html>
"""

FAKE_FFMPEG: Final = """#!/bin/sh
# ffmpeg as Jibri sees it: a progress line every second until SIGINT, then ffmpeg's last line
# and its exit code. It appends to the output file (its last argument) so that Jibri finds a
# recording, writes its metadata and runs the finalize script.
#
# Its first line comes after a second, not at once as real ffmpeg's banner does: Jibri's Tee
# (util/Tee.kt) adds each reader of a process's output to its list before connecting it, and
# a byte that arrives in between kills the Tee's thread, after which Jibri never sees a line of
# ffmpeg's again (the session never reports ON, and stopping waits out a 10 s timeout).
out=""
for arg in "$@"; do out=$arg; done
frame=0
trap 'kill "$sleeper" 2>/dev/null; echo "Exiting normally, received signal 2."; exit 255' INT
trap 'kill "$sleeper" 2>/dev/null; exit 255' TERM
while :; do
  sleep 1 &
  sleeper=$!
  wait "$sleeper"
  frame=$((frame + 30))
  s=$((frame / 30))
  progress='frame=%d fps=30 q=23.0 size=%dkB time=%02d:%02d:%02d.00 bitrate=800.0kbits/s'
  printf "$progress speed=1x\\n" \\
    "$frame" "$((s * 100))" "$((s / 3600))" "$((s / 60 % 60))" "$((s % 60))"
  [ -n "$out" ] && printf '.' >>"$out"
done
"""

FINALIZE: Final = """#!/bin/sh
# Jibri's finalize script (an upload would go here). It sleeps a moment: Jibri waits up to 10 s
# for the output of a script that exits before its output reader has started.
sleep 0.5
"""


def call_params(
    root: Path | str, *, session_id: str = "rec", call_name: str = "meeting.html"
) -> dict[str, Any]:
    """A startService body that records the fake meeting page in ``root`` to a file."""
    return {
        "sessionId": session_id,
        "callParams": {"callUrlInfo": {"baseUrl": f"file://{root}", "callName": call_name}},
        "callLoginParams": {"domain": "recorder.testbed", "username": "jibri", "password": "-"},
        "sinkType": "file",
    }


DEPLOY_JIBRI: Final = REPO / "deploy" / "jibri"


def deploy_jwt_info() -> tuple[str, str, str]:
    """(kid, issuer, audience) of deploy/jibri/jibri.conf's jwt-info: what the controller must
    be given (its public key as ``<kid>.pem``, JWT_ISSUER, JWT_AUDIENCE)."""
    text = (DEPLOY_JIBRI / "jibri.conf").read_text()
    block = text[text.index("jwt-info") :]
    values = []
    for name in ("kid", "issuer", "audience"):
        match = re.search(rf'^\s*{name}\s*=\s*"([^"]*)"', block, re.MULTILINE)
        if match is None:
            raise RealJibriError(f"deploy/jibri/jibri.conf: no jwt-info {name}")
        values.append(match.group(1))
    return values[0], values[1], values[2]


def deploy_objects(
    *, namespace: str, subscriber: str, signing_key: bytes, replicas: int = 1
) -> list[dict[str, Any]]:
    """deploy/jibri/ as an operator installs it (the ConfigMap jibri-config holding jibri.conf,
    the Secret with the PKCS#1 signing key, the Deployment), its pods annotated for a real
    Jibri and posting to ``subscriber`` (``$(POD_NAME)`` is expanded in each pod) instead of the
    controller's Service, whose name no resolver here knows."""
    deployment = yaml.safe_load((DEPLOY_JIBRI / "deployment.yaml").read_text())
    deployment["metadata"]["namespace"] = namespace
    deployment["spec"]["replicas"] = replicas
    template = deployment["spec"]["template"]
    template["metadata"].setdefault("annotations", {})[ANNOTATION] = "true"
    container = template["spec"]["containers"][0]
    container["image"] = "jibri-built-from-source"
    for entry in container["env"]:
        if entry["name"] == SUBSCRIBER_ENV:
            entry["value"] = subscriber
    volumes = {v["name"]: v for v in template["spec"]["volumes"]}
    config_map = volumes["config"]["configMap"]["name"]
    secret = volumes["webhook-signing-key"]["secret"]
    (key_name,) = (item["key"] for item in secret["items"])
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": config_map, "namespace": namespace},
            "data": {"jibri.conf": (DEPLOY_JIBRI / "jibri.conf").read_text()},
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret["secretName"], "namespace": namespace},
            "data": {key_name: base64.b64encode(signing_key).decode()},
        },
        deployment,
    ]


async def api_call(
    address: str, path: str, body: Mapping[str, Any] | None = None, *, timeout: float = 60.0
) -> int:
    """POST to a real Jibri's external API (``startService``, ``stopService``); the answer's
    status. stopService answers once the session has ended and its webhooks went out (each may
    take Jibri's 2 s client timeout), hence the long default timeout."""
    url = f"http://{address}:{HEALTH_PORT}/jibri/api/v1.0/{path}"
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.post(url, json=dict(body or {})) as response,
    ):
        return response.status


async def busy_status(address: str) -> str | None:
    """The busyStatus a Jibri's health API answers now; None if it does not answer."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session,
            session.get(f"http://{address}:{HEALTH_PORT}{HEALTH_PATH}") as response,
        ):
            body = await response.json(content_type=None)
        status: str = body["status"]["busyStatus"]
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        return None
    return status


def find_jar() -> Path:
    """Jibri's jar: ``$JPC_JIBRI_JAR``, else what scripts/build-jibri.sh built (it builds once,
    then answers from its cache at once)."""
    given = os.environ.get(JAR_ENV)
    if given:
        path = Path(given)
        if not path.is_file():
            raise RealJibriError(f"{JAR_ENV}={given}: no such file")
        return path
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False
    )
    if result.returncode != 0:
        raise RealJibriError(f"scripts/build-jibri.sh failed:\n{result.stderr[-3000:]}")
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if not lines:
        raise RealJibriError("scripts/build-jibri.sh printed no cache directory")
    jar = Path(lines[-1].strip()) / "jibri.jar"
    if not jar.is_file():
        raise RealJibriError(
            f"scripts/build-jibri.sh printed {lines[-1]!r}, which has no jibri.jar"
        )
    return jar


def _require(command: str, package: str) -> str:
    found = shutil.which(command)
    if found is None:
        raise RealJibriError(
            f"{command} is not installed (Debian package {package}; scripts/bootstrap.sh "
            "installs it)"
        )
    return found


# --------------------------------------------------------------------------------------------
# Network namespaces


def _ip(*args: str) -> None:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False
    )
    if result.returncode != 0:
        raise RealJibriError(f"ip {' '.join(args)}: {result.stderr.strip()}")


async def _aip(*args: str, check: bool = True) -> str:
    process = await asyncio.create_subprocess_exec(
        "ip",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    if check and process.returncode != 0:
        raise RealJibriError(f"ip {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_pids(name: str) -> list[int]:
    result = subprocess.run(
        ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10, check=False
    )
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def _kill_netns(name: str) -> None:
    """SIGKILL every process in the namespace (until none is left, at most a few rounds)."""
    for _ in range(20):
        pids = _netns_pids(name)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def _delete_netns(name: str) -> None:
    _kill_netns(name)
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10, check=False)
    shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
    with contextlib.suppress(OSError):
        Path("/etc/netns").rmdir()  # only when empty


def sweep_stale() -> list[str]:
    """Remove the namespaces and bridges that processes no longer running left behind (a test
    run killed before its cleanup); return their names."""
    removed: list[str] = []
    listing = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
    )
    for line in listing.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = _NAME_RE.match(name)
        if match and not _alive(int(match.group(1))):
            _delete_netns(name)
            removed.append(name)
    links = subprocess.run(
        ["ip", "-o", "link", "show", "type", "bridge"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    for line in links.stdout.splitlines():
        parts = line.split(":")
        name = parts[1].strip().split("@")[0] if len(parts) > 1 else ""
        match = _BRIDGE_RE.match(name)
        if match and not _alive(int(match.group(1), 16)):
            subprocess.run(["ip", "link", "delete", name], capture_output=True, check=False)
            removed.append(name)
    return removed


_names = itertools.count(1)
_names_lock = threading.Lock()


def _next_number() -> int:
    """A number for a bridge or namespace name, unique in this process (names also carry the
    pid, so that a process that died can be told by them: `sweep_stale`)."""
    with _names_lock:
        return next(_names)


class PodNetwork:
    """One host bridge and a /24 of 198.18.0.0/15; one namespace per pod.

    Addresses are handed out once (.2 to .254) and never reused, like the kubelet's loopback
    ones: a stale address can never reach a newer pod. Thread-safe (a test thread asks for the
    gateway while the kubelet's thread attaches pods).
    """

    def __init__(self) -> None:
        self.bridge = f"jpcb{os.getpid():x}n{_next_number():x}"  # at most 15 characters
        self._lock = threading.Lock()
        self._subnet: ipaddress.IPv4Network | None = None
        self._next_host = 2
        self._namespaces: dict[str, str] = {}
        """namespace name -> its address."""

    def up(self) -> str:
        """Create the bridge (once); return the host's address on it (the pods' gateway)."""
        with self._lock:
            if self._subnet is None:
                if os.geteuid() != 0:
                    raise RealJibriError("real Jibri pods need root (network namespaces)")
                _require("ip", "iproute2")
                swept = sweep_stale()
                if swept:
                    log.info("removed stale test networks: %s", ", ".join(swept))
                subnet = self._free_subnet()
                gateway = f"{subnet.network_address + 1}/{subnet.prefixlen}"
                _ip("link", "add", self.bridge, "type", "bridge")
                try:
                    _ip("addr", "add", gateway, "dev", self.bridge)
                    _ip("link", "set", self.bridge, "up")
                except RealJibriError:
                    subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
                    raise
                self._subnet = subnet
                log.info("pod network %s on bridge %s", subnet, self.bridge)
            return str(self._subnet.network_address + 1)

    def _free_subnet(self) -> ipaddress.IPv4Network:
        listing = subprocess.run(
            ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False
        )
        used = {
            ipaddress.IPv4Interface(word).network
            for line in listing.stdout.splitlines()
            for word in line.split()
            if "/" in word and word[0].isdigit()
        }
        subnets = list(NETWORK.subnets(new_prefix=24))
        start = os.getpid() % len(subnets)
        for i in range(len(subnets)):
            candidate = subnets[(start + i) % len(subnets)]
            if not any(candidate.overlaps(net) for net in used):
                return candidate
        raise RealJibriError(f"every /24 of {NETWORK} is in use on this host")

    def allocate(self) -> str:
        """A pod address not handed out before by this process."""
        self.up()
        with self._lock:
            assert self._subnet is not None
            if self._next_host > 254:
                raise RealJibriError(f"all pod addresses of {self._subnet} were used")
            address = str(self._subnet.network_address + self._next_host)
            self._next_host += 1
            return address

    async def attach(self, address: str) -> str:
        """A new namespace holding ``address`` on its eth0, wired into the bridge; its name."""
        gateway = self.up()
        assert self._subnet is not None
        n = _next_number()
        name = f"jpc-{os.getpid()}-{n}"
        host_end = f"jpv{os.getpid():x}x{n:x}"
        with self._lock:
            self._namespaces[name] = address
        try:
            resolv = Path("/etc/netns") / name
            resolv.mkdir(parents=True, exist_ok=True)
            (resolv / "resolv.conf").write_text("# No name server on the test pods' network.\n")
            await _aip("netns", "add", name)
            await _aip(
                "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", name
            )
            await _aip("link", "set", host_end, "master", self.bridge, "up")
            await _aip(
                "-n", name, "addr", "add", f"{address}/{self._subnet.prefixlen}", "dev", "eth0"
            )
            await _aip("-n", name, "link", "set", "eth0", "up")
            await _aip("-n", name, "link", "set", "lo", "up")
            await _aip("-n", name, "route", "add", "default", "via", gateway)
        except BaseException:
            await asyncio.to_thread(self._remove, name)
            raise
        return name

    async def detach(self, name: str) -> None:
        """Kill what still runs in the namespace and remove it (and so its veth pair)."""
        await asyncio.to_thread(self._remove, name)

    def _remove(self, name: str) -> None:
        _delete_netns(name)
        with self._lock:
            self._namespaces.pop(name, None)

    def down(self) -> None:
        """Remove every namespace of this process, then the bridge."""
        with self._lock:
            names = list(self._namespaces)
        for name in names:
            self._remove(name)
        with self._lock:
            if self._subnet is not None:
                subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
                self._subnet = None


# --------------------------------------------------------------------------------------------
# One pod's Jibri


@dataclass(frozen=True)
class _Files:
    """What every pod's Jibri shares: its jar and the scripts and page of this module."""

    jar: Path
    java: str
    chromedriver: str
    root: Path
    ffmpeg: Path
    finalize: Path
    meeting: Path


class RealJibri:
    """A real Jibri as one pod's container: started in the pod's network namespace (its
    sandbox, which outlives a restart of the container), signalled, its exit awaited, a command
    exec'd beside it. The fake kubelet's `JibriRunner`."""

    def __init__(
        self,
        *,
        pod: Mapping[str, Any],
        address: str,
        netns: str,
        files: _Files,
        directory: Path,
        core: Any,
        start_lock: asyncio.Lock,
    ) -> None:
        meta = pod.get("metadata") or {}
        self.namespace = str(meta.get("namespace", ""))
        self.name = str(meta.get("name", ""))
        self.uid = str(meta.get("uid", ""))
        self.address = address
        self.netns = netns
        self.directory = directory
        self.log_path = directory / "jibri.log"
        self.env = container_env(pod, pod_ip=address)
        self._exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pod = pod
        self._files = files
        self._core = core
        self._start_lock = start_lock
        self._process: asyncio.subprocess.Process | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def exited(self) -> asyncio.Future[int]:
        """The JVM's exit code, once it has exited (by itself or by a signal)."""
        return self._exited

    @property
    def url(self) -> str:
        """The base URL of Jibri's external API (health, startService, stopService)."""
        return f"http://{self.address}:{HEALTH_PORT}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- start

    async def start(self, *, ready_timeout: float = READY_TIMEOUT) -> None:
        """Write the pod's files, launch the JVM and wait for its health API; raise if it
        exits or does not answer in time (after killing what it started). Starts of all pods
        wait for one another: each holds the turn until it answers, and `STAGGER_SECONDS`
        more."""
        async with self._start_lock:
            try:
                config = await self._write_files()
                await self._launch(config)
                await self._wait_ready(ready_timeout)
            except BaseException:
                await self.close()
                raise
            await asyncio.sleep(STAGGER_SECONDS)

    async def _write_files(self) -> Path:
        root = self.directory / "rootfs"
        files, mounts = mounted_files(self._pod)
        contents: dict[tuple[str, str], dict[str, bytes]] = {}
        for item in files:
            key = (item.kind, item.source)
            if key not in contents:
                contents[key] = await _volume_data(
                    self._core, item.kind, item.source, self.namespace
                )
        mounted_config: Path | None = None
        for item in files:
            data = contents[(item.kind, item.source)]
            entries = (
                [(f"{item.path[:-2]}/{k}", v) for k, v in data.items()]
                if item.key == "*"
                else [(item.path, data[item.key])]
                if item.key in data
                else []
            )
            if item.key != "*" and not entries:
                raise RealJibriError(f"{item.kind} {item.source} has no key {item.key!r}")
            for path, value in entries:
                target = root / path.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                if path == CONFIG_MOUNT:
                    value = remap_paths(value.decode(), mounts, root).encode()
                    mounted_config = target
                target.write_bytes(value)
                target.chmod(item.mode & 0o777)
        recordings = self.directory / "recordings"
        recordings.mkdir(parents=True, exist_ok=True)
        (self.directory / "tmp").mkdir(exist_ok=True)
        config = self.directory / "jibri.conf"
        config.write_text(
            render_config(
                pod_name=self.name,
                env=self.env,
                mounted_config=mounted_config,
                recordings=recordings,
                finalize_script=self._files.finalize,
                ffmpeg=self._files.ffmpeg,
            )
        )
        (self.directory / "logging.properties").write_text(logging_properties(self.directory))
        return config

    async def _launch(self, config: Path) -> None:
        env = {
            **self.env,
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.directory),
            "TMPDIR": str(self.directory / "tmp"),
            "LANG": "C.UTF-8",
            # Selenium Manager would otherwise look for browsers and drivers on the internet.
            "SE_OFFLINE": "true",
        }
        command = [
            "env",
            "--default-signal=INT",
            "ip",
            "netns",
            "exec",
            self.netns,
            self._files.java,
            *JVM_OPTIONS,
            f"-Dconfig.file={config}",
            f"-Djava.util.logging.config.file={self.directory / 'logging.properties'}",
            f"-Dwebdriver.chrome.logfile={self.directory / 'chromedriver.log'}",
            f"-Dwebdriver.chrome.driver={self._files.chromedriver}",
            "-jar",
            str(self._files.jar),
        ]
        with self.log_path.open("ab") as out:
            self._process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                cwd=self.directory,
                env=env,
                start_new_session=True,
            )
        self._waiter = asyncio.create_task(self._wait_exit(self._process))
        log.info(
            "pod %s/%s: Jibri (pid %d) starting on %s",
            self.namespace,
            self.name,
            self._process.pid,
            self.address,
        )

    async def _wait_exit(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        log.info("pod %s/%s: Jibri exited with code %d", self.namespace, self.name, code)
        if not self._exited.done():
            # A signal's death as a container runtime reports it: 128 + the signal.
            self._exited.set_result(128 - code if code < 0 else code)

    async def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                if self._exited.done():
                    raise RealJibriError(
                        f"Jibri of pod {self.namespace}/{self.name} exited with code "
                        f"{self._exited.result()} before its health API answered:\n"
                        + self.log_text()[-3000:]
                    )
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(self.url + HEALTH_PATH) as response:
                        if response.status == 200:
                            return
                if time.monotonic() > deadline:
                    raise RealJibriError(
                        f"Jibri of pod {self.namespace}/{self.name} did not answer its health "
                        f"check within {timeout:g} s:\n" + self.log_text()[-3000:]
                    )
                await asyncio.sleep(0.2)

    # -- while it runs

    def signal(self, signum: int) -> None:
        """SIGKILL: every process in the pod's namespace (a runtime kills the whole container);
        any other signal: the JVM only (the container's main process)."""
        if signum == signal.SIGKILL:
            _kill_netns(self.netns)
            return
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signum)

    async def exec(self, command: Sequence[str], *, timeout: float) -> int:
        """Run ``command`` inside the pod's namespace with the container's environment (a
        preStop hook, ``kubectl exec``); its exit code, or 137 when it was killed: at
        ``timeout``, or because the container's process ended and took it along."""
        process = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            self.netns,
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**self.env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            start_new_session=True,
        )
        output = asyncio.ensure_future(process.communicate())
        either: set[asyncio.Future[Any]] = {output, self._exited}
        try:
            await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not output.done():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            out, _ = await output
        code = process.returncode if process.returncode is not None else 137
        tail = out.decode(errors="replace").strip()[-300:]
        log.info(
            "exec in pod %s/%s: %s -> %d %s", self.namespace, self.name, command[:1], code, tail
        )
        return 137 if code < 0 else code

    async def block_webhooks(self, host: str, port: int, *, refuse: bool = False) -> None:
        """Cut the pod's network to ``host:port`` (a controller): its packets are dropped
        silently (Jibri's requests end in its 2 s client timeout, which it survives), or, with
        ``refuse``, answered with a TCP reset (the connection is refused at once: an error
        that escapes Jibri's webhook client)."""
        await self._nft("add", "table", "inet", "jpc_block")
        await self._nft(
            "add",
            "chain",
            "inet",
            "jpc_block",
            "out",
            "{ type filter hook output priority 0 ; policy accept ; }",
        )
        verdict = ("reject", "with", "tcp", "reset") if refuse else ("drop",)
        rule = ("ip", "daddr", host, "tcp", "dport", str(port), *verdict)
        await self._nft("add", "rule", "inet", "jpc_block", "out", *rule)

    async def unblock_webhooks(self) -> None:
        await self._nft("delete", "table", "inet", "jpc_block")

    async def _nft(self, *args: str) -> None:
        nft = _require("nft", "nftables")
        await _aip("netns", "exec", self.netns, nft, *args)

    # -- after it

    async def close(self) -> None:
        """Release what the container left: every process still in the pod's namespace is
        killed (Chromium and ffmpeg outlive a JVM that exits), and the scratch files go. The
        namespace stays, for a restart, until the pod ends (`RealJibris.release`); the logs
        stay until the runtime ends."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(_kill_netns, self.netns)
        if self._waiter is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._waiter), 10)
        for scratch in ("tmp", "recordings", "rootfs"):
            await asyncio.to_thread(shutil.rmtree, self.directory / scratch, True)


async def _volume_data(core: Any, kind: str, name: str, namespace: str) -> dict[str, bytes]:
    if kind == "configMap":
        config_map = await core.read_namespaced_config_map(name, namespace)
        return {k: v.encode() for k, v in (config_map.data or {}).items()}
    secret = await core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


# --------------------------------------------------------------------------------------------
# All of a kubelet's real Jibris


class RealJibris:
    """The real Jibris of one fake kubelet: their network, shared files and staggered starts.

    Nothing is set up until it is first needed: a kubelet that never runs a real Jibri creates
    no bridge and never looks for the jar.
    """

    def __init__(self, *, jar: Callable[[], Path] = find_jar) -> None:
        self.network = PodNetwork()
        self._find_jar = jar
        self._files: _Files | None = None
        self._files_lock = threading.Lock()
        self._root = Path(tempfile.mkdtemp(prefix="jpc-rj-"))
        self._containers = 0
        self._start_lock: asyncio.Lock | None = None
        self._sandboxes: dict[str, str] = {}
        """pod uid -> its network namespace."""
        self._current: dict[tuple[str, str], RealJibri] = {}
        self.logs: dict[tuple[str, str], list[Path]] = {}
        """(namespace, pod name) -> the log of each container it ran, oldest first."""

    @property
    def meeting_root(self) -> Path:
        """The directory of the fake meeting page (`call_params` takes it)."""
        return self._root / "meeting"

    def gateway(self) -> str:
        """The host's address on the pods' network: where a Jibri reaches the controller."""
        return self.network.up()

    def allocate(self) -> str:
        """An address for a new pod."""
        return self.network.allocate()

    def get(self, namespace: str, name: str) -> RealJibri:
        """The latest Jibri of pod ``namespace/name`` that has not been released; KeyError if
        there is none."""
        return self._current[(namespace, name)]

    def _shared(self) -> _Files:
        with self._files_lock:
            if self._files is None:
                java = _require("java", "openjdk-17-jre-headless")
                chromedriver = _require("chromedriver", "chromium-driver")
                _require("chromium", "chromium")
                _require("nft", "nftables")
                jar = self._find_jar()
                self.meeting_root.mkdir(parents=True, exist_ok=True)
                meeting = self.meeting_root / "meeting.html"
                meeting.write_text(MEETING_PAGE)
                ffmpeg = self._root / "ffmpeg"
                ffmpeg.write_text(FAKE_FFMPEG)
                finalize = self._root / "finalize.sh"
                finalize.write_text(FINALIZE)
                for script in (ffmpeg, finalize):
                    script.chmod(0o755)
                self._files = _Files(jar, java, chromedriver, self._root, ffmpeg, finalize, meeting)
            return self._files

    async def runner(self, pod: Mapping[str, Any], *, address: str, core: Any) -> RealJibri:
        """A Jibri container for ``pod`` on ``address`` (from `allocate`), not started. The
        pod's namespace is made with its first container and kept for the next ones.
        ``core`` is a kubernetes_asyncio ``CoreV1Api`` (the pod's ConfigMap and Secret volumes
        are read through it)."""
        files = await asyncio.to_thread(self._shared)
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid", ""))
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        if uid not in self._sandboxes:
            self._sandboxes[uid] = await self.network.attach(address)
        # Short: Chromium's profile (under TMPDIR, in here) holds a Unix socket, whose path may
        # not exceed 107 bytes, or Chromium exits at once.
        self._containers += 1
        directory = self._root / "pods" / str(self._containers)
        directory.mkdir(parents=True)
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        jibri = RealJibri(
            pod=pod,
            address=address,
            netns=self._sandboxes[uid],
            files=files,
            directory=directory,
            core=core,
            start_lock=self._start_lock,
        )
        self._current[key] = jibri
        self.logs.setdefault(key, []).append(jibri.log_path)
        return jibri

    async def release(self, pod_uid: str) -> None:
        """The pod is gone: kill what is left in its namespace and remove it."""
        netns = self._sandboxes.pop(pod_uid, None)
        for key, jibri in list(self._current.items()):
            if jibri.uid == pod_uid:
                del self._current[key]
                await jibri.close()
        if netns is not None:
            await self.network.detach(netns)

    async def close(self) -> None:
        """Release every pod, remove the network and this runtime's files."""
        for uid in list(self._sandboxes):
            await self.release(uid)
        for jibri in list(self._current.values()):
            await jibri.close()
        await asyncio.to_thread(self.network.down)
        await asyncio.to_thread(shutil.rmtree, self._root, True)
