"""The real-Jibri runner's parts that need no Jibri: reading the pod (environment, mounts,
configuration), the fake ffmpeg as Jibri drives it, and the pods' network namespaces.

The runner with a real Jibri is exercised end to end by tests/e2e/test_real_jibri.py."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.cluster import DEPLOY
from testbed.demo import REAL_EVERY, Fate, make_plan, parse_args
from testbed.realjibri import (
    ANNOTATION,
    CONFIG_MOUNT,
    FAKE_FFMPEG,
    MountedFile,
    PodNetwork,
    container_env,
    mounted_files,
    remap_paths,
    render_config,
    sweep_stale,
    wants_real_jibri,
)

# Jibri's OutputParser: a progress line is name=value fields and nothing else; the line ffmpeg
# prints when it stops on a signal names the signal (2 is the one Jibri sends).
ENCODING_LINE = re.compile(r"(\s*(\S+)\s*=\s*(\S+))+\s*")
EXITED_LINE = re.compile(r"Exiting.*signal\s*(\d+).*")


def deploy_pod(name: str = "jibri-7f9c-abcde", namespace: str = "rec") -> dict[str, Any]:
    """A pod of deploy/jibri/deployment.yaml, as the API lists it."""
    deployment = yaml.safe_load((DEPLOY / "jibri" / "deployment.yaml").read_text())
    template = deployment["spec"]["template"]
    return {
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": "0b5c3d2e-1111-2222-3333-444455556666",
            "annotations": {ANNOTATION: "true"},
            **template["metadata"],
        },
        "spec": template["spec"],
    }


def test_only_annotated_pods_run_a_real_jibri() -> None:
    assert wants_real_jibri(deploy_pod())
    assert wants_real_jibri({"metadata": {"annotations": {ANNOTATION: "True"}}})
    assert not wants_real_jibri({"metadata": {"annotations": {ANNOTATION: "false"}}})
    assert not wants_real_jibri({"metadata": {}})
    assert not wants_real_jibri({})


def test_the_environment_of_deploy_jibri_is_what_a_kubelet_gives() -> None:
    env = container_env(deploy_pod(), pod_ip="198.18.3.7")
    assert env == {
        "POD_NAME": "jibri-7f9c-abcde",
        "NAMESPACE": "rec",
        "JIBRI_WEBHOOK_SUBSCRIBER": (
            "http://jibri-pod-controller.rec.svc.cluster.local/webhook/jibri-7f9c-abcde"
        ),
    }


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (
            [{"name": "A", "value": "x"}, {"name": "B", "value": "$(A)-$(A)"}],
            {"A": "x", "B": "x-x"},
        ),
        ([{"name": "B", "value": "$(A)"}, {"name": "A", "value": "x"}], {"A": "x", "B": "$(A)"}),
        ([{"name": "A", "value": "$$(A) $$"}], {"A": "$(A) $"}),
        (
            [{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
            {"IP": "1.2.3.4"},
        ),
        ([{"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}], {}),
        ([{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}], {}),
        ([{"name": "E"}], {"E": ""}),
    ],
)
def test_environment_references(entries: list[dict[str, Any]], expected: dict[str, str]) -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"env": entries}]}}
    assert container_env(pod, pod_ip="1.2.3.4") == expected


def test_the_mounts_of_deploy_jibri() -> None:
    files, paths = mounted_files(deploy_pod())
    assert files == [
        MountedFile(CONFIG_MOUNT, "configMap", "jibri-config", "jibri.conf", 0o644),
        MountedFile(
            "/secrets/jibri-webhook-signing.key",
            "secret",
            "jibri-webhook-signing-key",
            "jibri-webhook-signing.key",
            0o444,
        ),
    ]
    assert paths == [CONFIG_MOUNT, "/secrets", "/dev/shm"]


def test_a_volume_without_items_is_every_key() -> None:
    pod = {
        "spec": {
            "containers": [{"volumeMounts": [{"name": "v", "mountPath": "/etc/x/"}]}],
            "volumes": [{"name": "v", "secret": {"secretName": "s"}}],
        }
    }
    assert mounted_files(pod) == ([MountedFile("/etc/x/*", "secret", "s", "*", 0o644)], ["/etc/x"])


def test_paths_under_mounts_move_once() -> None:
    text = (
        'a = "/secrets/key.pem"\nb = "/secrets"\nc = "/secretsx/no"\n'
        'd = "/etc/jitsi/jibri/jibri.conf"\ne = /secrets/unquoted\n'
    )
    moved = remap_paths(text, ["/secrets", "/etc/jitsi/jibri/jibri.conf", "/"], Path("/r/secrets"))
    assert moved == (
        'a = "/r/secrets/secrets/key.pem"\nb = "/r/secrets/secrets"\nc = "/secretsx/no"\n'
        'd = "/r/secrets/etc/jitsi/jibri/jibri.conf"\ne = /secrets/unquoted\n'
    )


def test_the_rendered_configuration_layers() -> None:
    text = render_config(
        pod_name="p-1",
        env={"JIBRI_WEBHOOK_SUBSCRIBER": "http://198.18.3.1:8080/webhook/p-1"},
        mounted_config=Path("/w/rootfs/etc/jitsi/jibri/jibri.conf"),
        recordings=Path("/w/rec"),
        finalize_script=Path("/f.sh"),
        ffmpeg=Path("/ffmpeg"),
    )
    pod_layer, mounted, machine = (
        text.index("// The pod."),
        text.index('include file("/w/rootfs/etc/jitsi/jibri/jibri.conf")'),
        text.index("// This machine."),
    )
    assert pod_layer < mounted < machine  # later layers win
    assert 'id = "p-1"' in text[:mounted]
    assert 'webhook.subscribers = ["http://198.18.3.1:8080/webhook/p-1"]' in text[:mounted]
    assert 'external-api-host = "0.0.0.0", external-api-port = 2222' in text[:mounted]
    tail = text[machine:]
    assert 'internal-api-host = "0.0.0.0", internal-api-port = 3333' in tail
    assert 'ffmpeg.ffmpeg-binary = "/ffmpeg"' in tail
    assert 'chrome.flags = ${jibri.chrome.flags} ["--headless=new", "--no-sandbox"' in tail
    without = render_config(
        pod_name="p",
        env={},
        mounted_config=None,
        recordings=Path("/r"),
        finalize_script=Path("/f"),
        ffmpeg=Path("/g"),
    )
    assert "include" not in without
    assert "subscribers" not in without


async def test_the_fake_ffmpeg_stops_on_sigint_as_jibri_expects(tmp_path: Path) -> None:
    script = tmp_path / "ffmpeg"
    script.write_text(FAKE_FFMPEG)
    script.chmod(0o755)
    output = tmp_path / "out.mp4"
    # Started with SIGINT ignored, as a shell without job control starts a background job:
    # the runner restores its default action (env --default-signal=INT), and so does this.
    process = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        'trap "" INT; exec env --default-signal=INT "$@"',
        "sh",
        str(script),
        "-y",
        "-f",
        "x11grab",
        str(output),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines = [(await asyncio.wait_for(process.stdout.readline(), 5)).decode() for _ in range(2)]
    assert all(ENCODING_LINE.fullmatch(line.rstrip("\n")) for line in lines), lines
    process.send_signal(signal.SIGINT)
    rest = (await asyncio.wait_for(process.stdout.read(), 5)).decode().splitlines()
    code = await asyncio.wait_for(process.wait(), 5)
    last = EXITED_LINE.fullmatch(rest[-1])
    assert last is not None, rest
    assert last.group(1) == "2"
    assert code == 255
    assert output.stat().st_size >= 1  # Jibri looks for the file to finalize a recording


# --------------------------------------------------------------------------------------------
# The network namespaces (root)


@pytest.fixture
async def network() -> AsyncIterator[PodNetwork]:
    net = PodNetwork()
    try:
        yield net
    finally:
        await asyncio.to_thread(net.down)


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.split()}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {line.split(":")[1].strip().split("@")[0] for line in out.stdout.splitlines()}


async def test_pods_are_reached_on_their_address_and_speak_from_it(network: PodNetwork) -> None:
    gateway = network.up()
    assert gateway.startswith("198.1")
    first, second = network.allocate(), network.allocate()
    assert first != second
    ns_first = await network.attach(first)
    ns_second = await network.attach(second)
    assert {ns_first, ns_second} <= _netns()

    # A server in the first pod, reached from the host on the pod's address; a client in the
    # second pod reaching a server on the host at the gateway, seen from the pod's address.
    with socket.socket() as host_server:
        host_server.bind((gateway, 0))
        host_server.listen()
        port = host_server.getsockname()[1]
        probe = (
            "import socket; s = socket.create_connection(({!r}, {}), timeout=5); "
            "print(s.getsockname()[0])"
        )
        client = await asyncio.create_subprocess_exec(
            "ip",
            "netns",
            "exec",
            ns_second,
            "python3",
            "-c",
            probe.format(gateway, port),
            stdout=asyncio.subprocess.PIPE,
        )
        conn, (peer, _) = await asyncio.wait_for(asyncio.to_thread(host_server.accept), 10)
        conn.close()
        out, _ = await client.communicate()
    assert peer == second
    assert out.decode().strip() == second

    server = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        ns_first,
        "python3",
        "-c",
        f"import socket; s = socket.socket(); s.bind(({first!r}, 2222)); s.listen(); "
        "print('up', flush=True); c, a = s.accept(); print(a[0], flush=True)",
        stdout=asyncio.subprocess.PIPE,
    )
    assert server.stdout is not None
    assert (await asyncio.wait_for(server.stdout.readline(), 10)).strip() == b"up"
    with socket.create_connection((first, 2222), timeout=5):
        pass
    assert (await asyncio.wait_for(server.stdout.readline(), 10)).decode().strip() == gateway
    await server.wait()

    await network.detach(ns_first)
    assert ns_first not in _netns()
    assert ns_second in _netns()
    network.down()
    assert ns_second not in _netns()
    assert network.bridge not in _links()
    assert not await asyncio.to_thread(Path(f"/etc/netns/{ns_second}").exists)


def test_leftovers_of_a_process_that_is_gone_are_removed() -> None:
    # A pid that is not running: the highest possible one is practically never in use.
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) - 1
    assert not Path(f"/proc/{dead}").exists()
    name, bridge = f"jpc-{dead}-1", f"jpcb{dead:x}n1"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    mine = f"jpc-{os.getpid()}-999"
    subprocess.run(["ip", "netns", "add", mine], check=True)
    try:
        removed = sweep_stale()
        assert {name, bridge} <= set(removed)
        assert mine not in removed
        assert name not in _netns()
        assert bridge not in _links()
        assert mine in _netns()
    finally:
        for ns in (name, mine):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)


def test_the_real_jibri_demo_plans_fewer_recordings_and_no_crash() -> None:
    options = parse_args(["--real-jibri"])
    assert options.real_jibri
    plan = make_plan(options.duration, random.Random(7), every=REAL_EVERY, crash=False)
    fates = [p.fate for p in plan]
    assert len(plan) == round(options.duration / REAL_EVERY)
    assert Fate.CRASHES not in fates
    assert fates.count(Fate.WEBHOOK_LOST) == 1
    assert all(p.end_at <= 0.85 * options.duration for p in plan)
    with pytest.raises(SystemExit):
        parse_args(["--real-jibri", "--duration", "30"])  # too short for real starts
